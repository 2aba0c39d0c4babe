"""Metric points into a `sqlite:///` MLflow store in bulk: many rows per transaction straight into MLflow's `metrics`
table, and MLflow's own latest-metric update with one candidate per key; `log_batch` builds an ORM object per point
and commits every 1,000 (MLflow's API limit), which is what made SQLite loads slow."""

from __future__ import annotations

import threading
from itertools import repeat
from typing import Any

import numpy as np

from neptune_exporter import interrupt
from neptune_exporter.loaders.mlflow.client import mlflow_errors, tracking_store
from neptune_exporter.loaders.mlflow.mapping import MetricChunk

ROWS_PER_TRANSACTION = 50_000
FLOAT_MAX = 1.7976931348623157e308  # MLflow stores ±inf as ±this (SQL has no infinities)
COLUMNS = ("key", "value", "timestamp", "step", "is_nan", "run_uuid")


def sanitized(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(is_nan, value) as MLflow's SQL store keeps points: NaN as 0 with is_nan, ±inf as ±FLOAT_MAX."""
    is_nan = np.isnan(values)
    kept = np.where(is_nan, 0.0, values)
    kept = np.where(np.isposinf(values), FLOAT_MAX, kept)
    return is_nan, np.where(np.isneginf(values), -FLOAT_MAX, kept)


class SqliteMetricWriter:
    """Takes the place of `MetricBatcher` for a SQLite store: chunks gathered up to ROWS_PER_TRANSACTION rows, then
    one transaction (under the store's one-writer lock) inserts them (`INSERT OR IGNORE`: a point already there is
    skipped, as MLflow skips it) and lets MLflow update `latest_metrics` from each key's newest point of the batch
    (by step, then timestamp, then value: MLflow's order). Ctrl-C stops it between two transactions."""

    def __init__(self, client: Any, run_id: str, lock: threading.Lock, rows: int = ROWS_PER_TRANSACTION):
        from mlflow.store.tracking.dbmodels.models import SqlMetric

        self.store = tracking_store(client)  # the SqlAlchemyStore the client writes through
        self.metric_model = SqlMetric
        self.run_id, self.lock, self.rows = run_id, lock, rows
        self.insert = (
            f"INSERT OR IGNORE INTO {SqlMetric.__tablename__} ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(COLUMNS))})"
        )
        self.pending: list[MetricChunk] = []
        self.pending_rows = self.points = 0
        self.checked: set[str] = set()

    def add(self, chunk: MetricChunk) -> None:
        self._check_names(chunk.names)
        self.pending.append(chunk)
        self.pending_rows += int(chunk.values.size)
        if self.pending_rows >= self.rows:
            self.flush()

    def _check_names(self, names: list[str]) -> None:
        """MLflow's own check of a metric name, once per name (log_batch checks each point)."""
        from mlflow.utils.validation import _validate_metric_name

        for name in names:
            if name not in self.checked:
                with mlflow_errors(f"log metric {name!r}"):
                    _validate_metric_name(name)
                self.checked.add(name)

    def flush(self) -> None:
        if not self.pending:
            return
        interrupt.raise_if_requested()
        rows: list[tuple] = []
        newest: dict[str, tuple[int, int, float, bool]] = {}
        for chunk in self.pending:
            stored = sanitized(chunk.values)
            rows += chunk_rows(self.run_id, chunk, stored)
            for key, point in newest_points(chunk, stored).items():
                if key not in newest or point[:3] > newest[key][:3]:
                    newest[key] = point
        with self.lock, mlflow_errors(f"log {len(rows)} metric points"):
            self._write(rows, newest)
        self.points += len(rows)
        self.pending, self.pending_rows = [], 0

    def _write(self, rows: list[tuple], newest: dict[str, tuple[int, int, float, bool]]) -> None:
        latest = [
            self.metric_model(run_uuid=self.run_id, key=key, step=step, timestamp=stamp, value=value, is_nan=is_nan)
            for key, (step, stamp, value, is_nan) in newest.items()
        ]
        with self.store.ManagedSessionMaker(read_only=False) as session:
            session.connection().exec_driver_sql(self.insert, rows)
            self.store._update_latest_metrics_if_necessary(latest, session)
            session.commit()

    def close(self) -> None:
        self.flush()


def chunk_rows(run_id: str, chunk: MetricChunk, stored: tuple[np.ndarray, np.ndarray]) -> list[tuple]:
    """The chunk's points as `metrics` rows (COLUMNS order); `stored`: `sanitized(chunk.values)`."""
    is_nan, values = stored
    keys = [chunk.names[code] for code in chunk.codes.tolist()]
    return list(
        zip(
            keys,
            values.tolist(),
            chunk.timestamps.tolist(),
            chunk.steps.tolist(),
            is_nan.tolist(),
            repeat(run_id),
            strict=False,  # repeat() is endless
        )
    )


def newest_points(chunk: MetricChunk, stored: tuple[np.ndarray, np.ndarray]) -> dict[str, tuple[int, int, float, bool]]:
    """Each key's newest point of the chunk as (step, timestamp, stored value, is_nan): the largest by step, then
    timestamp, then stored value, as MLflow picks a run's latest metric (`stored`: `sanitized(chunk.values)`)."""
    if not chunk.values.size:
        return {}
    is_nan, values = stored
    order = np.lexsort((values, chunk.timestamps, chunk.steps, chunk.codes))  # last key sorts first
    codes = chunk.codes[order]
    last = order[np.flatnonzero(np.append(codes[1:] != codes[:-1], True))]
    return {
        chunk.names[int(chunk.codes[i])]: (
            int(chunk.steps[i]),
            int(chunk.timestamps[i]),
            float(values[i]),
            bool(is_nan[i]),
        )
        for i in last.tolist()
    }

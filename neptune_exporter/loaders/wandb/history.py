"""Step-ordered spill tables logged as W&B history rows; string series streamed to files for artifacts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_exporter import interrupt
from neptune_exporter.errors import TargetError
from neptune_exporter.loaders.base import format_step, integer_steps, run_key
from neptune_exporter.loaders.step_merge import StepSpill
from neptune_exporter.loaders.wandb.export_reader import RunContent
from neptune_exporter.model import AttributeType

TABLE_CHUNK_ROWS = 100_000
STRING_TABLE_COLUMNS = ["step", "value", "timestamp"]


class _StringSeriesSink:
    """One string series: a text file (one value per line) and (step, value, timestamp) tables, streamed."""

    def __init__(self, staging: Path, key: str):
        self.directory = staging / f"string-series-{run_key(key, 'strings')[:12]}"
        self.directory.mkdir(parents=True)
        self.text = (self.directory / "values.txt").open("w", encoding="utf-8")
        self.rows: list[list] = []
        self.tables: list[Path] = []
        self.count = 0

    def add(self, step: str, value: str | None, timestamp_ms: int | None) -> None:
        self.text.write(f"{value if value is not None else ''}\n")
        moment = None if timestamp_ms is None else datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat()
        self.rows.append([step, value, moment])
        self.count += 1
        if len(self.rows) >= TABLE_CHUNK_ROWS:
            self._flush_table()

    def _flush_table(self) -> None:
        path = self.directory / f"values-{len(self.tables):04d}.table.json"
        path.write_text(_table_json(self.rows), encoding="utf-8")
        self.tables.append(path)
        self.rows = []

    def close(self) -> list[Path]:
        if self.rows or not self.tables:
            self._flush_table()
        self.text.close()
        return [self.directory / "values.txt", *self.tables]


def _table_json(rows: list[list]) -> str:
    """A W&B table file (`*.table.json`) with columns step, value, timestamp."""
    import json

    return json.dumps({"_type": "table", "columns": STRING_TABLE_COLUMNS, "data": rows, "ncols": 3, "nrows": len(rows)})


_NO_TIME = int(np.iinfo(np.int64).max)  # a row's earliest time when none of its points has one
_MISSING = int(np.iinfo(np.int64).min)  # a point without a time (a time before 1970 is negative, and kept)
# A point whose own time is not its row's `_timestamp` (series sharing a step) keeps it, in epoch ms, under this
# prefix + its key in the same row. No attribute key starts with "_" in W&B (names.py), so nothing collides.
POINT_TIME_PREFIX = "_neptune_time/"


def _row_timestamps(table: pa.Table) -> np.ndarray:
    column = table.column("timestamp")
    return pc.fill_null(column, _MISSING).to_numpy() if column.null_count else column.to_numpy()


class HistoryWriter:
    """Turns step-ordered spill tables into W&B rows: one `run.log` per step, `_timestamp` = earliest point time,
    `_neptune_time/<key>` = a point's own time where it differs."""

    def __init__(self, run, content: RunContent, multiplier: int, staging: Path):
        self.run, self.content, self.multiplier, self.staging = run, content, multiplier, staging
        self.strings: dict[int, _StringSeriesSink] = {}
        self.points = 0
        self.rows = 0
        # per key index, fixed once the export is read (before any row is written)
        self.string_keys = np.array([t is AttributeType.STRING_SERIES for t in content.key_types], bool)
        self.float_keys = np.array([t is AttributeType.FLOAT_SERIES for t in content.key_types], bool)
        self.names = np.asarray(content.keys, dtype=object)

    def write(self, table: pa.Table, from_step: int | None) -> None:
        """Log one step-ordered table: a row per step (steps below `from_step` were logged before a resume)."""
        unscaled = table.column("step").to_numpy()
        steps = integer_steps(unscaled, self.multiplier) + self.content.step_offset(self.multiplier)
        keys = table.column("key").to_numpy()
        is_string = self.string_keys[keys] if len(keys) else np.zeros(0, bool)
        timestamps = _row_timestamps(table)
        if is_string.any():
            self._strings(
                table.filter(pa.array(is_string)), unscaled[is_string], keys[is_string], timestamps[is_string]
            )
        history = ~is_string
        if from_step is not None:
            history &= steps >= from_step
        if history.any():
            self._rows(table.filter(pa.array(history)), steps[history], keys[history], timestamps[history])

    def _strings(self, table: pa.Table, unscaled: np.ndarray, keys: np.ndarray, timestamps: np.ndarray) -> None:
        for value, step, key, ts in zip(
            table.column("string_value").to_pylist(), unscaled.tolist(), keys.tolist(), timestamps.tolist(), strict=True
        ):
            self._string_sink(key).add(format_step(step), value, None if ts == _MISSING else ts)

    def _rows(self, table: pa.Table, steps: np.ndarray, keys: np.ndarray, timestamps: np.ndarray) -> None:
        values = table.column("float_value").to_numpy(zero_copy_only=False).tolist()
        histograms = np.flatnonzero(~self.float_keys[keys])
        if histograms.size:
            column = table.column("histogram_value").take(pa.array(histograms)).to_pylist()
            for i, value in zip(histograms.tolist(), column, strict=True):
                values[i] = _histogram(value, self.content.originals[keys[i]])
        names = self.names[keys].tolist()
        starts = np.r_[0, np.flatnonzero(np.diff(steps)) + 1]
        ends = np.r_[starts[1:], len(steps)].tolist()
        earliest = np.minimum.reduceat(np.where(timestamps != _MISSING, timestamps, _NO_TIME), starts)
        for start, end, step, first_ms in zip(
            starts.tolist(), ends, steps[starts].tolist(), earliest.tolist(), strict=True
        ):
            row: dict[str, Any] = dict(zip(names[start:end], values[start:end], strict=True))
            if first_ms != _NO_TIME:  # some point of the row has a time
                row["_timestamp"] = first_ms / 1000
                own = timestamps[start:end]
                for i in np.flatnonzero((own != _MISSING) & (own != first_ms)).tolist():
                    row[POINT_TIME_PREFIX + names[start + i]] = int(own[i])
            self.run.log(row, step=step)
        self.rows += len(ends)
        self.points += len(values)  # a Python int: results are JSON

    def _string_sink(self, key_index: int) -> _StringSeriesSink:
        sink = self.strings.get(key_index)
        if sink is None:
            sink = self.strings[key_index] = _StringSeriesSink(self.staging, self.content.originals[key_index])
        return sink


def _histogram(value: dict | None, attribute: str):
    import wandb

    value = value or {}
    edges, counts = value.get("edges") or [], value.get("values") or []
    try:
        # wandb annotates np_histogram as numpy arrays but takes lists as they are (arrays it converts with .tolist())
        return wandb.Histogram(np_histogram=(list(counts), list(edges)))  # type: ignore[arg-type]
    except ValueError as error:  # more than 512 bins, or edges not one longer than values
        raise TargetError(
            f"W&B cannot store a histogram of attribute {attribute!r} ({len(counts)} bins, {len(edges)} edges): {error}",
            "W&B histograms hold at most 512 bins with one edge more than values; load this run to MLflow instead",
            attribute=attribute,
        ) from None


def write_history(
    run, content: RunContent, spill: StepSpill, multiplier: int, staging: Path, from_step: int | None = None
) -> HistoryWriter:
    """Log every series row in increasing step order to `run` (anything with `.log(row, step=)`)."""
    history = HistoryWriter(run, content, multiplier, staging)
    for table in spill.merged():
        interrupt.raise_if_requested()  # Ctrl-C: the run finishes incomplete, the rerun redoes it
        history.write(table, from_step)
    return history

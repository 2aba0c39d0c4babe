"""The SQLite bulk writer's own rules against MLflow's: stored values (NaN, ±inf) and each key's latest point."""

from __future__ import annotations

import math

import numpy as np
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from neptune_exporter.loaders.mlflow.mapping import MetricChunk
from neptune_exporter.loaders.mlflow.sqlite_metrics import chunk_rows, newest_points, sanitized

AWKWARD = [0.0, -0.0, 1.5, -2.25, math.nan, math.inf, -math.inf, 1.7976931348623157e308, 5e-324, 2.0**53 + 1]


def test_values_are_stored_as_mlflows_sql_store_stores_them():
    is_nan, values = sanitized(np.array(AWKWARD, dtype=np.float64))
    expected = [SqlAlchemyStore.sanitize_metric_value(None, value) for value in AWKWARD]  # type: ignore[arg-type]
    assert list(zip(is_nan.tolist(), values.tolist(), strict=True)) == [(n, float(v)) for n, v in expected]


def test_rows_and_the_newest_point_per_key_follow_mlflows_order_step_then_timestamp_then_value():
    chunk = MetricChunk(
        names=["a", "b"],
        codes=np.array([0, 1, 0, 0, 1, 1]),
        steps=np.array([3, 1, 3, 2, 1, 0]),
        timestamps=np.array([10, 50, 10, 99, 50, 7]),
        values=np.array([1.0, math.nan, 2.0, 9.0, math.inf, 4.0]),
    )
    stored = sanitized(chunk.values)
    assert chunk_rows("r1", chunk, stored)[:2] == [("a", 1.0, 10, 3, False, "r1"), ("b", 0.0, 50, 1, True, "r1")]
    # a: step 3 beats step 2; at step 3 and time 10 the larger value. b: step 1 at time 50, inf (stored max) > NaN (0)
    assert newest_points(chunk, stored) == {"a": (3, 10, 2.0, False), "b": (1, 50, 1.7976931348623157e308, False)}
    empty = MetricChunk(["a"], np.array([], dtype=np.int64), np.array([]), np.array([]), np.array([]))
    nothing = sanitized(empty.values)
    assert newest_points(empty, nothing) == {} and chunk_rows("r1", empty, nothing) == []

"""neptune-query's pandas frames read as our values: table cells, and series frames split per path into arrays."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from neptune_exporter.model import as_utc


def python_datetime(value: Any) -> datetime | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        return as_utc(value)
    return None


def present(value: Any) -> bool:
    if value is None or value is pd.NaT:
        return False
    return not (isinstance(value, float) and np.isnan(value))


def text_or_none(value: Any) -> str | None:
    return str(value) if present(value) and str(value) != "" else None


def truthy(value: Any) -> bool:
    return bool(value) if present(value) else False


def typed_column(frame: pd.DataFrame, name: str, type_name: str) -> pd.Series | None:
    key = f"{name}:{type_name}"
    return frame[key] if key in frame.columns else None


def parameter_value(type_name: str, value: Any) -> Any:
    """A table cell as the Python value rows.parameter_rows expects."""
    if type_name == "datetime":
        return python_datetime(value)
    if type_name == "string_set":
        return sorted(value) if present(value) else []
    if type_name == "int":
        return int(value)
    if type_name == "bool":
        return bool(value)
    if type_name == "float":
        return float(value)
    return value


@dataclass
class SeriesChunk:
    """Points of one series read from a wide neptune-query frame (ascending steps)."""

    path: str
    steps: np.ndarray
    values: np.ndarray
    timestamps_ms: np.ndarray

    def __len__(self) -> int:
        return int(self.steps.size)

    def tail(self, points: int) -> SeriesChunk:
        """The last `points` points."""
        start = max(0, len(self) - points)
        return SeriesChunk(self.path, self.steps[start:], self.values[start:], self.timestamps_ms[start:])


def split_series_frame(frame: pd.DataFrame) -> dict[str, SeriesChunk]:
    """A fetch_metrics/fetch_series frame (index run, step; columns path × value/absolute_time) per path, vectorised."""
    if frame.empty or not isinstance(frame.columns, pd.MultiIndex):
        return {}
    steps = frame.index.get_level_values("step").to_numpy(dtype=np.float64)
    values = frame.xs("value", axis=1, level=1)  # one 2-D array per field: per-series slices copy nothing
    times_frame = frame.xs("absolute_time", axis=1, level=1)
    if not times_frame.columns.equals(values.columns):
        times_frame = times_frame.reindex(columns=values.columns)
    times, value_columns = times_frame.to_numpy(dtype="datetime64[ms]"), values.to_numpy()
    chunks = {}
    for position, path in enumerate(values.columns):
        present = ~np.isnat(times[:, position])
        if not present.any():
            continue
        chunks[path] = SeriesChunk(
            path, steps[present], value_columns[present, position], times[present, position].astype(np.int64)
        )
    return chunks


def float_series_chunks(points_by_path: dict[str, list[tuple]]) -> dict[str, SeriesChunk]:
    """neptune-query's float points (per path: tuples of timestamp ms, step, value, preview flag, completion; in
    ascending steps) as arrays, with no pandas frame between (building and pivoting one cost more than decoding)."""
    chunks = {}
    for path, points in points_by_path.items():
        if not points:
            continue
        table = np.array(points, dtype=np.float64)  # one C pass over the tuples; ms timestamps are exact in float64
        chunks[path] = SeriesChunk(path, table[:, 1].copy(), table[:, 2].copy(), table[:, 0].astype(np.int64))
    return chunks


def series_values(type_name: str, values: np.ndarray) -> pa.Array | list[dict[str, Any]]:
    """A series chunk's values as `series_rows` takes them: histograms as dicts, the others as Arrow arrays."""
    if type_name == "histogram_series":
        return [{"type": h.type, "edges": list(h.edges), "values": list(h.values)} for h in values]
    if type_name == "string_series":
        return pa.array(values, type=pa.string())
    return pa.array(values.astype(np.float64, copy=False), type=pa.float64(), from_pandas=False)

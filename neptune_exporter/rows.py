"""Arrow-native builders of Parquet rows (one RecordBatch per attribute chunk) in the shared schema."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from neptune_exporter.model import (
    FILE_TYPE,
    HISTOGRAM_TYPE,
    PARQUET_SCHEMA,
    TIMESTAMP_TYPE,
    AttributeType,
    as_utc,
    steps_to_decimal_array,
)

_VALUE_COLUMN = {
    AttributeType.FLOAT: "float_value",
    AttributeType.INT: "int_value",
    AttributeType.STRING: "string_value",
    AttributeType.BOOL: "bool_value",
    AttributeType.DATETIME: "datetime_value",
    AttributeType.STRING_SET: "string_set_value",
    AttributeType.FLOAT_SERIES: "float_value",
    AttributeType.STRING_SERIES: "string_value",
    AttributeType.HISTOGRAM_SERIES: "histogram_value",
    AttributeType.FILE: "file_value",
    AttributeType.FILE_SERIES: "file_value",
    AttributeType.FILE_SET: "file_value",
    AttributeType.ARTIFACT: "file_value",
}


def value_column(attribute_type: AttributeType | str) -> str:
    """Name of the column holding values of this attribute type."""
    return _VALUE_COLUMN[AttributeType(attribute_type)]


def _batch(n: int, columns: dict[str, pa.Array]) -> pa.RecordBatch:
    arrays = []
    for field in PARQUET_SCHEMA:
        array = columns.get(field.name)
        arrays.append(array if array is not None else pa.nulls(n, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=PARQUET_SCHEMA)


def _constant(value: str, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string()), n)


def _timestamps(timestamps_ms: np.ndarray | Sequence[float] | None, n: int) -> pa.Array | None:
    if timestamps_ms is None:
        return None
    ms = np.asarray(timestamps_ms)
    if ms.dtype.kind == "f":
        ms = np.rint(ms).astype(np.int64)
    return pa.array(ms.astype(np.int64, copy=False), type=pa.int64()).cast(TIMESTAMP_TYPE)


def to_utc_ms(value: datetime) -> datetime:
    """Datetime normalised to UTC with millisecond precision (naive values are taken as UTC)."""
    value = as_utc(value)
    return value.replace(microsecond=(value.microsecond // 1000) * 1000)


def parameter_rows(
    project_id: str, run_id: str, items: Iterable[tuple[str, AttributeType | str, Any]]
) -> pa.RecordBatch:
    """One row per single-value attribute: (path, type, value) with value already a Python value."""
    paths: list[str] = []
    types: list[str] = []
    values_by_column: dict[str, list] = {}
    items = list(items)
    n = len(items)
    for i, (path, attribute_type, value) in enumerate(items):
        attribute_type = AttributeType(attribute_type)
        column = _VALUE_COLUMN[attribute_type]
        paths.append(path)
        types.append(attribute_type.value)
        if attribute_type is AttributeType.STRING_SET and value is not None:
            value = sorted(value)
        elif attribute_type is AttributeType.DATETIME and value is not None:
            value = to_utc_ms(value)
        elif attribute_type in (AttributeType.FILE, AttributeType.FILE_SET, AttributeType.ARTIFACT):
            value = {"path": value}
        values_by_column.setdefault(column, [None] * n)[i] = value
    columns = {
        "project_id": _constant(project_id, n),
        "run_id": _constant(run_id, n),
        "attribute_path": pa.array(paths, pa.string()),
        "attribute_type": pa.array(types, pa.string()),
    }
    for column, values in values_by_column.items():
        columns[column] = pa.array(values, type=PARQUET_SCHEMA.field(column).type)
    return _batch(n, columns)


def series_rows(
    project_id: str,
    run_id: str,
    path: str,
    attribute_type: AttributeType | str,
    steps: np.ndarray | Sequence[float],
    values: pa.Array | np.ndarray | Sequence[Any],
    timestamps_ms: np.ndarray | Sequence[float] | None,
) -> pa.RecordBatch:
    """Rows of one series chunk. Values: float64 array, strings, histogram dicts or file paths."""
    attribute_type = AttributeType(attribute_type)
    column = _VALUE_COLUMN[attribute_type]
    n = len(steps)
    if attribute_type in (AttributeType.FILE_SERIES,) and not isinstance(values, pa.Array):
        values = pa.array([{"path": p} for p in values], type=FILE_TYPE)
    elif attribute_type is AttributeType.HISTOGRAM_SERIES and not isinstance(values, pa.Array):
        values = pa.array(list(values), type=HISTOGRAM_TYPE)
    elif not isinstance(values, pa.Array):
        values = pa.array(values, type=PARQUET_SCHEMA.field(column).type)
    columns = {
        "project_id": _constant(project_id, n),
        "run_id": _constant(run_id, n),
        "attribute_path": _constant(path, n),
        "attribute_type": _constant(attribute_type.value, n),
        "step": steps_to_decimal_array(steps, path),
        "timestamp": _timestamps(timestamps_ms, n),
        column: values,
    }
    return _batch(n, columns)


def empty_batch() -> pa.RecordBatch:
    """A zero-row batch in the shared schema."""
    return _batch(0, {})

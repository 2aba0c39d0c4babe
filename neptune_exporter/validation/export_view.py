"""The export as validation reads it (manifest facts, row batches, local files), straight from storage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_exporter.model import STEP_SCALE, decimal_array_to_unscaled
from neptune_exporter.storage.exported_run import ExportedRun, open_exported_run
from neptune_exporter.validation.compare import Difference
from neptune_exporter.validation.rules import step_product, step_text


def read_export(data_root: Path, files_root: Path, project_id: str, run_id: str, verify: bool = True) -> ExportedRun:
    """The exported run as storage reads it (manifest, or facts derived from peer-format parts); OutputPathError
    when absent, DamagedExportError when a part differs from its manifest (unless `verify` is False: ids only).
    Validation applies its own rules to these facts and rows, never the loader's."""
    return open_exported_run(Path(data_root), Path(files_root), project_id, run_id, verify=verify)


SERIES = ("float_series", "string_series", "histogram_series", "file_series")
FILE_TYPES = ("file", "file_set", "artifact")


def value_column(attribute_type: str) -> str:
    """The Parquet column of a type's values: `<type>_value`, series in their point type's, files in `file_value`."""
    return (
        "file_value"
        if attribute_type in (*FILE_TYPES, "file_series")
        else attribute_type.removesuffix("_series") + "_value"
    )


def single_values(export: ExportedRun) -> Iterator[tuple[str, str, Any, int | None]]:
    """(attribute path, type, Python value, unscaled step) of every non-series value: single values, files and
    file-series entries (the only ones with a step)."""
    for batch in export.batches():
        single = batch.filter(pc.invert(pc.is_in(batch.column("attribute_type"), value_set=pa.array(SERIES[:3]))))
        for row in single.to_pylist():
            value = row[value_column(row["attribute_type"])]
            if value is not None:
                step = row["step"]
                yield (
                    row["attribute_path"],
                    row["attribute_type"],
                    value,
                    None if step is None else int(step.scaleb(STEP_SCALE)),
                )


def series_rows(export: ExportedRun, attribute_type: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """Rows of one series type with a step and a value (a row with no value holds no point: none is expected)."""
    value = value_column(attribute_type)
    read = ["attribute_path", "attribute_type", "step", "timestamp", *dict.fromkeys([*columns, value])]
    for batch in export.batches(columns=read):
        rows = batch.filter(pc.equal(batch.column("attribute_type"), attribute_type))
        rows = rows.filter(pc.and_(pc.is_valid(rows.column("step")), pc.is_valid(rows.column(value))))
        if rows.num_rows:
            yield rows


def series_steps(export: ExportedRun) -> Iterator[np.ndarray]:
    """Unscaled steps (int64 millionths) of every float, string and histogram series point (rows with a value)."""
    for attribute_type in SERIES[:3]:
        for rows in series_rows(export, attribute_type, [value_column(attribute_type)]):
            yield decimal_array_to_unscaled(rows.column("step"))


def series_beyond_int64(export: ExportedRun, multiplier: int) -> tuple[ExportedRun, list[Difference]]:
    """Series with a step whose product with the multiplier is beyond int64, the steps MLflow and W&B store: the
    load fails each alone, so none of its points is expected (the export without them) and each is a `beyond
    int64` difference naming the step and its product."""
    lowest: dict[str, int] = {}
    highest: dict[str, int] = {}
    for attribute_type in SERIES:
        for rows in series_rows(export, attribute_type, []):
            steps = pa.table(
                {"path": rows.column("attribute_path"), "step": decimal_array_to_unscaled(rows.column("step"))}
            )
            ranges = steps.group_by("path").aggregate([("step", "min"), ("step", "max")]).to_pydict()
            for path, low, high in zip(ranges["path"], ranges["step_min"], ranges["step_max"], strict=True):
                lowest[path] = min(low, lowest.get(path, low))
                highest[path] = max(high, highest.get(path, high))
    differences = []
    for path in sorted(lowest):
        beyond = [s for s in (lowest[path], highest[path]) if step_product(s, multiplier) is None]
        if beyond:
            found = {"step": step_text(beyond[0]), "multiplier": multiplier, "product": beyond[0] * multiplier // 10**6}
            differences.append(
                Difference(export.project_id, export.run_id, "series", path, "beyond int64", "int64 steps", found)
            )
    return export.without(d.key for d in differences), differences


def timestamps_ms(rows: pa.RecordBatch, fallback: int | None) -> np.ndarray:
    """Epoch-ms times of rows; a missing time is `fallback` (-1 when None)."""
    ms = pc.fill_null(pc.cast(rows.column("timestamp"), pa.int64()), -1 if fallback is None else fallback)
    return np.asarray(ms.to_numpy(zero_copy_only=False), dtype=np.int64)

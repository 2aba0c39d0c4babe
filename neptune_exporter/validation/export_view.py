"""The export as validation reads it (manifest facts, row batches, local files), straight from storage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_exporter.errors import OutputPathError
from neptune_exporter.model import STEP_SCALE, decimal_array_to_unscaled, resolve_file_value
from neptune_exporter.storage.manifest import manifest_path, read_manifest
from neptune_exporter.storage.parquet import derive_manifest, read_run_batches, run_part_paths


def _utc_ms(value: Any) -> int | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    return int((moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp() * 1000)


@dataclass(frozen=True)
class ExportView:
    """One exported run: identity, checksum, source facts (experiment, times, fork) and its rows."""

    data_root: Path
    files_root: Path
    project_id: str
    run_id: str
    checksum: str
    source: dict

    @property
    def experiment(self) -> str | None:
        return self.source.get("experiment_name") or None

    @property
    def start_ms(self) -> int | None:
        return _utc_ms(self.source.get("creation_time"))

    @property
    def end_ms(self) -> int | None:
        return _utc_ms(self.source.get("modification_time"))

    @property
    def fork_parent(self) -> str | None:
        return self.source.get("fork_parent") or None

    @property
    def fork_step(self) -> float | None:
        step = self.source.get("fork_step")
        return None if step is None else float(step)

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        return read_run_batches(self.data_root, self.project_id, self.run_id, columns=columns)

    def local_file(self, attribute: str, value: dict | str | None) -> Path | None:
        """The exported file or folder of a file value; OutputPathError when it is not on disk."""
        local = resolve_file_value(self.files_root, self.project_id, value)
        if local is not None and not local.exists():
            raise OutputPathError(f"run {self.run_id!r}: file of {attribute} is missing from the export ({local})", "check --files-path")
        return local


def read_export(data_root: Path, files_root: Path, project_id: str, run_id: str) -> ExportView:
    """The exported run (manifest, or facts derived from peer-format parts); OutputPathError when absent."""
    manifest = read_manifest(manifest_path(Path(data_root), project_id, run_id))
    if manifest is None:
        parts = run_part_paths(Path(data_root), project_id, run_id)
        manifest = derive_manifest(parts, Path(data_root)) if parts else None
    if manifest is None:
        raise OutputPathError(f"run {run_id!r} of project {project_id!r} is not in the export under {data_root}", "check --data-path and the ids")
    source = {k: v for k, v in (manifest.source or {}).items() if v is not None}
    return ExportView(Path(data_root), Path(files_root), project_id, run_id, str(manifest.checksum or ""), source)


SERIES = ("float_series", "string_series", "histogram_series", "file_series")
FILE_TYPES = ("file", "file_set", "artifact")


def value_column(attribute_type: str) -> str:
    """The Parquet column of a type's values: `<type>_value`, series in their point type's, files in `file_value`."""
    return "file_value" if attribute_type in (*FILE_TYPES, "file_series") else attribute_type.removesuffix("_series") + "_value"


def single_values(export: ExportView) -> Iterator[tuple[str, str, Any, int | None]]:
    """(attribute path, type, Python value, unscaled step) of every non-series value: single values, files and
    file-series entries (the only ones with a step)."""
    for batch in export.batches():
        single = batch.filter(pc.invert(pc.is_in(batch.column("attribute_type"), value_set=pa.array(SERIES[:3]))))
        for row in single.to_pylist():
            value = row[value_column(row["attribute_type"])]
            if value is not None:
                step = row["step"]
                yield row["attribute_path"], row["attribute_type"], value, None if step is None else int(step.scaleb(STEP_SCALE))


def series_rows(export: ExportView, attribute_type: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """Rows of one series type (with a step), part by part."""
    for batch in export.batches(columns=["attribute_path", "attribute_type", "step", "timestamp", *columns]):
        rows = batch.filter(pc.equal(batch.column("attribute_type"), attribute_type))
        rows = rows.filter(pc.is_valid(rows.column("step")))
        if rows.num_rows:
            yield rows


def series_steps(export: ExportView) -> Iterator[np.ndarray]:
    """Unscaled steps (int64 millionths) of every float, string and histogram series row."""
    for batch in export.batches(columns=["attribute_type", "step"]):
        rows = batch.filter(pc.is_in(batch.column("attribute_type"), value_set=pa.array(SERIES[:3])))
        yield decimal_array_to_unscaled(rows.column("step").filter(pc.is_valid(rows.column("step"))))


def timestamps_ms(rows: pa.RecordBatch, fallback: int | None) -> np.ndarray:
    """Epoch-ms times of rows; a missing time is `fallback` (-1 when None)."""
    ms = pc.fill_null(pc.cast(rows.column("timestamp"), pa.int64()), -1 if fallback is None else fallback)
    return np.asarray(ms.to_numpy(zero_copy_only=False), dtype=np.int64)

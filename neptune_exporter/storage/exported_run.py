"""Reading an export, ours (manifest) or the peer tool's (manifest derived from the parts): stored runs as loaders
and validation see them."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_exporter.errors import InvalidOptionError, OutputPathError, StepOutOfRangeError
from neptune_exporter.model import (
    PROJECT_RELATIVE_FILES_FORMAT,
    STEP_SCALE,
    as_utc,
    decimal_array_to_unscaled,
    format_step,
    integer_steps,
    resolve_file_value,
    sanitize_name,
    step_multiplier_for,
)
from neptune_exporter.selection import compile_regex
from neptune_exporter.storage import integrity
from neptune_exporter.storage.files import file_sha256
from neptune_exporter.storage.manifest import (
    MANIFEST_SUFFIX,
    STATUS_COMPLETE,
    STATUS_FAILED,
    Manifest,
    PartInfo,
    compute_checksum,
    manifest_path,
    read_manifest,
)
from neptune_exporter.storage.parquet import (
    SERIES_TYPE_NAMES,
    AttributeStats,
    iter_part_batches,
    listed_paths,
    parse_part_name,
    part_index,
    project_dir,
    read_run_batches,
    run_part_paths,
)

log = logging.getLogger(__name__)

_SYS_FACTS = {
    "sys/id": ("sys_id", "string_value"),
    "sys/custom_run_id": ("custom_run_id", "string_value"),
    "sys/name": ("name", "string_value"),
    "sys/experiment/name": ("experiment_name", "string_value"),
    "sys/creation_time": ("creation_time", "datetime_value"),
    "sys/modification_time": ("modification_time", "datetime_value"),
    "sys/forking/parent": ("fork_parent", "string_value"),
    "sys/forking/step": ("fork_step", "float_value"),
}


@dataclass
class StoredRun:
    """A run found on disk: its ids, folder, parts and manifest (derived from the parts for peer exports)."""

    project_id: str
    run_id: str
    project_dir: Path
    parts: list[Path]
    manifest: Manifest


_SYS_PATHS = pa.array(list(_SYS_FACTS), pa.string())
_DERIVE_COLUMNS = [
    "project_id",
    "run_id",
    "attribute_path",
    "attribute_type",
    "step",
    "string_value",
    "float_value",
    "datetime_value",
]


def _collect_sys_facts(batch: pa.RecordBatch, facts: dict[str, Any]) -> None:
    mask = pc.is_in(batch.column("attribute_path"), value_set=_SYS_PATHS)
    if not pc.any(mask).as_py():
        return
    rows = batch.filter(mask).to_pylist()
    for row in rows:
        name, column = _SYS_FACTS[row["attribute_path"]]
        value = row[column]
        if value is not None and name not in facts:
            facts[name] = value.isoformat() if hasattr(value, "isoformat") else value


def derive_manifest(parts: list[Path], data_root: Path | str) -> Manifest:
    """A manifest for parts written without one (the peer tool): ids, counts, last steps, checksums, sys facts."""
    data_root = Path(data_root)
    stats, infos = AttributeStats(), []
    ids: dict[str, str] = {}
    facts: dict[str, Any] = {}  # sys fact name -> ISO text, string or number
    for path in parts:
        rows = 0
        for batch in iter_part_batches(path, _DERIVE_COLUMNS):
            stats.add(batch)
            _collect_sys_facts(batch, facts)
            rows += batch.num_rows
            if not ids and batch.num_rows:
                ids = {"project_id": batch.column(0)[0].as_py(), "run_id": batch.column(1)[0].as_py()}
        infos.append(PartInfo(path.relative_to(data_root).as_posix(), rows, path.stat().st_size, file_sha256(path)))
    if "experiment_name" not in facts and "name" in facts:
        facts["experiment_name"] = facts["name"]  # 3.x experiments keep their name in sys/name (peer reader's rule)
    complete = bool(parts) and part_index(parts[0].name) == 0  # the peer's marker: part 0 exists
    errors = (
        []
        if complete
        else [{"error_type": "IncompleteExport", "message": "parts without part 0", "remedy": "export the run again"}]
    )
    return Manifest(
        status=STATUS_COMPLETE if complete else STATUS_FAILED,
        source={"kind": "peer", **ids, **facts},
        parts=infos,
        attributes=stats.by_path,
        errors=errors,
        checksum=compute_checksum(infos, []),
        derived=True,
    )


def _run_prefixes(folder: Path) -> dict[str, list[Path]]:
    prefixes: dict[str, list[Path]] = {}
    for entry in os.scandir(folder):
        if entry.name.endswith(MANIFEST_SUFFIX) and not entry.name.startswith("."):
            prefixes.setdefault(entry.name[: -len(MANIFEST_SUFFIX)], [])
            continue
        parsed = parse_part_name(entry.name)
        if parsed and not parsed[2]:
            prefixes.setdefault(parsed[0], []).append(Path(entry.path))
    return prefixes


def _stored_run(data_root: Path, folder: Path, prefix: str, parts: list[Path]) -> StoredRun | None:
    manifest = read_manifest(folder / (prefix + MANIFEST_SUFFIX))
    parts = sorted(parts, key=lambda p: part_index(p.name))
    if manifest is not None:
        listed = listed_paths(data_root, manifest)
        return StoredRun(manifest.project_id, manifest.run_id, folder, listed, manifest)
    if not parts:
        return None
    manifest = derive_manifest(parts, data_root)
    manifest.source["run_id"] = manifest.run_id or prefix  # a peer run with zero rows names itself by file only
    return StoredRun(manifest.project_id, manifest.run_id, folder, parts, manifest)


def list_stored_runs(
    data_root: Path | str, projects: Iterable[str] | None = None, runs_regex: str | None = None
) -> Iterator[StoredRun]:
    """Runs under the data root (ours or the peer tool's), by project folder then run file name."""
    data_root = Path(data_root)
    if not data_root.is_dir():
        return
    pattern = compile_regex(runs_regex, "--runs")
    wanted = {sanitize_name(p) for p in projects} if projects else None
    for folder in sorted(p for p in data_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if wanted is not None and folder.name not in wanted:
            continue
        for prefix, parts in sorted(_run_prefixes(folder).items()):
            stored = _stored_run(data_root, folder, prefix, parts)
            if stored is None or (pattern and not _run_matches(stored, pattern)):
                continue
            yield stored


def _run_matches(stored: StoredRun, pattern: re.Pattern) -> bool:
    candidates = [stored.run_id, stored.manifest.source.get("custom_run_id"), stored.manifest.source.get("sys_id")]
    return any(c and pattern.search(c) for c in candidates)


# ----------------------------------------------------------------------------- a run as loaders see it

# Provenance every loaded run carries in its target (MLflow tags, W&B config): where it came from, which export
# (its checksum), how steps were scaled, whether the load finished, and the Neptune fork relation.
PROVENANCE_PROJECT = "neptune.project"
PROVENANCE_RUN_ID = "neptune.run_id"
PROVENANCE_CHECKSUM = "neptune.export_checksum"
PROVENANCE_LOAD_STATE = "neptune.load_state"
PROVENANCE_STEP_MULTIPLIER = "neptune.step_multiplier"
PROVENANCE_FORK_PARENT = "neptune.fork_parent"
PROVENANCE_FORK_STEP = "neptune.fork_step"


def _field(record, name: str):
    """Field of a manifest section that may be a dataclass or a plain dict."""
    if record is None:
        return None
    return record.get(name) if isinstance(record, dict) else getattr(record, name, None)


def _epoch_ms(value) -> int | None:
    """Epoch milliseconds of a datetime or ISO text (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return int(as_utc(value).timestamp() * 1000)


@dataclass(frozen=True)
class ExportedRun:
    """One run on disk as loaders see it: identity, provenance, times, fork parent and its row batches."""

    project_id: str
    run_id: str
    checksum: str
    complete: bool
    experiment_name: str | None
    start_ms: int | None
    end_ms: int | None
    fork_parent: str | None
    fork_step: float | None
    data_root: Path
    files_root: Path
    format_version: int = PROJECT_RELATIVE_FILES_FORMAT  # older manifests stored file paths relative to <files>/
    left_out: frozenset[str] = frozenset()  # attributes this view of the run leaves out (`without`)

    @classmethod
    def from_stored(cls, stored, data_root: Path, files_root: Path) -> ExportedRun:
        """View of a `StoredRun` (manifest written by us, or derived from peer parts)."""
        manifest = stored.manifest
        source = _field(manifest, "source")
        return cls(
            project_id=stored.project_id,
            run_id=stored.run_id,
            checksum=str(_field(manifest, "checksum") or ""),
            complete=_field(manifest, "status") in (None, "complete"),
            experiment_name=_field(source, "experiment_name"),
            start_ms=_epoch_ms(_field(source, "creation_time")),
            end_ms=_epoch_ms(_field(source, "modification_time")),
            fork_parent=_field(source, "fork_parent"),
            fork_step=_field(source, "fork_step"),
            data_root=Path(data_root),
            files_root=Path(files_root),
            format_version=int(_field(manifest, "format_version") or PROJECT_RELATIVE_FILES_FORMAT),
        )

    def local_file(self, attribute_path: str, value: dict | str | None) -> Path | None:
        """The exported file or folder a `file_value` names (`<files>/<project-dir>/<path>`, the peer tool's rule);
        None for an empty value, OutputPathError when it is not on disk."""
        if value and self.format_version < PROJECT_RELATIVE_FILES_FORMAT:
            raise OutputPathError(
                f"run {self.run_id!r} was exported by an older version that stored file paths relative to {self.files_root}",
                "export the run again with this version (the export redoes it), then load",
            )
        local = resolve_file_value(self.files_root, self.project_id, value)
        if local is not None and not local.exists():
            raise OutputPathError(
                f"run {self.run_id!r}: file of {attribute_path} is missing from the export ({local})",
                "check --files-path, or re-export the run's files",
                run=self.run_id,
                attribute=attribute_path,
            )
        return local

    def provenance(self, multiplier: int, load_state: str) -> dict:
        """The provenance record (PROVENANCE_* keys, plain values); each target writes it in its own form."""
        return {
            PROVENANCE_PROJECT: self.project_id,
            PROVENANCE_RUN_ID: self.run_id,
            PROVENANCE_CHECKSUM: self.checksum,
            PROVENANCE_LOAD_STATE: load_state,
            PROVENANCE_STEP_MULTIPLIER: multiplier,
            PROVENANCE_FORK_PARENT: self.fork_parent,
            PROVENANCE_FORK_STEP: self.fork_step,
        }

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """The run's rows, part by part (bounded memory), less the attributes this view leaves out."""
        if not self.left_out:
            return read_run_batches(self.data_root, self.project_id, self.run_id, columns=columns)
        return self._batches_without(columns)

    def _batches_without(self, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        left_out = pa.array(sorted(self.left_out), pa.string())
        read = None if columns is None else list(dict.fromkeys([*columns, "attribute_path"]))
        for batch in read_run_batches(self.data_root, self.project_id, self.run_id, columns=read):
            kept = batch.filter(pc.invert(pc.is_in(batch.column("attribute_path"), value_set=left_out)))
            yield kept if columns is None else kept.select(columns)

    def without(self, attributes: Iterable[str]) -> ExportedRun:
        """The same run with these attributes left out of its rows."""
        return replace(self, left_out=self.left_out | frozenset(attributes))

    def series_steps(self) -> Iterator[np.ndarray]:
        """Unscaled (int64 millionths) steps of every series row, chunk by chunk."""
        for _, steps in self.series_steps_by_path():
            yield steps

    def series_steps_by_path(self) -> Iterator[tuple[str, np.ndarray]]:
        """(attribute path, unscaled steps) of the series rows, per path within each chunk."""
        for batch in self.batches(columns=["attribute_path", "attribute_type", "step", *POINT_VALUE_COLUMNS.values()]):
            batch = rows_with_points(batch)
            is_series = pc.is_in(batch.column("attribute_type"), value_set=pa.array(sorted(SERIES_TYPE_NAMES)))
            rows = batch.filter(pc.and_(is_series, pc.is_valid(batch.column("step"))))
            paths = rows.column("attribute_path")
            for path in pc.unique(paths).to_pylist():
                yield path, decimal_array_to_unscaled(rows.column("step").filter(pc.equal(paths, path)))

    def step_multiplier(self, requested: int | None) -> int:
        """The user's multiplier (checked exact and within int64 on every step) or the smallest exact power of ten;
        the choice is logged with the step that needs it."""
        if requested is None:
            multiplier = step_multiplier_for(self.series_steps())
            log.info("run %s (%s): steps × %d%s", self.run_id, self.project_id, multiplier, self._why(multiplier))
            return multiplier
        if requested < 1:
            raise InvalidOptionError(
                f"--step-multiplier {requested} must be a positive integer", "pass 1, 10, 1000, ..."
            )
        for path, steps in self.series_steps_by_path():
            try:
                integer_steps(steps, requested, path)
            except StepOutOfRangeError:
                continue  # fails that series alone (`series_beyond_range`), not the run
        return requested

    def series_beyond_range(self, multiplier: int) -> dict[str, StepOutOfRangeError]:
        """Series with a step whose product with the multiplier is beyond the targets' int64 steps (only a
        --step-multiplier can take one there): each fails alone, the run's other attributes load."""
        beyond: dict[str, StepOutOfRangeError] = {}
        for path, steps in self.series_steps_by_path():
            if path in beyond:
                continue
            try:
                integer_steps(steps, multiplier, path)
            except StepOutOfRangeError as error:
                beyond[path] = error
        return beyond

    def _why(self, multiplier: int) -> str:
        """Why the automatic multiplier is what it is: the first step with that many fraction digits."""
        if multiplier == 1:
            return ", every series step is whole"
        coarser = 10**STEP_SCALE // (multiplier // 10)  # a step coarser than the multiplier is a multiple of this
        for path, steps in self.series_steps_by_path():
            finer = steps[steps % coarser != 0]
            if finer.size:
                step = format_step(int(finer[0]))
                return f", the smallest power of ten making every step whole (step {step} of {path})"
        return ""


POINT_VALUE_COLUMNS = {
    "float_series": "float_value",
    "string_series": "string_value",
    "histogram_series": "histogram_value",
}


def rows_with_points(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The rows less float, string and histogram series rows with no value: such a row holds no point (the peer
    tool writes them, e.g. for an attribute another run has), so every loader ignores it."""
    types = batch.column("attribute_type")
    present = set(pc.unique(types).to_pylist())
    no_point = None
    for attribute_type, column in POINT_VALUE_COLUMNS.items():
        values = batch.column(column)
        if attribute_type not in present or not values.null_count:
            continue
        missing = pc.and_(pc.equal(types, attribute_type), pc.is_null(values))
        no_point = missing if no_point is None else pc.or_(no_point, missing)
    if no_point is None or not pc.any(no_point).as_py():
        return batch  # the usual case: no copy
    return batch.filter(pc.invert(no_point))


def open_exported_run(
    data_root: Path, files_root: Path, project_id: str, run_id: str, verify: bool = True
) -> ExportedRun:
    """The exported run with exactly this project and run id (manifest, or derived from peer parts); OutputPathError
    when absent. A complete manifest's parts are verified first (`verify`; storage/integrity.py): DamagedExportError
    when one differs from the manifest. `verify=False` only for reading ids and provenance (a fork parent's)."""
    data_root = Path(data_root)
    manifest = read_manifest(manifest_path(data_root, project_id, run_id))
    if verify and manifest is not None and manifest.is_complete():
        integrity.require_intact(data_root, manifest, remedy_then="run this command again")
    parts = (
        [data_root / part.path for part in manifest.parts]
        if manifest
        else run_part_paths(data_root, project_id, run_id)
    )
    if manifest is None and parts:
        manifest = derive_manifest(parts, data_root)
    if manifest is None:
        raise OutputPathError(
            f"run {run_id!r} of project {project_id!r} is not in the export under {data_root}",
            "check --data-path and the project/run ids, or export the run first",
        )
    stored = StoredRun(project_id, run_id, project_dir(data_root, project_id), parts, manifest)
    return ExportedRun.from_stored(stored, data_root, files_root)

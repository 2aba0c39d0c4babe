"""The incremental on-disk rules: plan a run against its manifest, drop strays, keep part 0, and merge a new export
into the parts an earlier one left (watermarks, superseded single values, attributes, files)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_exporter.model import (
    PROJECT_RELATIVE_FILES_FORMAT,
    RunRef,
    decimal_array_to_unscaled,
    iso_utc_ms,
    part_file_name,
    run_ref_from_json,
    run_ref_to_json,
    sanitize_name,
    step_to_unscaled,
)
from neptune_exporter.storage import integrity
from neptune_exporter.storage.files import ExportedFile
from neptune_exporter.storage.manifest import (
    Manifest,
    PartInfo,
    Watermark,
    manifest_path,
    read_manifest,
    write_manifest,
)
from neptune_exporter.storage.parquet import (
    SERIES_TYPE_NAMES,
    AttributeStats,
    RunWriter,
    iter_part_batches,
    part_paths_by_run_file,
    project_dir,
    run_part_paths,
)

log = logging.getLogger(__name__)

ACTIONS = ("skip", "full", "incremental", "redo")
SERIES_TYPES_ARRAY = pa.array(sorted(SERIES_TYPE_NAMES), pa.string())


@dataclass(frozen=True)
class RunPlan:
    """What to do with one run: skip (unchanged), full (new), incremental (changed), redo (failed/partial/options)."""

    run: RunRef
    action: str
    reason: str

    def to_json(self) -> dict:
        return {"run": run_ref_to_json(self.run), "action": self.action, "reason": self.reason}

    @classmethod
    def from_json(cls, data: dict) -> RunPlan:
        return cls(run_ref_from_json(data["run"]), data["action"], data.get("reason", ""))


# ----------------------------------------------------------------------------- planning


def listed_parts(manifest: Manifest | None) -> set[str]:
    """Paths (relative to the data root) of the parts a manifest lists; none for no manifest."""
    return {part.path for part in manifest.parts} if manifest else set()


def remove_strays(
    data_root: Path,
    project_id: str,
    run_id: str,
    keep: Manifest | None,
    scope: str | None = None,
    on_disk: list[Path] | None = None,
) -> list[Path]:
    """Delete the run's parts and tmp files that `keep` (a complete manifest, or None) does not list.

    `on_disk`: the run's parts and tmp files when the caller already listed the folder.
    """
    listed = listed_parts(keep)
    removed = []
    if on_disk is None:
        on_disk = run_part_paths(data_root, project_id, run_id, include_tmp=True, scope=scope)
    for path in on_disk:
        if path.relative_to(data_root).as_posix() not in listed:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def remove_leftovers(data_root: Path) -> list[Path]:
    """Delete the `*.tmp` files dead writers left in the project folders (tmp parts, half-written manifests and
    summaries). Only the export holding the data path's lock calls this: no other writer is at work there."""
    removed = []
    for folder in _project_folders(data_root):
        for entry in os.scandir(folder):
            if entry.name.endswith(".tmp") and entry.is_file(follow_symlinks=False):
                Path(entry.path).unlink(missing_ok=True)
                removed.append(Path(entry.path))
    if removed:
        log.info("removed %d leftover tmp file(s) of an earlier, interrupted export under %s", len(removed), data_root)
    return removed


def _project_folders(data_root: Path) -> list[Path]:
    """Project folders under the data root and their scope subfolders (models, model_versions)."""
    if not data_root.is_dir():
        return []
    projects = [Path(e.path) for e in os.scandir(data_root) if e.is_dir() and not e.name.startswith(".")]
    scopes = [Path(e.path) for folder in projects for e in os.scandir(folder) if e.is_dir()]
    return projects + scopes


def plan_one(run: RunRef, fingerprint: str, data_root: Path, on_disk: list[Path]) -> RunPlan:
    """The plan of one run; `on_disk` holds its parts and tmp files (listed once per project folder)."""
    manifest = read_manifest(manifest_path(data_root, run.project_id, run.run_id, run.scope))
    if manifest is None:
        if on_disk:
            return RunPlan(run, "redo", f"{len(on_disk)} part(s) without a complete manifest")
        return RunPlan(run, "full", "not exported yet")
    if not manifest.is_complete():
        return RunPlan(run, "redo", "previous export failed")
    damage = integrity.damaged_parts(data_root, manifest)
    if damage:
        reason = integrity.describe_damage(damage)
        log.warning("run %s: %s; exporting it again", run.key(), reason)
        return RunPlan(run, "redo", reason)
    if manifest.options.get("fingerprint") != fingerprint:
        return RunPlan(run, "redo", "export options changed")
    if manifest.format_version < PROJECT_RELATIVE_FILES_FORMAT:
        return RunPlan(run, "redo", "exported with file paths relative to the files root (older format)")
    remove_strays(data_root, run.project_id, run.run_id, manifest, run.scope, on_disk=on_disk)
    ensure_part_zero(data_root, manifest)
    if run.modification_time is not None and manifest.source.get("modification_time") == iso_utc_ms(
        run.modification_time
    ):
        return RunPlan(run, "skip", "unchanged since the last export")
    return RunPlan(run, "incremental", "modified since the last export")


def plan_runs(runs: Iterable[RunRef], data_root: Path, fingerprint: str) -> list[RunPlan]:
    """Compare each run with its manifest (`fingerprint`: of the export options now asked for). Also tidies complete
    runs (stray files removed, part 0 restored)."""
    folders: dict[tuple[str, str | None], dict[str, list[Path]]] = {}
    plans = []
    for run in runs:
        key = (run.project_id, run.scope)
        if key not in folders:
            folders[key] = part_paths_by_run_file(project_dir(data_root, run.project_id, run.scope), include_tmp=True)
        plans.append(plan_one(run, fingerprint, data_root, folders[key].get(sanitize_name(run.run_id), [])))
    return plans


# ----------------------------------------------------------------------------- merging an incremental export


def ensure_part_zero(data_root: Path, manifest: Manifest) -> None:
    """Make `<run-file>_part_0.parquet` exist (the peer tool's "run complete" marker) by renaming the lowest part."""
    if not manifest.parts or not manifest.is_complete():
        return
    zero_name = part_file_name(manifest.run_id, 0)
    if any(Path(p.path).name == zero_name for p in manifest.parts):
        return
    lowest = manifest.parts[0]
    source = data_root / lowest.path
    target = source.with_name(zero_name)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    relative = target.relative_to(data_root).as_posix()
    manifest.parts = [replace(lowest, path=relative), *manifest.parts[1:]]
    if manifest.single_value_parts is not None:
        manifest.single_value_parts = [relative if p == lowest.path else p for p in manifest.single_value_parts]
    write_manifest(data_root, manifest)
    source.unlink()


def watermark_filter(batch: pa.RecordBatch, marks: dict[str, int]) -> pa.RecordBatch:
    """Drop series points at or before the watermark (a source may return a little more than asked)."""
    if not marks or batch.num_rows == 0:
        return batch
    paths = batch.column("attribute_path")
    is_series = pc.is_in(batch.column("attribute_type"), value_set=SERIES_TYPES_ARRAY)
    steps = decimal_array_to_unscaled(batch.column("step"))
    drop = np.zeros(batch.num_rows, dtype=bool)
    for path in pc.unique(paths).to_pylist():
        if path in marks:
            same = np.asarray(pc.and_(pc.equal(paths, path), is_series).fill_null(False))
            drop |= same & (steps <= marks[path])
    return batch.filter(pa.array(~drop)) if drop.any() else batch


def unscaled_marks(watermarks: dict[str, Watermark] | None) -> dict[str, int]:
    return {
        path: step_to_unscaled(mark.last_step)
        for path, mark in (watermarks or {}).items()
        if mark.last_step is not None
    }


def single_value_paths(stats: AttributeStats) -> set[str]:
    return {path for path, entry in stats.by_path.items() if entry["type"] not in SERIES_TYPE_NAMES}


def rewrite_without(writer: RunWriter, data_root: Path, part: PartInfo, superseded: set[str]) -> None:
    """Copy a kept part into the writer minus the single-value rows the new export replaced."""
    drop = pa.array(sorted(superseded), pa.string())
    for batch in iter_part_batches(data_root / part.path):
        is_single = pc.invert(pc.is_in(batch.column("attribute_type"), value_set=SERIES_TYPES_ARRAY))
        replaced = pc.and_(is_single, pc.is_in(batch.column("attribute_path"), value_set=drop))
        writer.write(batch.filter(pc.invert(replaced)))


def parts_holding(data_root: Path, kept: Manifest, paths: set[str]) -> list[PartInfo]:
    """Kept parts holding single-value rows of `paths` (scans only parts known to hold single-value rows)."""
    candidates = set(kept.single_value_parts) if kept.single_value_parts is not None else None
    value_set = pa.array(sorted(paths), pa.string())
    holding = []
    for part in kept.parts:
        if candidates is not None and part.path not in candidates:
            continue
        for batch in iter_part_batches(data_root / part.path, ["attribute_path", "attribute_type"]):
            hit = pc.and_(
                pc.invert(pc.is_in(batch.column("attribute_type"), value_set=SERIES_TYPES_ARRAY)),
                pc.is_in(batch.column("attribute_path"), value_set=value_set),
            )
            if pc.any(hit).as_py():
                holding.append(part)
                break
    return holding


def merge_attributes(kept: Manifest | None, stats: AttributeStats, superseded: set[str]) -> dict[str, dict]:
    merged = {p: dict(e) for p, e in (kept.attributes if kept else {}).items() if p not in superseded}
    for path, entry in stats.by_path.items():
        old = merged.get(path)
        if old is None or old["type"] != entry["type"]:
            merged[path] = dict(entry)
            continue
        old["count"] += entry["count"]
        steps = [s for s in (old.get("last_step"), entry.get("last_step")) if s is not None]
        old["last_step"] = max(steps) if steps else None
    return merged


def file_entry(exported: ExportedFile) -> dict:
    return {
        "attribute_path": exported.attribute_path,
        "path": exported.relative_path,
        "size": exported.size,
        "sha256": exported.sha256,
        "step": exported.step,
    }


def merge_files(kept: Manifest | None, new: list[ExportedFile]) -> list[dict]:
    entries = {(f["attribute_path"], f["path"]): f for f in (kept.files if kept else [])}
    entries.update({(f.attribute_path, f.relative_path): file_entry(f) for f in new})
    return list(entries.values())


def kept_single_value_parts(kept: Manifest | None, rewritten: set[str]) -> list[str] | None:
    """Kept parts still holding single-value rows; None stays None (unknown: the next incremental scans all)."""
    if kept is None:
        return []
    if kept.single_value_parts is None:
        return None
    return [p for p in kept.single_value_parts if p not in rewritten]


def drop_obsolete(data_root: Path, previous: Manifest | None, manifest: Manifest) -> None:
    """After the new manifest is on disk: delete parts the old manifest listed and the new one does not."""
    for path in listed_parts(previous) - listed_parts(manifest):
        (data_root / path).unlink(missing_ok=True)

"""The verbs every target implements, target capabilities as data, and the exact step and key mappings they share."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_exporter.errors import InvalidOptionError, OutputPathError
from neptune_exporter.model import (
    PROJECT_RELATIVE_FILES_FORMAT,
    SERIES_TYPES,
    STEP_SCALE,
    decimal_array_to_unscaled,
    resolve_file_value,
)

# ----------------------------------------------------------------------------- capabilities


@dataclass(frozen=True)
class TargetCapabilities:
    """What a target accepts; loaders read limits from here instead of hard-coding them."""

    name: str
    integer_steps: bool
    increasing_steps_only: bool  # W&B drops lower steps
    max_key_length: int
    key_pattern: str  # regex of one allowed character
    max_param_length: int | None
    metrics_per_batch: int | None
    params_per_batch: int | None
    tags_per_batch: int | None
    infinity_stored_as: float | None = None  # a target that cannot store ±inf keeps ±this value instead


MLFLOW = TargetCapabilities(
    name="mlflow",
    integer_steps=True,
    increasing_steps_only=False,
    max_key_length=250,
    key_pattern=r"[/\w.\- :]",
    max_param_length=6000,
    metrics_per_batch=1000,
    params_per_batch=100,
    tags_per_batch=100,
    infinity_stored_as=1.7976931348623157e308,  # SQL stores: ±inf becomes ±max float64
)

WANDB = TargetCapabilities(
    name="wandb",
    integer_steps=True,
    increasing_steps_only=True,
    max_key_length=250,
    key_pattern=r"[/\w.\- ]",
    max_param_length=None,
    metrics_per_batch=None,
    params_per_batch=None,
    tags_per_batch=None,
)

# ----------------------------------------------------------------------------- steps


def step_multiplier_for(unscaled_steps: Iterable[np.ndarray]) -> int:
    """Smallest power of ten making every step (int64 millionths) an exact integer: 1, 10, ..., 10**6."""
    needed = 0
    for chunk in unscaled_steps:
        chunk = np.asarray(chunk, dtype=np.int64)
        while needed < STEP_SCALE and chunk.size and np.any(chunk % 10 ** (STEP_SCALE - needed)):
            needed += 1
        if needed == STEP_SCALE:
            break
    return 10**needed


def integer_steps(unscaled_steps: np.ndarray, multiplier: int) -> np.ndarray:
    """Exact integer steps = step * multiplier; raises InvalidOptionError when a step would not be whole."""
    unscaled = np.asarray(unscaled_steps, dtype=np.int64)
    # step * multiplier = unscaled * multiplier / 10**6, exact in integers
    numerator = unscaled * multiplier
    divisor = 10**STEP_SCALE
    if np.any(numerator % divisor):
        bad = unscaled[(numerator % divisor) != 0][0] / divisor
        raise InvalidOptionError(
            f"step {bad} times the step multiplier {multiplier} is not a whole number",
            "drop --step-multiplier to let the loader pick the smallest exact power of ten, or pass a larger one",
        )
    return numerator // divisor


# ----------------------------------------------------------------------------- keys


def map_key(key: str, capabilities: TargetCapabilities) -> str:
    """Deterministic key valid for the target; a changed key gets a short hash of the original so no two collide."""
    allowed = re.compile(capabilities.key_pattern)
    cleaned = "".join(c if allowed.fullmatch(c) else "_" for c in key)
    cleaned = re.sub(r"/{2,}", "/", cleaned).replace("..", "__").strip("/") or "_"
    if cleaned == key and len(key) <= capabilities.max_key_length:
        return key
    suffix = "~" + hashlib.blake2b(key.encode("utf-8"), digest_size=4).hexdigest()
    if not allowed.fullmatch("~"):
        suffix = "_" + suffix[1:]
    return cleaned[: capabilities.max_key_length - len(suffix)].rstrip("/") + suffix


@dataclass
class KeyMap:
    """Original → target keys of one run; guarantees no two originals share a target key."""

    capabilities: TargetCapabilities
    renamed: dict[str, str] = field(default_factory=dict)
    _taken: dict[str, str] = field(default_factory=dict)

    def __call__(self, key: str) -> str:
        return self.claim(key, map_key(key, self.capabilities))

    def claim(self, key: str, mapped: str) -> str:
        """Register `mapped` for `key`; when another original already holds it, a salted hash of `key` until free."""
        salt = ""
        while self._taken.setdefault(mapped, key) != key:
            salt += "\x00"
            mapped = map_key(key + salt, self.capabilities)
        if mapped != key:
            self.renamed[key] = mapped
        return mapped


# ----------------------------------------------------------------------------- verbs


@dataclass
class LoadResult:
    """Outcome of loading one run."""

    project_id: str
    run_id: str
    status: str  # "loaded" | "skipped" | "failed"
    target_run_id: str | None = None
    points: int = 0
    files: int = 0
    error: dict | None = None


class Loader(Protocol):
    """A destination: same verbs for MLflow and W&B (validation is separate: neptune_exporter/validation/)."""

    capabilities: TargetCapabilities

    def check_target(self) -> None:
        """Fail fast (TerminalError with remedy) when the target is unreachable or unwritable."""

    def load_run(self, data_root, files_root, project_id: str, run_id: str) -> LoadResult:
        """Load one exported run idempotently (skip complete, redo partial, reload changed)."""


# ----------------------------------------------------------------------------- exported runs (shared by loaders)


def run_key(project_id: str, run_id: str) -> str:
    """Quote-free lookup key of a run in a target (a tag value safe in any filter language)."""
    return hashlib.blake2b(f"{project_id}\x00{run_id}".encode("utf-8"), digest_size=16).hexdigest()


def format_step(unscaled: int) -> str:
    """Exact decimal text of a step held as int64 millionths: 3 → "0.000003", 1_500_000 → "1.5"."""
    sign = "-" if unscaled < 0 else ""
    whole, fraction = divmod(abs(int(unscaled)), 10**STEP_SCALE)
    text = str(fraction).rjust(STEP_SCALE, "0").rstrip("0")
    return f"{sign}{whole}.{text}" if text else f"{sign}{whole}"


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
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp() * 1000)


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

    @classmethod
    def from_stored(cls, stored, data_root: Path, files_root: Path) -> "ExportedRun":
        """View of a `storage.parquet.StoredRun` (manifest written by us, or derived from peer parts)."""
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

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """The run's rows, part by part (bounded memory)."""
        from neptune_exporter.storage.parquet import read_run_batches

        return read_run_batches(self.data_root, self.project_id, self.run_id, columns=columns)

    def series_steps(self) -> Iterator[np.ndarray]:
        """Unscaled (int64 millionths) steps of every series row, chunk by chunk."""
        for batch in self.batches(columns=["attribute_type", "step"]):
            is_series = pc.is_in(batch.column("attribute_type"), value_set=pa.array(sorted(SERIES_TYPE_NAMES)))
            steps = batch.column("step").filter(pc.and_(is_series, pc.is_valid(batch.column("step"))))
            yield decimal_array_to_unscaled(steps)

    def step_multiplier(self, requested: int | None) -> int:
        """The user's multiplier (checked exact on every step) or the smallest exact power of ten."""
        if requested is None:
            return step_multiplier_for(self.series_steps())
        if requested < 1:
            raise InvalidOptionError(f"--step-multiplier {requested} must be a positive integer", "pass 1, 10, 1000, ...")
        for chunk in self.series_steps():
            integer_steps(chunk, requested)
        return requested


SERIES_TYPE_NAMES = frozenset(t.value for t in SERIES_TYPES)


def open_exported_run(data_root: Path, files_root: Path, project_id: str, run_id: str) -> ExportedRun:
    """The exported run with exactly this project and run id (manifest, or derived from peer parts); OutputPathError when absent."""
    from neptune_exporter.storage.manifest import manifest_path, read_manifest
    from neptune_exporter.storage.parquet import StoredRun, derive_manifest, project_dir, run_part_paths

    data_root = Path(data_root)
    manifest = read_manifest(manifest_path(data_root, project_id, run_id))
    parts = [data_root / part.path for part in manifest.parts] if manifest else run_part_paths(data_root, project_id, run_id)
    if manifest is None and parts:
        manifest = derive_manifest(parts, data_root)
    if manifest is None:
        raise OutputPathError(
            f"run {run_id!r} of project {project_id!r} is not in the export under {data_root}",
            "check --data-path and the project/run ids, or export the run first",
        )
    stored = StoredRun(project_id, run_id, project_dir(data_root, project_id), parts, manifest)
    return ExportedRun.from_stored(stored, data_root, files_root)

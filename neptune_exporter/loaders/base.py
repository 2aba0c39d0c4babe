"""The verbs every target implements, target capabilities as data, and the exact step and key mappings they share."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from neptune_exporter.errors import CorruptPartError, StepOutOfRangeError
from neptune_exporter.model import (  # noqa: F401 - step scaling re-exported for the loaders
    KIND_OF_TYPE,
    STEP_SCALE,
    AttributeKind,
    format_step,
    integer_steps,
    step_multiplier_for,
)
from neptune_exporter.storage.exported_run import (  # noqa: F401 - re-exported: loaders read runs through these
    ExportedRun,
    open_exported_run,
    rows_with_points,
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

# ----------------------------------------------------------------------------- steps: model.py (step_multiplier_for, integer_steps)


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
        return self.claim(key, self.target_key(key))

    def target_key(self, key: str) -> str:
        """The key the target stores `key` under (before collisions with other originals)."""
        return map_key(key, self.capabilities)

    def claim(self, key: str, mapped: str) -> str:
        """Register `mapped` for `key`; when another original already holds it, a salted hash of `key` until free."""
        salt = ""
        while self._taken.setdefault(mapped, key) != key:
            salt += "\x00"
            mapped = self.target_key(key + salt)
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

    def failed_for_series(self, left_out: dict[str, StepOutOfRangeError]) -> LoadResult:
        """A run loaded (or found loaded) but for series its target cannot hold: failed for exactly those series,
        named with their steps and the fix; the run's other attributes are in the target."""
        if not left_out or self.status == "failed":
            return self
        paths = sorted(left_out)
        what = "this series is" if len(paths) == 1 else f"these {len(paths)} series are"
        error = StepOutOfRangeError(
            "; ".join(left_out[path].message for path in paths) + f"; only {what} not loaded, the run's other "
            "attributes are",
            left_out[paths[0]].remedy,
            run=self.run_id,
            attribute=", ".join(paths),
        )
        self.status, self.error = "failed", error.to_record()
        return self


class Loader(Protocol):
    """A destination: same verbs for MLflow and W&B (validation is separate: neptune_exporter/validation/)."""

    capabilities: TargetCapabilities

    def check_target(self) -> None:
        """Fail fast (TerminalError with remedy) when the target is unreachable or unwritable."""

    def load_run(self, data_root, files_root, project_id: str, run_id: str) -> LoadResult:
        """Load one exported run idempotently (skip complete, redo partial, reload changed)."""


# ----------------------------------------------------------------------------- exported runs (shared by loaders)

# The single-value ("parameters") types, as a value set for `pc.is_in` over the attribute_type column.
SINGLE_VALUE_TYPES = pa.array(
    sorted(t.value for t, kind in KIND_OF_TYPE.items() if kind is AttributeKind.PARAMETERS), type=pa.string()
)


def single_values(rows: pa.RecordBatch) -> Iterator[tuple[str, str, Any]]:
    """(attribute path, type, Python value) of rows of single-value types, each read from its type's column; rows
    with no value (the peer tool writes them) are left out."""
    from neptune_exporter.rows import value_column

    if not rows.num_rows:
        return
    paths, types = rows.column("attribute_path").to_pylist(), rows.column("attribute_type").to_pylist()
    columns = {name: rows.column(name) for name in {value_column(t) for t in set(types)}}
    for i, (path, attribute_type) in enumerate(zip(paths, types, strict=True)):
        value = columns[value_column(attribute_type)][i].as_py()
        if value is not None:
            yield path, attribute_type, value


def run_key(project_id: str, run_id: str) -> str:
    """Quote-free lookup key of a run in a target (a tag value safe in any filter language)."""
    return hashlib.blake2b(f"{project_id}\x00{run_id}".encode(), digest_size=16).hexdigest()


def open_loadable(
    data_root, files_root, project_id: str, run_id: str, requested_multiplier: int | None
) -> tuple[ExportedRun, int, dict[str, StepOutOfRangeError]]:
    """The exported run to load (CorruptPartError when its export failed), its step multiplier and the series a
    --step-multiplier puts beyond int64 steps (each fails alone: `LoadResult.failed_for_series`)."""
    exported = open_exported_run(Path(data_root), Path(files_root), project_id, run_id)
    if not exported.complete:
        raise CorruptPartError(f"the export of run {run_id!r} failed", "export the run again", run=run_id)
    multiplier = exported.step_multiplier(requested_multiplier)
    left_out = exported.series_beyond_range(multiplier) if requested_multiplier else {}
    return exported, multiplier, left_out

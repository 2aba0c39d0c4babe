"""Identifiers, attribute kinds, the Parquet schema and on-disk naming shared by every layer."""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import overload

import numpy as np
import pyarrow as pa

from neptune_exporter.errors import CorruptPartError, InvalidOptionError, StepOutOfRangeError

ProjectId = str  # "workspace/project"
RunId = str  # custom run id (3.x) or sys/id, the id a run is exported under
AttributePath = str  # "metrics/loss"

STEP_SCALE = 6
STEP_TYPE = pa.decimal128(18, STEP_SCALE)
TIMESTAMP_TYPE = pa.timestamp("ms", tz="UTC")
HISTOGRAM_TYPE = pa.struct(
    [
        pa.field("type", pa.string()),
        pa.field("edges", pa.list_(pa.float64())),
        pa.field("values", pa.list_(pa.float64())),
    ]
)
FILE_TYPE = pa.struct([pa.field("path", pa.string())])

PARQUET_SCHEMA = pa.schema(
    [
        pa.field("project_id", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("attribute_path", pa.string()),
        pa.field("attribute_type", pa.string()),
        pa.field("step", STEP_TYPE),
        pa.field("timestamp", TIMESTAMP_TYPE),
        pa.field("int_value", pa.int64()),
        pa.field("float_value", pa.float64()),
        pa.field("string_value", pa.string()),
        pa.field("bool_value", pa.bool_()),
        pa.field("datetime_value", TIMESTAMP_TYPE),
        pa.field("string_set_value", pa.list_(pa.string())),
        pa.field("file_value", FILE_TYPE),
        pa.field("histogram_value", HISTOGRAM_TYPE),
    ]
)


class AttributeType(StrEnum):
    """Values of the `attribute_type` column (the peer tool's vocabulary)."""

    FLOAT = "float"
    INT = "int"
    STRING = "string"
    BOOL = "bool"
    DATETIME = "datetime"
    STRING_SET = "string_set"
    FLOAT_SERIES = "float_series"
    STRING_SERIES = "string_series"
    HISTOGRAM_SERIES = "histogram_series"
    FILE = "file"
    FILE_SERIES = "file_series"
    FILE_SET = "file_set"  # Neptune 2.x only
    ARTIFACT = "artifact"  # Neptune 2.x only


class AttributeKind(StrEnum):
    """Coarse groups users select with `--include/--exclude`."""

    PARAMETERS = "parameters"
    METRICS = "metrics"
    SERIES = "series"
    FILES = "files"


KIND_OF_TYPE: dict[AttributeType, AttributeKind] = {
    AttributeType.FLOAT: AttributeKind.PARAMETERS,
    AttributeType.INT: AttributeKind.PARAMETERS,
    AttributeType.STRING: AttributeKind.PARAMETERS,
    AttributeType.BOOL: AttributeKind.PARAMETERS,
    AttributeType.DATETIME: AttributeKind.PARAMETERS,
    AttributeType.STRING_SET: AttributeKind.PARAMETERS,
    AttributeType.FLOAT_SERIES: AttributeKind.METRICS,
    AttributeType.STRING_SERIES: AttributeKind.SERIES,
    AttributeType.HISTOGRAM_SERIES: AttributeKind.SERIES,
    AttributeType.FILE: AttributeKind.FILES,
    AttributeType.FILE_SERIES: AttributeKind.FILES,
    AttributeType.FILE_SET: AttributeKind.FILES,
    AttributeType.ARTIFACT: AttributeKind.FILES,
}

SERIES_TYPES = frozenset(
    {
        AttributeType.FLOAT_SERIES,
        AttributeType.STRING_SERIES,
        AttributeType.HISTOGRAM_SERIES,
        AttributeType.FILE_SERIES,
    }
)


def parse_kinds(names: Iterable[str]) -> frozenset[AttributeKind]:
    """Turn CLI words like "parameters,metrics" into kinds; raises ValueError naming a bad word."""
    kinds = set()
    for chunk in names:
        for word in chunk.split(","):
            word = word.strip().lower()
            if not word:
                continue
            try:
                kinds.add(AttributeKind(word))
            except ValueError:
                allowed = ", ".join(k.value for k in AttributeKind)
                raise ValueError(f"unknown attribute kind {word!r}; use one of: {allowed}") from None
    return frozenset(kinds)


def sanitize_name(identifier: str) -> str:
    """On-disk name of a project or run: sanitized id + '-' + blake2b(id, 8 bytes) (peer-tool layout)."""
    safe = "".join(c if (c.isalnum() or c in "_-") else "_" for c in identifier)
    digest = hashlib.blake2b(identifier.encode("utf-8"), digest_size=8).hexdigest()
    return f"{safe}-{digest}"


def part_file_name(run_id: RunId, part_index: int) -> str:
    """`<run-file>_part_<n>.parquet` for a run's n-th part."""
    return f"{sanitize_name(run_id)}_part_{part_index}.parquet"


PROJECT_RELATIVE_FILES_FORMAT = (
    2  # manifest format_version from which file_value.path is relative to <files>/<project-dir>/
)


def project_files_dir(files_root: Path | str, project_id: ProjectId) -> Path:
    """`<files>/<project-dir>`: the folder every `file_value.path` of the project is relative to (the peer tool's rule;
    model-registry entities too, their paths start with the scope folder)."""
    return Path(files_root) / sanitize_name(project_id)


def file_value_path(files_root: Path | str, project_id: ProjectId, absolute: Path | str) -> str:
    """The `file_value.path` (posix, relative) of a file placed under the project's files folder; ValueError outside it."""
    base = project_files_dir(files_root, project_id)
    try:
        return Path(absolute).relative_to(base).as_posix()
    except ValueError:
        raise ValueError(f"{absolute} is not under the project's files folder {base}") from None


def resolve_file_value(files_root: Path | str, project_id: ProjectId, value: str | dict | None) -> Path | None:
    """Local path of a `file_value` (the struct or its path text): `<files>/<project-dir>/<path>`; None when empty.

    Raises CorruptPartError when the stored path is absolute or climbs out of the project's files folder."""
    relative = value.get("path") if isinstance(value, dict) else value
    if not relative:
        return None
    base = Path(os.path.normpath(project_files_dir(files_root, project_id)))
    candidate = Path(os.path.normpath(base / relative))
    if PurePosixPath(relative).is_absolute() or Path(relative).is_absolute() or not candidate.is_relative_to(base):
        raise CorruptPartError(
            f"file path {relative!r} of project {project_id!r} points outside its files folder {base}",
            "file_value.path must be relative to <files>/<project-dir>/; re-export the run instead of editing paths",
        )
    return candidate


MODELS_SCOPE = "models"  # 2.x model-registry models (run_id = the model's sys id, "PROJ-MOD")
MODEL_VERSIONS_SCOPE = "model_versions"  # their versions (run_id = "PROJ-MOD-1")
ENTITY_SCOPES = (MODELS_SCOPE, MODEL_VERSIONS_SCOPE)  # the peer tool's `<project-dir>/<scope>/` subfolders


def check_scope(scope: str | None) -> str | None:
    """A run's entity scope (None for runs); ValueError for anything but the known subfolder names."""
    if scope is not None and scope not in ENTITY_SCOPES:
        raise ValueError(f"unknown entity scope {scope!r}; use one of {ENTITY_SCOPES} or None for runs")
    return scope


@dataclass(frozen=True)
class RunRef:
    """A run found by discovery: enough to plan and export it."""

    project_id: ProjectId
    run_id: RunId  # custom run id when set (3.x), else sys/id
    sys_id: str  # "PROJ-123"
    experiment_name: str | None = None  # 3.x `sys/name` of experiments; None for 2.x
    name: str | None = None  # 2.x `sys/name` (a run's display name)
    custom_run_id: str | None = None
    creation_time: datetime | None = None
    modification_time: datetime | None = None
    archived: bool = False
    source_kind: str = "neptune3"  # "neptune3" | "neptune2"
    scope: str | None = None  # None for runs; an ENTITY_SCOPES folder for 2.x model-registry entities

    def key(self) -> str:
        """Stable key for caching and logs."""
        return f"{self.project_id}/{self.run_id}"


def run_ref_to_json(run: RunRef) -> dict:
    """A RunRef as JSON types (times as UTC ISO text with milliseconds)."""
    return {
        "project_id": run.project_id,
        "run_id": run.run_id,
        "sys_id": run.sys_id,
        "experiment_name": run.experiment_name,
        "name": run.name,
        "custom_run_id": run.custom_run_id,
        "creation_time": iso_utc_ms(run.creation_time),
        "modification_time": iso_utc_ms(run.modification_time),
        "archived": run.archived,
        "source_kind": run.source_kind,
        "scope": run.scope,
    }


def run_ref_from_json(data: dict) -> RunRef:
    """The RunRef of `run_ref_to_json` output."""
    return RunRef(
        project_id=data["project_id"],
        run_id=data["run_id"],
        sys_id=data.get("sys_id") or data["run_id"],
        experiment_name=data.get("experiment_name"),
        name=data.get("name"),
        custom_run_id=data.get("custom_run_id"),
        creation_time=parse_iso(data.get("creation_time")),
        modification_time=parse_iso(data.get("modification_time")),
        archived=bool(data.get("archived", False)),
        source_kind=data.get("source_kind", "neptune3"),
        scope=data.get("scope"),
    )


@dataclass(frozen=True)
class FileRef:
    """A file a run points to in the source: where to fetch it and what is known of it."""

    source_path: str
    size: int | None = None
    mime_type: str | None = None
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- times


def as_utc(value: datetime) -> datetime:
    """The one UTC rule: naive datetimes are UTC, aware ones are converted to UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@overload
def iso_utc_ms(value: datetime) -> str: ...
@overload
def iso_utc_ms(value: None) -> None: ...
@overload
def iso_utc_ms(value: datetime | None) -> str | None: ...
def iso_utc_ms(value: datetime | None) -> str | None:
    """UTC ISO text with milliseconds (how manifests store times, so equal times compare equal); None stays None."""
    return None if value is None else as_utc(value).isoformat(timespec="milliseconds")


def parse_iso(text: str | None) -> datetime | None:
    """The datetime of ISO text ('' and None give None)."""
    return datetime.fromisoformat(text) if text else None


def utc_now_iso() -> str:
    """Now, as UTC ISO text with milliseconds."""
    return iso_utc_ms(datetime.now(UTC))


# --------------------------------------------------------------------------- steps


STEP_LIMIT = 10**12  # |step| < 10**12: decimal128(18,6) holds 12 digits before the point and 6 after
STEP_RANGE_TEXT = "-999999999999.999999 to 999999999999.999999 (the step column is decimal128(18,6))"


def step_out_of_range(step: float, attribute: str | None) -> StepOutOfRangeError:
    """The error of a step the step column cannot hold: its value, the range, and how to export the rest."""
    name = attribute or "a series"
    leave_out = (
        f"--attributes '^(?!{re.escape(attribute)}$)'" if attribute else "--attributes with a regex leaving it out"
    )
    return StepOutOfRangeError(
        f"step {step!r} of {name} is outside the steps an export can hold exactly, {STEP_RANGE_TEXT}; "
        "the attribute is not exported rather than written with a wrong step (the run's others are; the run is failed)",
        f"leave this attribute out to have the run complete and loadable ({leave_out}); "
        "its points can only be read from Neptune itself",
        attribute=attribute,
    )


def steps_to_decimal_array(steps: np.ndarray | Iterable[float], attribute: str | None = None) -> pa.Array:
    """Float steps → decimal128(18,6): each float's exact decimal expansion rounded half-even to 6 places (Arrow's
    cast; never a float multiplication). StepOutOfRangeError for a step beyond ±10**12 (or not a number)."""
    arr = np.asarray(steps, dtype=np.float64)
    inside = np.abs(arr) < STEP_LIMIT  # NaN and ±inf are outside too
    if not inside.all():
        raise step_out_of_range(float(arr[~inside][0]), attribute)
    return pa.array(arr, type=pa.float64()).cast(STEP_TYPE)


def step_to_unscaled(step: float) -> int:
    """One float step as exact int64 millionths (the rule of `steps_to_decimal_array`)."""
    return int(decimal_array_to_unscaled(steps_to_decimal_array([step]))[0])


def unscaled_to_decimal_array(unscaled: np.ndarray) -> pa.Array:
    """int64 values in millionths → decimal128(18,6) (two's complement, little endian, 16 bytes each)."""
    low = np.ascontiguousarray(unscaled, dtype=np.int64)
    words = np.empty((low.size, 2), dtype=np.int64)
    words[:, 0] = low
    words[:, 1] = np.where(low < 0, -1, 0)
    buffer = pa.py_buffer(words.tobytes())
    return pa.Array.from_buffers(STEP_TYPE, low.size, [None, buffer])


def decimal_array_to_unscaled(steps: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """decimal128(18,6) → int64 millionths (nulls become 0; check validity separately)."""
    if isinstance(steps, pa.ChunkedArray):
        if steps.num_chunks == 0:
            return np.empty(0, dtype=np.int64)
        return np.concatenate([decimal_array_to_unscaled(c) for c in steps.chunks])
    if steps.type != STEP_TYPE:
        steps = steps.cast(STEP_TYPE)
    buffer = steps.buffers()[1]
    words = np.frombuffer(buffer, dtype=np.int64, count=2 * (steps.offset + len(steps)))
    low = words[0::2][steps.offset : steps.offset + len(steps)].copy()
    if steps.null_count:
        low[np.asarray(steps.is_null())] = 0
    return low


def decimal_array_to_float(steps: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """decimal128(18,6) → float64 steps (NaN where null)."""
    unscaled = decimal_array_to_unscaled(steps).astype(np.float64) / 10**STEP_SCALE
    chunks = steps.chunks if isinstance(steps, pa.ChunkedArray) else [steps]
    if any(c.null_count for c in chunks):
        mask = np.concatenate([np.asarray(c.is_null()) for c in chunks]) if chunks else np.zeros(0, bool)
        unscaled[mask] = np.nan
    return unscaled


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


TARGET_STEP_MAX = 2**63 - 1  # MLflow and W&B store steps as int64
TARGET_STEP_RANGE_TEXT = f"{-(2**63)} to {TARGET_STEP_MAX} (int64, what MLflow and W&B store)"


def format_step(unscaled: int) -> str:
    """Exact decimal text of a step held as int64 millionths: 3 → "0.000003", 1_500_000 → "1.5"."""
    sign = "-" if unscaled < 0 else ""
    whole, fraction = divmod(abs(int(unscaled)), 10**STEP_SCALE)
    text = str(fraction).rjust(STEP_SCALE, "0").rstrip("0")
    return f"{sign}{whole}.{text}" if text else f"{sign}{whole}"


def integer_steps(unscaled_steps: np.ndarray, multiplier: int, attribute: str | None = None) -> np.ndarray:
    """Exact integer steps = step × multiplier, in integer arithmetic that cannot overflow: the millionths are
    divided by 10**6 / gcd(multiplier, 10**6) first (InvalidOptionError when a step would not become whole), then
    multiplied by what is left of the multiplier (StepOutOfRangeError when the product is beyond int64)."""
    unscaled = np.asarray(unscaled_steps, dtype=np.int64)
    common = math.gcd(multiplier, 10**STEP_SCALE)
    divisor, factor = 10**STEP_SCALE // common, multiplier // common
    whole, remainder = np.divmod(unscaled, divisor)
    where = f" of {attribute}" if attribute else ""
    if np.any(remainder):
        bad = format_step(int(unscaled[remainder != 0][0]))
        raise InvalidOptionError(
            f"step {bad}{where} times the step multiplier {multiplier} is not a whole number",
            "drop --step-multiplier to let the loader pick the smallest exact power of ten, or pass a larger one",
            attribute=attribute,
        )
    beyond = np.abs(whole) > TARGET_STEP_MAX // factor  # |whole| <= 10**12: np.abs cannot overflow
    if np.any(beyond):
        bad_unscaled = int(unscaled[beyond][0])
        raise StepOutOfRangeError(
            f"step {format_step(bad_unscaled)}{where} times the step multiplier {multiplier} is "
            f"{bad_unscaled * multiplier // 10**STEP_SCALE}, beyond the integer steps a target holds, "
            f"{TARGET_STEP_RANGE_TEXT}",
            "pass a smaller --step-multiplier, or drop it: the automatic one (at most 10**6) always fits",
            attribute=attribute,
        )
    return whole * factor

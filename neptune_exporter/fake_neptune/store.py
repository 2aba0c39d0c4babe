"""In-memory data model of the fake Neptune server: workspace → projects → runs → attributes; lazy series."""

from __future__ import annotations

import threading
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

# Attribute types in the fake's own vocabulary (a superset). Each API maps them to its client's names:
#   3.x (neptune-query): float int string bool datetime stringSet floatSeries stringSeries
#                        histogramSeries fileRef fileRefSeries
#   2.x (neptune):       float int string bool datetime stringSet floatSeries stringSeries
#                        file imageSeries fileSet experimentState gitRef notebookRef artifact
FLOAT, INT, STRING, BOOL, DATETIME, STRING_SET = "float", "int", "string", "bool", "datetime", "string_set"
FLOAT_SERIES, STRING_SERIES, HISTOGRAM_SERIES = "float_series", "string_series", "histogram_series"
FILE, FILE_SERIES, FILE_SET = "file", "file_series", "file_set"
GIT_REF, NOTEBOOK_REF, ARTIFACT = "git_ref", "notebook_ref", "artifact"  # 2.x only
ATOM_TYPES = (FLOAT, INT, STRING, BOOL, DATETIME, STRING_SET, FILE, FILE_SET)
LEGACY_ONLY_TYPES = (GIT_REF, NOTEBOOK_REF, ARTIFACT)
SERIES_TYPES = (FLOAT_SERIES, STRING_SERIES, HISTOGRAM_SERIES, FILE_SERIES)
ALL_TYPES = ATOM_TYPES + SERIES_TYPES + LEGACY_ONLY_TYPES  # legacy ones: dict values, see fake_neptune/README.md

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
# what a 3.x server reports about an archived run: sys/archived only, sys/trashed only, or both (same value)
ARCHIVED_PATH_VARIANTS = ("archived", "trashed", "both")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class StoredFile:
    """Bytes of a file (explicit or produced lazily from a seed) and its metadata."""

    size: int
    mime_type: str = "application/octet-stream"
    content: bytes | None = None  # explicit bytes; None → generated from `seed`
    seed: int = 0
    name: str = "file.bin"  # original file name (extension matters to the clients)

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes [offset, offset+length) of the file, generating them deterministically when lazy."""
        end = self.size if length is None else min(self.size, offset + length)
        if self.content is not None:
            return self.content[offset:end]
        return _lazy_bytes(self.seed, offset, end)

    def chunks(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        for start in range(0, self.size, chunk_size):
            yield self.read(start, chunk_size)


def _lazy_bytes(seed: int, start: int, end: int) -> bytes:
    """Deterministic pseudo-random bytes; byte i depends only on (seed, i) so any range is reproducible."""
    if end <= start:
        return b""
    block = 1 << 16
    first, last = start // block, (end - 1) // block
    parts = [np.random.default_rng([seed, b]).bytes(block) for b in range(first, last + 1)]
    data = b"".join(parts)
    return data[start - first * block : end - first * block]


class Series:
    """A series: sorted float steps, values, ms timestamps. Read by step windows, never materialised whole."""

    kind: str = FLOAT_SERIES

    def __len__(self) -> int:
        raise NotImplementedError

    def window(
        self, after_step: float | None, step_from: float | None, step_to: float | None, limit: int, tail: bool = False
    ) -> tuple[np.ndarray, list | np.ndarray, np.ndarray]:
        """Up to `limit` points with step > after_step and within [step_from, step_to] (tail: the last ones)."""
        raise NotImplementedError

    def last(self) -> tuple[float, Any, int] | None:
        """(step, value, timestamp_ms) of the last point, or None when empty."""
        raise NotImplementedError


@dataclass
class ExplicitSeries(Series):
    """Points given explicitly (datasets, appends). Values: floats, strings, histogram dicts or file keys."""

    kind: str
    steps: np.ndarray = field(default_factory=lambda: np.empty(0))
    values: list | np.ndarray = field(default_factory=list)
    timestamps_ms: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def __post_init__(self) -> None:
        self.steps = np.asarray(self.steps, dtype=np.float64)
        self.timestamps_ms = np.asarray(self.timestamps_ms, dtype=np.int64)
        if self.kind == FLOAT_SERIES:
            self.values = np.asarray(self.values, dtype=np.float64)
        else:
            self.values = list(self.values)

    def __len__(self) -> int:
        return int(self.steps.size)

    def _bounds(self, after_step, step_from, step_to) -> tuple[int, int]:
        lo, hi = 0, self.steps.size
        if after_step is not None:
            lo = max(lo, int(np.searchsorted(self.steps, after_step, side="right")))
        if step_from is not None:
            lo = max(lo, int(np.searchsorted(self.steps, step_from, side="left")))
        if step_to is not None:
            hi = min(hi, int(np.searchsorted(self.steps, step_to, side="right")))
        return lo, max(lo, hi)

    def window(self, after_step, step_from, step_to, limit, tail=False):
        lo, hi = self._bounds(after_step, step_from, step_to)
        if tail:
            lo = max(lo, hi - limit)
        else:
            hi = min(hi, lo + limit)
        return self.steps[lo:hi], self.values[lo:hi], self.timestamps_ms[lo:hi]

    def last(self):
        if not len(self):
            return None
        return float(self.steps[-1]), self.values[-1], int(self.timestamps_ms[-1])

    def append(self, steps, values, timestamps_ms) -> None:
        """Append points with steps greater than the last one."""
        steps = np.asarray(steps, dtype=np.float64)
        if steps.size and self.steps.size and steps[0] <= self.steps[-1]:
            raise ValueError("appended steps must be greater than the last step")
        self.steps = np.concatenate([self.steps, steps])
        self.timestamps_ms = np.concatenate([self.timestamps_ms, np.asarray(timestamps_ms, dtype=np.int64)])
        if self.kind == FLOAT_SERIES:
            self.values = np.concatenate([self.values, np.asarray(values, dtype=np.float64)])
        else:
            self.values = list(self.values) + list(values)


@dataclass
class GeneratedFloatSeries(Series):
    """A float series of `count` points computed from (seed, index): step i = start + i*step_size.

    Costs no memory however long; any window is computed on demand.
    """

    count: int
    seed: int = 0
    start_step: float = 0.0
    step_size: float = 1.0
    start_ms: int = int(EPOCH.timestamp() * 1000)
    ms_per_step: int = 1000
    kind: str = FLOAT_SERIES

    def __len__(self) -> int:
        return self.count

    def steps_of(self, idx: np.ndarray) -> np.ndarray:
        return self.start_step + idx.astype(np.float64) * self.step_size

    def values_of(self, idx: np.ndarray) -> np.ndarray:
        # cheap, deterministic, non-trivial: decaying curve with seeded wobble
        x = idx.astype(np.float64)
        phase = (self.seed % 997) / 997.0
        return 1.0 / (1.0 + 0.001 * x) + 0.01 * np.sin(x * 0.37 + phase * 6.283)

    def timestamps_of(self, idx: np.ndarray) -> np.ndarray:
        return self.start_ms + idx.astype(np.int64) * self.ms_per_step

    def _index(self, step: float, side: str) -> int:
        # first index whose step is > step (side="right") or >= step (side="left")
        raw = (step - self.start_step) / self.step_size
        i = int(np.floor(raw)) + 1 if side == "right" else int(np.ceil(raw))
        # correct float rounding at the boundary
        while i > 0 and (
            (self.steps_of(np.array([i - 1]))[0] > step)
            if side == "right"
            else (self.steps_of(np.array([i - 1]))[0] >= step)
        ):
            i -= 1
        while i < self.count and (
            (self.steps_of(np.array([i]))[0] <= step) if side == "right" else (self.steps_of(np.array([i]))[0] < step)
        ):
            i += 1
        return min(max(i, 0), self.count)

    def window(self, after_step, step_from, step_to, limit, tail=False):
        lo, hi = 0, self.count
        if after_step is not None:
            lo = max(lo, self._index(after_step, "right"))
        if step_from is not None:
            lo = max(lo, self._index(step_from, "left"))
        if step_to is not None:
            hi = min(hi, self._index(step_to, "right"))
        hi = max(lo, hi)
        if tail:
            lo = max(lo, hi - limit)
        else:
            hi = min(hi, lo + limit)
        idx = np.arange(lo, hi, dtype=np.int64)
        return self.steps_of(idx), self.values_of(idx), self.timestamps_of(idx)

    def last(self):
        if not self.count:
            return None
        idx = np.array([self.count - 1])
        return float(self.steps_of(idx)[0]), float(self.values_of(idx)[0]), int(self.timestamps_of(idx)[0])


@dataclass
class Attribute:
    """One attribute of a run. `value` for atoms; `series` for series types.

    Atom values: float/int/str/bool, datetime (UTC), set[str] for string_set,
    str (a key into Project.files) for file, list[str] of file keys (relative names → keys) for file_set
    as dict {relative_path: file_key}.
    Series values: floats, strings, histogram dicts {"type","edges","values"}, file keys.
    """

    path: str
    type: str
    value: Any = None
    series: Series | None = None

    def points(self) -> Series:
        """The series of a series attribute (ValueError for a single-value attribute)."""
        if self.series is None:
            raise ValueError(f"attribute {self.path!r} ({self.type}) has no series")
        return self.series


@dataclass
class Run:
    """A run (or an experiment head) with its attributes. `sys/*` live in `attributes` too."""

    sys_id: str  # "PROJ-1"
    uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    attributes: dict[str, Attribute] = field(default_factory=dict)
    experiment_head: bool = False  # 3.x: the run currently holding its experiment name
    fork_parent: str | None = None  # sys_id of the parent run (3.x)
    fork_step: float | None = None
    project_uuid: str = ""  # sys/diagnostics/project_uuid (3.x)
    family: str | None = None  # run id of the root of its fork tree: sys/family (3.x); None = its own
    family_created: datetime | None = None  # creation time of that root (sys/relative_creation_time_ms)
    archived_paths: str = "both"  # which archive flag(s) 3.x reports: ARCHIVED_PATH_VARIANTS

    def get(self, path: str) -> Any:
        attr = self.attributes.get(path)
        return None if attr is None else attr.value

    @property
    def custom_run_id(self) -> str | None:
        return self.get("sys/custom_run_id")

    @property
    def trashed(self) -> bool:
        return bool(self.get("sys/trashed"))


@dataclass
class ModelVersion(Run):
    """A 2.x model version: a container like a run, sys id `PROJ-MOD-1`, with `sys/model_id` and `sys/stage`."""

    @property
    def stage(self) -> str:
        """none / staging / production / archived (the `sys/stage` attribute)."""
        return self.get("sys/stage") or "none"

    @property
    def model_id(self) -> str | None:
        return self.get("sys/model_id")


@dataclass
class Model(Run):
    """A 2.x model-registry model: a container like a run, sys id `PROJ-MOD`, and its versions in creation order."""

    versions: list[ModelVersion] = field(default_factory=list)


@dataclass
class Project:
    """A project: its runs (in creation order) and its file blobs keyed by storage path."""

    workspace: str
    name: str
    key: str  # sys id prefix, "PROJ"
    uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    runs: list[Run] = field(default_factory=list)
    files: dict[str, StoredFile] = field(default_factory=dict)
    models: list[Model] = field(default_factory=list)  # 2.x model registry (invisible to 3.x)
    archived_paths: str = "both"  # given to each run added: ARCHIVED_PATH_VARIANTS
    # datasets.py's index of the runs (sys ids, experiment heads): a cache it owns and rebuilds when stale
    run_index: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def identifier(self) -> str:
        return f"{self.workspace}/{self.name}"

    def model_versions(self) -> list[ModelVersion]:
        """Every model's versions, model by model."""
        return [version for model in list(self.models) for version in list(model.versions)]

    def registry_container(self, sys_id_or_uuid: str) -> Model | ModelVersion | None:
        """The model or model version with this sys id or uuid (a linear scan: registries are small)."""
        containers: list[Model | ModelVersion] = [*self.models, *self.model_versions()]
        for container in containers:
            if sys_id_or_uuid in (container.sys_id, container.uuid):
                return container
        return None

    def run(self, sys_id_or_custom: str) -> Run | None:
        """The run with this sys id, custom run id or uuid (indexed; the index follows appended runs)."""
        found = self._run_index().get(sys_id_or_custom)
        if found is not None and sys_id_or_custom in (found.sys_id, found.custom_run_id, found.uuid):
            return found
        for r in self.runs:  # an id changed in place since the index was built
            if r.sys_id == sys_id_or_custom or r.custom_run_id == sys_id_or_custom or r.uuid == sys_id_or_custom:
                self._index: dict[str, Run] | None = None
                return r
        return None

    def _run_index(self) -> dict[str, Run]:
        index = getattr(self, "_index", None)
        if index is None or getattr(self, "_indexed_count", -1) != len(self.runs):
            index = {}
            for r in reversed(self.runs):  # first run wins on a shared id
                for key in (r.uuid, r.custom_run_id, r.sys_id):
                    if key:
                        index[key] = r
            self._index, self._indexed_count = index, len(self.runs)
        return index


@dataclass
class Workspace:
    """Everything the fake server serves. All mutation goes through methods holding `lock`."""

    name: str = "workspace"
    projects: dict[str, Project] = field(default_factory=dict)  # by "ws/proj"
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def project(self, identifier: str) -> Project | None:
        return self.projects.get(identifier)


def touch(run: Run, when: datetime | None = None) -> None:
    """Bump sys/modification_time (strictly increasing)."""
    now = when or utcnow()
    previous = run.get("sys/modification_time")
    if previous is not None and now <= previous:
        now = previous + timedelta(milliseconds=1)
    run.attributes["sys/modification_time"] = Attribute("sys/modification_time", DATETIME, now)

"""Datasets of the fake Neptune server: run building and live mutation, JSON format, generator, awkward workspace."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from neptune_exporter.errors import TerminalError
from neptune_exporter.fake_neptune import store
from neptune_exporter.fake_neptune.store import Attribute, ExplicitSeries, Project, Run, Workspace

OWNER = "tester"
FORK_PARENT_PATH, FORK_STEP_PATH = "sys/forking/parent", "sys/forking/step"


# ---------------------------------------------------------------------------- building runs
def make_attribute(path: str, type_: str, value: Any) -> Attribute:
    """An Attribute from a plain value: atoms as is, series as Series or [(step, value, ts_ms), ...]."""
    if type_ not in store.ALL_TYPES:
        raise ValueError(f"attribute {path!r}: unknown type {type_!r}; use one of {store.ALL_TYPES}")
    if type_ in store.SERIES_TYPES:
        series = value if isinstance(value, store.Series) else _series_from_points(type_, value or [])
        return Attribute(path, type_, series=series)
    if type_ == store.STRING_SET:
        value = set(value)
    if type_ in store.LEGACY_ONLY_TYPES:
        _check_legacy_value(path, type_, value)
    return Attribute(path, type_, value)


# value shapes of the 2.x-only types (the properties the 2.x API serves; see README.md)
_LEGACY_KEYS = {
    store.GIT_REF: {"commit", "currentBranch", "remotes", "repositoryDirty"},
    store.NOTEBOOK_REF: {
        "notebookId",
        "notebookName",
        "notebookDeleted",
        "checkpointId",
        "checkpointName",
        "checkpointCreated",
        "checkpointDeleted",
    },
    store.ARTIFACT: {"hash", "files"},
}
_ARTIFACT_FILE_KEYS = {"filePath", "fileHash", "type", "size", "metadata"}


def _check_legacy_value(path: str, type_: str, value: Any) -> None:
    """git_ref / notebook_ref / artifact values are dicts of the properties the 2.x API serves."""
    if not isinstance(value, dict):
        raise ValueError(f"attribute {path!r}: a {type_} value is an object, got {type(value).__name__}")
    unknown = sorted(set(value) - _LEGACY_KEYS[type_])
    if unknown:
        raise ValueError(f"attribute {path!r}: unknown {type_} field(s) {unknown}; use {sorted(_LEGACY_KEYS[type_])}")
    if type_ == store.ARTIFACT:
        _check_artifact(path, value)


def _check_artifact(path: str, value: dict) -> None:
    if not isinstance(value.get("hash"), str) or not isinstance(value.get("files", []), list):
        raise ValueError(f'attribute {path!r}: an artifact needs "hash" (text) and "files" (a list)')
    for entry in value.get("files", []):
        keys = set(entry) if isinstance(entry, dict) else set()
        if not {"filePath", "fileHash"} <= keys or keys - _ARTIFACT_FILE_KEYS:
            raise ValueError(
                f"attribute {path!r}: artifact file {entry!r} needs filePath and fileHash "
                f"and may add {sorted(_ARTIFACT_FILE_KEYS - {'filePath', 'fileHash'})}"
            )


def _series_from_points(type_: str, points: Iterable) -> ExplicitSeries:
    points = list(points)
    steps = [float(p[0]) for p in points]
    values = [p[1] for p in points]
    timestamps = [int(p[2]) for p in points]
    for before, after in pairwise(steps):
        if after <= before:
            raise ValueError(f"series steps must be strictly increasing, but step {after} follows {before}")
    return ExplicitSeries(type_, np.array(steps, dtype=np.float64), values, np.array(timestamps, dtype=np.int64))


def sys_attributes(
    sys_id: str,
    custom_run_id: str | None,
    experiment: str | None,
    created: datetime,
    tags: Iterable[str] = (),
    trashed: bool = False,
    owner: str = OWNER,
    head: bool = False,
    fork_depth: int = 0,
    fork_parent_run_id: str | None = None,
    fork_step: float | None = None,
) -> dict[str, Attribute]:
    """The sys/* attributes every run carries (sys/state is a 2.x-only string, hidden from 3.x).

    Forked runs also carry `sys/forking/parent` (the parent's run id: its custom run id, else its sys id)
    and `sys/forking/step` (float) like Neptune 3.x; 2.x sees no `sys/forking/*`.
    """
    attrs = [
        Attribute("sys/id", store.STRING, sys_id),
        Attribute("sys/name", store.STRING, experiment or ""),
        Attribute("sys/creation_time", store.DATETIME, created),
        Attribute("sys/modification_time", store.DATETIME, created),
        Attribute("sys/owner", store.STRING, owner),
        Attribute("sys/tags", store.STRING_SET, set(tags)),
        Attribute("sys/trashed", store.BOOL, trashed),
        Attribute("sys/state", store.STRING, "idle"),
        Attribute("sys/forking/depth", store.INT, fork_depth),
    ]
    if fork_parent_run_id is not None:
        attrs.append(Attribute(FORK_PARENT_PATH, store.STRING, fork_parent_run_id))
        if fork_step is not None:
            attrs.append(Attribute(FORK_STEP_PATH, store.FLOAT, float(fork_step)))
    if custom_run_id is not None:
        attrs.append(Attribute("sys/custom_run_id", store.STRING, custom_run_id))
    if experiment is not None:
        attrs.append(Attribute("sys/experiment/name", store.STRING, experiment))
        attrs.append(Attribute("sys/experiment/is_head", store.BOOL, head))
    return {a.path: a for a in attrs}


def _project(ws: Workspace, project_id: str) -> Project:
    project = ws.project(project_id)
    if project is None:
        raise KeyError(f"no project {project_id!r}; known: {sorted(ws.projects)}")
    return project


def _run(ws: Workspace, project_id: str, run_id: str) -> Run:
    run = _project(ws, project_id).run(run_id)
    if run is None:
        raise KeyError(f"no run {run_id!r} in {project_id!r}")
    return run


def add_project(ws: Workspace, name: str, key: str | None = None) -> Project:
    """A new empty project `ws.name/name` with sys-id prefix `key`."""
    project = Project(ws.name, name, key or name.upper().replace("-", "")[:8] or "PROJ")
    with ws.lock:
        ws.projects[project.identifier] = project
    return project


def add_run(
    ws: Workspace,
    project_id: str,
    sys_id: str | None = None,
    custom_run_id: str | None = None,
    experiment: str | None = None,
    attributes: dict | None = None,
    created: datetime | None = None,
    tags: Iterable[str] = (),
    trashed: bool = False,
    fork_parent: str | None = None,
    fork_step: float | None = None,
    owner: str = OWNER,
) -> Run:
    """Add a run; it becomes the head of `experiment` (the previous head stays a plain run). O(1) amortised.

    `attributes`: {path: Attribute | (type, value)}; series values as Series or [(step, value, ts_ms)].
    """
    with ws.lock:
        project = _project(ws, project_id)
        index = _index(project)
        sys_id = sys_id or f"{project.key}-{len(project.runs) + 1}"
        if sys_id in index.ids:
            raise ValueError(f"run {sys_id!r} already exists in {project_id!r}")
        parent = _fork_parent(project, fork_parent)
        depth = (parent.get("sys/forking/depth") or 0) + 1 if parent else 0
        run = Run(
            sys_id,
            fork_parent=parent.sys_id if parent else None,
            fork_step=fork_step,
            experiment_head=experiment is not None,
            project_uuid=project.uuid,
            family=(parent.family or parent.custom_run_id or parent.sys_id) if parent else None,
            family_created=(parent.family_created or parent.get("sys/creation_time")) if parent else None,
            archived_paths=project.archived_paths,
        )
        run.attributes = sys_attributes(
            sys_id,
            custom_run_id,
            experiment,
            created or store.utcnow(),
            tags,
            trashed,
            owner,
            head=experiment is not None,
            fork_depth=depth,
            fork_parent_run_id=(parent.custom_run_id or parent.sys_id) if parent else None,
            fork_step=fork_step,
        )
        for path, spec in (attributes or {}).items():
            run.attributes[path] = spec if isinstance(spec, Attribute) else make_attribute(path, *spec)
        if experiment is not None:
            _demote(index.heads.get(experiment), experiment)
            index.heads[experiment] = run
        project.runs.append(run)
        index.ids.add(sys_id)
        index.count += 1
        return run


@dataclass
class _ProjectIndex:
    """Sys ids and experiment heads of a project, kept in step by add_run (rebuilt when runs changed elsewhere)."""

    count: int
    ids: set[str]
    heads: dict[str, Run]


def _index(project: Project) -> _ProjectIndex:
    index = project.run_index
    if not isinstance(index, _ProjectIndex) or index.count != len(project.runs):
        heads = {r.get("sys/experiment/name"): r for r in project.runs if r.experiment_head}
        index = _ProjectIndex(len(project.runs), {r.sys_id for r in project.runs}, heads)
        project.run_index = index
    return index


def _fork_parent(project: Project, fork_parent: str | None) -> Run | None:
    if fork_parent is None:
        return None
    parent = project.run(fork_parent)
    if parent is None:
        raise ValueError(f"fork parent {fork_parent!r} is not a run of {project.identifier!r}; add the parent first")
    return parent


def _demote(previous: Run | None, experiment: str) -> None:
    if previous is not None and previous.experiment_head and previous.get("sys/experiment/name") == experiment:
        previous.experiment_head = False
        previous.attributes["sys/experiment/is_head"] = Attribute("sys/experiment/is_head", store.BOOL, False)


def append_points(ws: Workspace, project_id: str, run_id: str, path: str, steps, values, timestamps_ms=None) -> None:
    """Append points to a series (created when missing, as a float series unless it exists); bumps the run."""
    with ws.lock:
        run = _run(ws, project_id, run_id)
        steps = np.asarray(steps, dtype=np.float64)
        if timestamps_ms is None:
            now_ms = int(store.utcnow().timestamp() * 1000)
            timestamps_ms = np.full(steps.size, now_ms, dtype=np.int64)
        attr = run.attributes.get(path)
        if attr is None:
            attr = run.attributes[path] = Attribute(path, store.FLOAT_SERIES, series=ExplicitSeries(store.FLOAT_SERIES))
        if not isinstance(attr.series, ExplicitSeries):
            attr.series = _materialise(attr.series)
        attr.series.append(steps, values, timestamps_ms)
        store.touch(run)


def _materialise(series: store.Series | None) -> ExplicitSeries:
    """An explicit copy of a (generated) series so it can be appended to."""
    if series is None:
        return ExplicitSeries(store.FLOAT_SERIES)
    steps, values, stamps = series.window(None, None, None, len(series))
    return ExplicitSeries(series.kind, steps, values, stamps)


def set_attribute(ws: Workspace, project_id: str, run_id: str, path: str, type_: str, value: Any) -> None:
    """Create or replace an attribute and bump sys/modification_time."""
    with ws.lock:
        run = _run(ws, project_id, run_id)
        run.attributes[path] = make_attribute(path, type_, value)
        store.touch(run)


def archive_run(ws: Workspace, project_id: str, run_id: str, archived: bool = True) -> None:
    """Archive (2.x: trash) a run or restore it; bumps sys/modification_time like any change."""
    with ws.lock:
        run = _run(ws, project_id, run_id)
        run.attributes["sys/trashed"] = Attribute("sys/trashed", store.BOOL, archived)
        store.touch(run)


def set_archived_paths(ws: Workspace, variant: str) -> None:
    """Which archive flag(s) the 3.x API reports for every run: "archived", "trashed" or "both" (2.x: sys/trashed)."""
    if variant not in store.ARCHIVED_PATH_VARIANTS:
        raise ValueError(f"archived paths {variant!r}: use one of {store.ARCHIVED_PATH_VARIANTS}")
    with ws.lock:
        for project in ws.projects.values():
            project.archived_paths = variant
            for run in project.runs:
                run.archived_paths = variant


def touch_run(ws: Workspace, project_id: str, run_id: str, when: datetime | None = None) -> None:
    """Bump sys/modification_time only."""
    with ws.lock:
        store.touch(_run(ws, project_id, run_id), when)


def new_workspace(name: str = "workspace") -> Workspace:
    return Workspace(name=name)


# ---------------------------------------------------------------------------- JSON dataset format
FORMAT_VERSION = 1
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class DatasetError(TerminalError, ValueError):
    """A dataset file or spec that cannot be loaded."""


DATASET_REMEDY = "correct the dataset as described in neptune_exporter/fake_neptune/README.md (JSON dataset format)"


def load_dataset(source: str | Path | dict) -> Workspace:
    """A Workspace from the JSON dataset format (a path or an already parsed dict); see README.md."""
    data = source if isinstance(source, dict) else _read_json(Path(source))
    ws = Workspace(name=data.get("workspace", "workspace"))
    for number, spec in enumerate(data.get("projects") or [], start=1):
        where = f"project #{number} ({spec.get('name')!r})"
        try:
            _project_from_json(ws, spec, where)
        except DatasetError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"dataset {where}: {exc!r}", DATASET_REMEDY) from exc
    return ws


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read dataset {path}: {exc}", DATASET_REMEDY) from exc
    if not isinstance(data, dict):
        raise DatasetError(f"dataset {path} is not a JSON object", DATASET_REMEDY)
    return data


def _project_from_json(ws: Workspace, spec: dict, where: str) -> None:
    if not spec.get("name"):
        raise DatasetError(f'dataset {where} has no "name"', DATASET_REMEDY)
    project = add_project(ws, spec["name"], spec.get("key"))
    variant = spec.get("archived_paths", "both")
    if variant not in store.ARCHIVED_PATH_VARIANTS:
        raise DatasetError(
            f'dataset {where}: "archived_paths" must be one of {store.ARCHIVED_PATH_VARIANTS}', DATASET_REMEDY
        )
    project.archived_paths = variant
    for key, file_spec in (spec.get("files") or {}).items():
        project.files[key] = _file_from_json(key, file_spec)
    for number, run_spec in enumerate(spec.get("runs") or [], start=1):
        try:
            _run_from_json(ws, project, run_spec)
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"dataset {where}, run #{number}: {exc}", DATASET_REMEDY) from exc


def _file_from_json(key: str, spec: dict) -> store.StoredFile:
    name = spec.get("name") or key.rsplit("/", 1)[-1]
    mime = spec.get("mime_type", "application/octet-stream")
    if "content" in spec or "base64" in spec:
        content = base64.b64decode(spec["base64"]) if "base64" in spec else spec["content"].encode("utf-8")
        return store.StoredFile(len(content), mime, content, 0, name)
    return store.StoredFile(int(spec["size"]), mime, None, int(spec.get("seed", 0)), name)


def _run_from_json(ws: Workspace, project: Project, spec: dict) -> Run:
    attributes = {path: _attribute_from_json(path, value) for path, value in (spec.get("attributes") or {}).items()}
    run = add_run(
        ws,
        project.identifier,
        sys_id=spec.get("sys_id"),
        custom_run_id=spec.get("custom_run_id"),
        experiment=spec.get("experiment"),
        attributes=attributes,
        created=_datetime(spec["created"]) if spec.get("created") else store.EPOCH,
        tags=spec.get("tags") or (),
        trashed=bool(spec.get("trashed")),
        fork_parent=spec.get("fork_parent"),
        fork_step=spec.get("fork_step"),
        owner=spec.get("owner", OWNER),
    )
    if spec.get("modified"):
        run.attributes["sys/modification_time"] = Attribute(
            "sys/modification_time", store.DATETIME, _datetime(spec["modified"])
        )
    return run


def _attribute_from_json(path: str, spec: Any) -> Attribute:
    try:
        return _typed_attribute_from_json(path, spec)
    except (KeyError, TypeError, ValueError) as exc:
        message = str(exc)
        raise ValueError(message if message.startswith("attribute ") else f"attribute {path!r}: {message}") from exc


def _typed_attribute_from_json(path: str, spec: Any) -> Attribute:
    if not isinstance(spec, dict):
        return make_attribute(path, _scalar_type(path, spec), spec)
    type_: Any = spec.get("type")  # checked by make_attribute
    if type_ in store.SERIES_TYPES:
        if "generate" in spec:
            return Attribute(path, type_, series=store.GeneratedFloatSeries(**spec["generate"]))
        points = [(p[0], _json_value(type_, p[1]), p[2]) for p in spec.get("points") or []]
        return make_attribute(path, type_, points)
    return make_attribute(path, type_, _json_value(type_, spec.get("value")))


def _scalar_type(path: str, value: Any) -> str:
    if isinstance(value, bool):
        return store.BOOL
    if isinstance(value, int):
        return store.INT
    if isinstance(value, float):
        return store.FLOAT
    if isinstance(value, str):
        return store.STRING
    raise ValueError(f"attribute {path!r}: give {{'type': ..., 'value': ...}} for {type(value).__name__} values")


def _json_value(type_: str, value: Any) -> Any:
    if type_ in (store.FLOAT, store.FLOAT_SERIES):
        return _NON_FINITE[value] if isinstance(value, str) else float(value)
    if type_ == store.DATETIME:
        return _datetime(value)
    if type_ == store.STRING_SET:
        return set(value)
    return value


def _datetime(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def save_dataset(ws: Workspace, path: str | Path | None = None) -> dict:
    """The workspace in the JSON dataset format (written to `path` when given). Lazy parts stay lazy."""
    data = {
        "format_version": FORMAT_VERSION,
        "workspace": ws.name,
        "projects": [_project_to_json(p) for p in ws.projects.values()],
    }
    if path is not None:
        Path(path).write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    return data


def _project_to_json(project: Project) -> dict:
    files = {key: _file_to_json(blob) for key, blob in project.files.items()}
    variant = {} if project.archived_paths == "both" else {"archived_paths": project.archived_paths}
    return {
        "name": project.name,
        "key": project.key,
        **variant,
        "files": files,
        "runs": [_run_to_json(run) for run in project.runs],
    }


def _file_to_json(blob: store.StoredFile) -> dict:
    out: dict[str, Any] = {"name": blob.name, "mime_type": blob.mime_type}
    if blob.content is not None:
        out["base64"] = base64.b64encode(blob.content).decode()
    else:
        out.update(size=blob.size, seed=blob.seed)
    return out


_RUN_LEVEL = {
    "sys/id",
    "sys/custom_run_id",
    "sys/name",
    "sys/creation_time",
    "sys/modification_time",
    "sys/tags",
    "sys/trashed",
    "sys/owner",
    "sys/state",
    "sys/forking/depth",
    "sys/experiment/name",
    "sys/experiment/is_head",
    FORK_PARENT_PATH,
    FORK_STEP_PATH,
}


def _run_to_json(run: Run) -> dict:
    experiment = run.get("sys/experiment/name")
    return {
        "sys_id": run.sys_id,
        "custom_run_id": run.custom_run_id,
        "experiment": experiment,
        "created": run.get("sys/creation_time").isoformat(),
        "modified": run.get("sys/modification_time").isoformat(),
        "tags": sorted(run.get("sys/tags") or ()),
        "trashed": run.trashed,
        "owner": run.get("sys/owner"),
        "fork_parent": run.fork_parent,
        "fork_step": run.fork_step,
        "attributes": {a.path: _attribute_to_json(a) for a in run.attributes.values() if a.path not in _RUN_LEVEL},
    }


def _attribute_to_json(attr: Attribute) -> dict:
    if attr.series is None:
        return {"type": attr.type, "value": _value_to_json(attr.type, attr.value)}
    if isinstance(attr.series, store.GeneratedFloatSeries):
        s = attr.series
        return {
            "type": attr.type,
            "generate": {
                "count": s.count,
                "seed": s.seed,
                "start_step": s.start_step,
                "step_size": s.step_size,
                "start_ms": s.start_ms,
                "ms_per_step": s.ms_per_step,
            },
        }
    steps, values, stamps = attr.series.window(None, None, None, len(attr.series))
    return {
        "type": attr.type,
        "points": [
            [float(st), _value_to_json(attr.type, v), int(ts)] for st, v, ts in zip(steps, values, stamps, strict=True)
        ],
    }


def _value_to_json(type_: str, value: Any) -> Any:
    if type_ in (store.FLOAT, store.FLOAT_SERIES):
        value = float(value)
        return (
            value
            if math.isfinite(value)
            else ("NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity")
        )
    if type_ == store.DATETIME:
        return value.isoformat()
    if type_ == store.STRING_SET:
        return sorted(value)
    return value


# ---------------------------------------------------------------------------- generated workspaces
def generate_workspace(
    runs: int = 10,
    experiments: int = 2,
    params: int = 10,
    metrics: int = 5,
    points: int = 1000,
    string_series: int = 1,
    histograms: int = 1,
    files: int = 1,
    file_size: int = 1024,
    seed: int = 0,
    workspace: str = "workspace",
    project: str = "sandbox",
    string_points: int = 100,
    histogram_points: int = 10,
) -> Workspace:
    """A deterministic workspace; float series and files are lazy (a 100M-point dataset costs no memory).

    Run i (0-based): sys id KEY-(i+1), custom id run-00000i, experiment exp-000(i % experiments) (the last run
    of each experiment is its head), created EPOCH + i minutes; params/pNNN cycle float/int/string/bool;
    metrics/mNNN: GeneratedFloatSeries(points, seed=seed*1_000_003 + i*1000 + j).
    """
    ws = Workspace(name=workspace)
    target = add_project(ws, project, project.upper().replace("-", "")[:8] or "SANDBOX")
    for i in range(runs):
        _generated_run(
            ws,
            target,
            i,
            experiments,
            params,
            metrics,
            points,
            string_series,
            histograms,
            files,
            file_size,
            seed,
            string_points,
            histogram_points,
        )
    return ws


def _generated_run(
    ws: Workspace,
    project: Project,
    i: int,
    experiments: int,
    params: int,
    metrics: int,
    points: int,
    string_series: int,
    histograms: int,
    files: int,
    file_size: int,
    seed: int,
    string_points: int,
    histogram_points: int,
) -> Run:
    created = store.EPOCH + timedelta(minutes=i)
    start_ms = int(created.timestamp() * 1000)
    attrs: dict[str, Attribute] = {}
    for j in range(params):
        path = f"params/p{j:03d}"
        attrs[path] = make_attribute(path, *_generated_param(i, j))
    for j in range(metrics):
        series = store.GeneratedFloatSeries(points, seed=seed * 1_000_003 + i * 1000 + j, start_ms=start_ms)
        attrs[f"metrics/m{j:03d}"] = Attribute(f"metrics/m{j:03d}", store.FLOAT_SERIES, series=series)
    for j in range(string_series):
        lines = [(float(s), f"run {i} series {j} line {s}", start_ms + s * 1000) for s in range(string_points)]
        attrs[f"logs/s{j:03d}"] = make_attribute(f"logs/s{j:03d}", store.STRING_SERIES, lines)
    for j in range(histograms):
        hist = [
            (
                float(s),
                {"type": "COUNTING", "edges": [0.0, 1.0, 2.0, 3.0], "values": [float(i), float(j), float(s)]},
                start_ms + s * 1000,
            )
            for s in range(histogram_points)
        ]
        attrs[f"histograms/h{j:03d}"] = make_attribute(f"histograms/h{j:03d}", store.HISTOGRAM_SERIES, hist)
    for j in range(files):
        key = f"{project.identifier}/run-{i:05d}/files/f{j:03d}/blob.bin"
        project.files[key] = store.StoredFile(file_size, seed=seed * 1_000_003 + i * 1000 + j, name="blob.bin")
        attrs[f"files/f{j:03d}"] = Attribute(f"files/f{j:03d}", store.FILE, key)
    experiment = f"exp-{i % experiments:04d}" if experiments else None
    return add_run(
        ws,
        project.identifier,
        custom_run_id=f"run-{i:05d}",
        experiment=experiment,
        attributes=attrs,
        created=created,
        tags=("generated", f"group-{i % 3}"),
    )


def _generated_param(i: int, j: int) -> tuple[str, Any]:
    kind = j % 4
    if kind == 0:
        return store.FLOAT, i * 0.5 + j
    if kind == 1:
        return store.INT, i * 100 + j
    if kind == 2:
        return store.STRING, f"value-{i}-{j}"
    return store.BOOL, (i + j) % 2 == 0


# ---------------------------------------------------------------------------- the awkward workspace
AWKWARD_PROJECT = "workspace/awkward"
AWKWARD_KEY = "AWK"
AWKWARD_WIDE_ATTRIBUTES = 10_000
AWKWARD_BIG_FILE_SIZE = 3 * 1024 * 1024 + 17
AWKWARD_FORK_STEP = 4.0


def awkward_workspace() -> Workspace:
    """Project `workspace/awkward`: every attribute type and the awkward cases, values exact (see README.md), beside
    project `workspace/limits` (limits_dataset.py: data at the edges of the export's and the targets' ranges).

    AWK-1 run-basic   exp-alpha  every type, unicode and /-heavy paths, float steps 0.1/0.29, NaN/±inf, empty
                                 series, 0-byte / 1 KiB / ~3 MB files, file series, histograms, string set,
                                 datetime, 2.x file set and string-series logs
    AWK-2 run-empty   (none)     only sys attributes
    AWK-3 run-wide    exp-wide   10,000 float attributes wide/p00000..wide/p09999 = index * 0.5
    AWK-4 run-parent  exp-fork   metrics/loss steps 0..9 = 10 - step (no longer the experiment head)
    AWK-5 run-child   exp-fork   fork of AWK-4 at step 4: own metrics/loss steps 5..9 = 100 + step
    AWK-6 run-trashed (none)     sys/trashed = True, params/lr = 0.5
    AWK-7 (no custom id) exp-beta  params/lr = 0.01; metrics/acc steps 0..2
    AWK-8 run-gamma   exp-gamma  datetimes and tags only
    """
    ws = Workspace(name="workspace")
    project = add_project(ws, "awkward", AWKWARD_KEY)
    _add_awkward_files(project)
    _awkward_basic(ws, project)
    add_run(ws, project.identifier, custom_run_id="run-empty", created=_hour(2))
    wide = {f"wide/p{i:05d}": (store.FLOAT, i * 0.5) for i in range(AWKWARD_WIDE_ATTRIBUTES)}
    add_run(
        ws,
        project.identifier,
        custom_run_id="run-wide",
        experiment="exp-wide",
        attributes=wide,
        created=_hour(3),
        tags=("wide",),
    )
    _awkward_fork(ws, project)
    add_run(
        ws,
        project.identifier,
        custom_run_id="run-trashed",
        attributes={"params/lr": (store.FLOAT, 0.5)},
        created=_hour(6),
        trashed=True,
        tags=("trashed",),
    )
    add_run(
        ws,
        project.identifier,
        experiment="exp-beta",
        created=_hour(7),
        attributes={
            "params/lr": (store.FLOAT, 0.01),
            "metrics/acc": (store.FLOAT_SERIES, _points([0.5, 0.75, 0.875], _hour(7))),
        },
    )
    add_run(
        ws,
        project.identifier,
        custom_run_id="run-gamma",
        experiment="exp-gamma",
        created=_hour(8),
        tags=("t1", "t2", "ünï"),
        attributes={
            "when/start": (store.DATETIME, datetime(1999, 12, 31, 23, 59, 59, 999000, UTC)),
            "when/end": (store.DATETIME, datetime(2030, 1, 1, tzinfo=UTC)),
        },
    )
    from neptune_exporter.fake_neptune.limits_dataset import add_limits_project  # it builds on this module

    add_limits_project(ws)
    return ws


def _hour(n: int) -> datetime:
    return store.EPOCH + timedelta(hours=n)


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _points(values: list, start: datetime, steps: list[float] | None = None) -> list[tuple]:
    steps = steps if steps is not None else [float(i) for i in range(len(values))]
    return [(step, value, _ms(start) + 1000 * i) for i, (step, value) in enumerate(zip(steps, values, strict=True))]


def _add_awkward_files(project: Project) -> None:
    prefix = f"{project.identifier}/AWK-1"
    project.files.update(
        {
            f"{prefix}/files/model/model.bin": store.StoredFile(1024, content=bytes(range(256)) * 4, name="model.bin"),
            f"{prefix}/files/empty/empty.txt": store.StoredFile(0, "text/plain", content=b"", name="empty.txt"),
            f"{prefix}/files/big/big.bin": store.StoredFile(AWKWARD_BIG_FILE_SIZE, seed=7, name="big.bin"),
            f"{prefix}/images/0/sample.png": store.StoredFile(
                8, "image/png", content=b"\x89PNG-000", name="sample.png"
            ),
            f"{prefix}/images/1/sample.png": store.StoredFile(
                8, "image/png", content=b"\x89PNG-111", name="sample.png"
            ),
            f"{prefix}/images/2/sample.png": store.StoredFile(
                8, "image/png", content=b"\x89PNG-222", name="sample.png"
            ),
            f"{prefix}/artifacts/a.txt": store.StoredFile(3, "text/plain", content=b"AAA", name="a.txt"),
            f"{prefix}/artifacts/sub/b.txt": store.StoredFile(5, "text/plain", content=b"BBBBB", name="b.txt"),
            f"{prefix}/artifacts/sub/deeper/c.json": store.StoredFile(
                9, "application/json", content=b'{"c": 3}\n', name="c.json"
            ),
        }
    )


def _awkward_basic(ws: Workspace, project: Project) -> Run:
    start, prefix = _hour(1), f"{project.identifier}/AWK-1"
    hist = [
        {"type": "COUNTING", "edges": [0.0, 1.0, 2.0], "values": [3.0, 4.0]},
        {"type": "COUNTING", "edges": [-1.5, 0.0, 1.5, 3.0], "values": [0.0, 10.0, 2.0]},
        {"type": "COUNTING", "edges": [0.0, 1.0], "values": [7.0]},
    ]
    attributes = {
        "params/float": (store.FLOAT, 0.1),
        "params/int": (store.INT, -7),
        "params/big_int": (store.INT, 2**31 - 1),
        "params/string": (store.STRING, 'héllo wörld ✓ "quoted" \\ back'),
        "params/empty_string": (store.STRING, ""),
        "params/bool": (store.BOOL, True),
        "params/false": (store.BOOL, False),
        "params/nan": (store.FLOAT, math.nan),
        "params/inf": (store.FLOAT, math.inf),
        "params/datetime": (store.DATETIME, datetime(2024, 2, 3, 4, 5, 6, 789000, UTC)),
        "params/string_set": (store.STRING_SET, {"a", "b/c", "ü"}),
        "unicode/ścieżka/λ": (store.FLOAT, 1.5),
        "a/b/c/d/e/f/g/h": (store.STRING, "deep"),
        "with space/x y": (store.INT, 1),
        "metrics/loss": (store.FLOAT_SERIES, _points([1.0 / (1 + i) for i in range(100)], start)),
        "metrics/float_steps": (store.FLOAT_SERIES, _points([1.0, 2.0, 3.0, 4.0], start, [0.1, 0.29, 1.0, 1.5])),
        "metrics/nonfinite": (store.FLOAT_SERIES, _points([1.0, math.nan, math.inf, -math.inf, -0.0, 2.5], start)),
        "metrics/empty": (store.FLOAT_SERIES, []),
        "logs/stdout": (store.STRING_SERIES, _points(["start", "ünïcödé line", "", "tab\there", "end"], start)),
        "hist/weights": (store.HISTOGRAM_SERIES, _points(hist, start, [0.0, 1.0, 2.5])),
        "files/model": (store.FILE, f"{prefix}/files/model/model.bin"),
        "files/empty": (store.FILE, f"{prefix}/files/empty/empty.txt"),
        "files/big": (store.FILE, f"{prefix}/files/big/big.bin"),
        "images/samples": (store.FILE_SERIES, _points([f"{prefix}/images/{i}/sample.png" for i in range(3)], start)),
        "artifacts/set": (
            store.FILE_SET,
            {
                "a.txt": f"{prefix}/artifacts/a.txt",
                "sub/b.txt": f"{prefix}/artifacts/sub/b.txt",
                "sub/deeper/c.json": f"{prefix}/artifacts/sub/deeper/c.json",
            },
        ),
        **_awkward_legacy(),
    }
    return add_run(
        ws,
        project.identifier,
        custom_run_id="run-basic",
        experiment="exp-alpha",
        attributes=attributes,
        created=start,
        tags=("awk", "basic"),
    )


AWKWARD_GIT_COMMIT = "0123456789abcdef0123456789abcdef01234567"
AWKWARD_NOTEBOOK = "exploration ✓.ipynb"
AWKWARD_ARTIFACT_HASH = "a" * 64


def _awkward_legacy() -> dict[str, tuple[str, dict]]:
    """One attribute of each 2.x-only type; the artifact's file lives on a machine the export cannot reach."""
    git = {
        "commit": {
            "commitId": AWKWARD_GIT_COMMIT,
            "message": 'fix: ünïcode "quotes"\nsecond line',
            "authorName": "Ada",
            "authorEmail": "ada@example.com",
            "commitDate": "2024-01-01T00:30:00.000Z",
        },
        "currentBranch": "feature/awk",
        "remotes": ["git@example.com:awk/repo.git"],
        "repositoryDirty": True,
    }
    notebook = {
        "notebookId": "6f1c1c4e-59c5-4a4c-9a55-2b1e0d6a7b01",
        "notebookName": AWKWARD_NOTEBOOK,
        "notebookDeleted": False,
        "checkpointId": "0b6a0b1e-1f0e-4d5c-8a4b-3c2d1e0f9a87",
        "checkpointName": "checkpoint 3",
        "checkpointCreated": "2024-01-01T00:45:00.000Z",
        "checkpointDeleted": False,
    }
    artifact = {
        "hash": AWKWARD_ARTIFACT_HASH,
        "files": [
            {
                "filePath": "data/train.csv",
                "fileHash": "b" * 64,
                "type": "Local",
                "size": 1234,
                "metadata": {
                    "file_path": "file:///unreachable/awkward/data/train.csv",
                    "last_modified": "2024-01-01 00:00:00",
                },
            },
            {
                "filePath": "data/ünï/labels.txt",
                "fileHash": "c" * 64,
                "type": "Local",
                "size": 0,
                "metadata": {
                    "file_path": "file:///unreachable/awkward/labels.txt",
                    "last_modified": "2024-01-01 00:00:00",
                },
            },
        ],
    }
    return {
        "source_code/git": (store.GIT_REF, git),
        "source_code/notebook": (store.NOTEBOOK_REF, notebook),
        "datasets/train": (store.ARTIFACT, artifact),
    }


def _awkward_fork(ws: Workspace, project: Project) -> None:
    add_run(
        ws,
        project.identifier,
        custom_run_id="run-parent",
        experiment="exp-fork",
        created=_hour(4),
        attributes={
            "metrics/loss": (store.FLOAT_SERIES, _points([10.0 - i for i in range(10)], _hour(4))),
            "params/lr": (store.FLOAT, 0.1),
        },
    )
    steps = [5.0, 6.0, 7.0, 8.0, 9.0]
    add_run(
        ws,
        project.identifier,
        custom_run_id="run-child",
        experiment="exp-fork",
        created=_hour(5),
        fork_parent="AWK-4",
        fork_step=AWKWARD_FORK_STEP,
        attributes={
            "metrics/loss": (store.FLOAT_SERIES, _points([100.0 + s for s in steps], _hour(5), steps)),
            "params/lr": (store.FLOAT, 0.05),
        },
    )

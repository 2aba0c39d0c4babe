"""Datasets of the fake Neptune server: run building and live mutation, JSON format, generator, awkward workspace."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable

import numpy as np

from neptune_exporter.fake_neptune import store
from neptune_exporter.fake_neptune.store import Attribute, ExplicitSeries, Project, Run, Workspace

OWNER = "tester"


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
    return Attribute(path, type_, value)


def _series_from_points(type_: str, points: Iterable) -> ExplicitSeries:
    points = list(points)
    steps = [float(p[0]) for p in points]
    values = [p[1] for p in points]
    timestamps = [int(p[2]) for p in points]
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError("series steps must be strictly increasing")
    return ExplicitSeries(type_, np.array(steps, dtype=np.float64), values, np.array(timestamps, dtype=np.int64))


def sys_attributes(sys_id: str, custom_run_id: str | None, experiment: str | None, created: datetime,
                   tags: Iterable[str] = (), trashed: bool = False, owner: str = OWNER, head: bool = False,
                   fork_depth: int = 0) -> dict[str, Attribute]:
    """The sys/* attributes every run carries (sys/state is a 2.x-only string, hidden from 3.x)."""
    attrs = [
        Attribute("sys/id", store.STRING, sys_id),
        Attribute("sys/name", store.STRING, experiment or ""),
        Attribute("sys/creation_time", store.DATETIME, created),
        Attribute("sys/modification_time", store.DATETIME, created),
        Attribute("sys/owner", store.STRING, owner),
        Attribute("sys/tags", store.STRING_SET, set(tags)),
        Attribute("sys/trashed", store.BOOL, trashed),
        Attribute("sys/state", store.STRING, "inactive"),
        Attribute("sys/forking/depth", store.INT, fork_depth),
    ]
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


def add_run(ws: Workspace, project_id: str, sys_id: str | None = None, custom_run_id: str | None = None,
            experiment: str | None = None, attributes: dict | None = None, created: datetime | None = None,
            tags: Iterable[str] = (), trashed: bool = False, fork_parent: str | None = None,
            fork_step: float | None = None, owner: str = OWNER) -> Run:
    """Add a run; it becomes the head of `experiment` (the previous head stays a plain run).

    `attributes`: {path: Attribute | (type, value)}; series values as Series or [(step, value, ts_ms)].
    """
    with ws.lock:
        project = _project(ws, project_id)
        sys_id = sys_id or f"{project.key}-{len(project.runs) + 1}"
        if project.run(sys_id) is not None:
            raise ValueError(f"run {sys_id!r} already exists in {project_id!r}")
        created = created or store.utcnow()
        parent = project.run(fork_parent) if fork_parent else None
        depth = (parent.get("sys/forking/depth") or 0) + 1 if parent else 0
        run = Run(sys_id, fork_parent=parent.sys_id if parent else None, fork_step=fork_step,
                  experiment_head=experiment is not None)
        run.attributes = sys_attributes(sys_id, custom_run_id, experiment, created, tags, trashed, owner,
                                        head=experiment is not None, fork_depth=depth)
        for path, spec in (attributes or {}).items():
            run.attributes[path] = spec if isinstance(spec, Attribute) else make_attribute(path, *spec)
        if experiment is not None:
            _demote_previous_head(project, experiment)
        project.runs.append(run)
        return run


def _demote_previous_head(project: Project, experiment: str) -> None:
    for other in project.runs:
        if other.experiment_head and other.get("sys/experiment/name") == experiment:
            other.experiment_head = False
            other.attributes["sys/experiment/is_head"] = Attribute("sys/experiment/is_head", store.BOOL, False)


def append_points(ws: Workspace, project_id: str, run_id: str, path: str, steps, values,
                  timestamps_ms=None) -> None:
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


def touch_run(ws: Workspace, project_id: str, run_id: str, when: datetime | None = None) -> None:
    """Bump sys/modification_time only."""
    with ws.lock:
        store.touch(_run(ws, project_id, run_id), when)


def new_workspace(name: str = "workspace") -> Workspace:
    return Workspace(name=name)


def minutes_after(base: datetime, minutes: float) -> datetime:
    return base + timedelta(minutes=minutes)

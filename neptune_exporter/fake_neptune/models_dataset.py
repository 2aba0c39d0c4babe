"""Model-registry fixtures of the fake Neptune server (2.x): models and model versions built like runs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from neptune_exporter.fake_neptune import store
from neptune_exporter.fake_neptune.datasets import OWNER, make_attribute
from neptune_exporter.fake_neptune.store import Attribute, Model, ModelVersion, Project, Workspace

STAGES = ("none", "staging", "production", "archived")


def registry_sys_attributes(
    sys_id: str, name: str, created: datetime, trashed: bool, tags: Iterable[str] = (), owner: str = OWNER
) -> dict[str, Attribute]:
    """The sys/* attributes a 2.x model or model version carries (no run state, no experiment)."""
    attrs = [
        Attribute("sys/id", store.STRING, sys_id),
        Attribute("sys/name", store.STRING, name),
        Attribute("sys/creation_time", store.DATETIME, created),
        Attribute("sys/modification_time", store.DATETIME, created),
        Attribute("sys/owner", store.STRING, owner),
        Attribute("sys/tags", store.STRING_SET, set(tags)),
        Attribute("sys/trashed", store.BOOL, trashed),
    ]
    return {a.path: a for a in attrs}


def _with_attributes(container: store.Run, attributes: dict | None) -> None:
    for path, spec in (attributes or {}).items():
        container.attributes[path] = spec if isinstance(spec, Attribute) else make_attribute(path, *spec)


def _project(ws: Workspace, project_id: str) -> Project:
    project = ws.project(project_id)
    if project is None:
        raise KeyError(f"no project {project_id!r}; known: {sorted(ws.projects)}")
    return project


def add_model(
    ws: Workspace,
    project_id: str,
    key: str,
    name: str = "",
    attributes: dict | None = None,
    created: datetime | None = None,
    trashed: bool = False,
    tags: Iterable[str] = (),
) -> Model:
    """A model `PROJ-KEY`; `attributes` as for datasets.add_run ({path: Attribute | (type, value)})."""
    with ws.lock:
        project = _project(ws, project_id)
        sys_id = f"{project.key}-{key.upper()}"
        if any(m.sys_id == sys_id for m in project.models):
            raise ValueError(f"model {sys_id!r} already exists in {project_id!r}")
        model = Model(sys_id)
        model.attributes = registry_sys_attributes(sys_id, name, created or store.utcnow(), trashed, tags)
        _with_attributes(model, attributes)
        project.models.append(model)
        return model


def add_model_version(
    ws: Workspace,
    project_id: str,
    model_id: str,
    stage: str = "none",
    name: str = "",
    attributes: dict | None = None,
    created: datetime | None = None,
    trashed: bool = False,
) -> ModelVersion:
    """Version n+1 of a model (`PROJ-KEY-<n+1>`) with `sys/model_id` and `sys/stage`."""
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} is not one of {STAGES}")
    with ws.lock:
        model = _model(_project(ws, project_id), model_id)
        sys_id = f"{model.sys_id}-{len(model.versions) + 1}"
        version = ModelVersion(sys_id)
        when = created or store.utcnow()
        version.attributes = registry_sys_attributes(sys_id, name, when, trashed)
        version.attributes["sys/model_id"] = Attribute("sys/model_id", store.STRING, model.sys_id)
        version.attributes["sys/stage"] = Attribute("sys/stage", store.STRING, stage)
        _with_attributes(version, attributes)
        model.versions.append(version)
        return version


def _model(project: Project, model_id: str) -> Model:
    for model in project.models:
        if model.sys_id == model_id:
            return model
    raise KeyError(f"no model {model_id!r} in {project.identifier!r}")

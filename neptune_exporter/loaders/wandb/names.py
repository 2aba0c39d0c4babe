"""W&B names of Neptune things: run ids, project names, artifact names, keys off W&B's reserved underscore."""

from __future__ import annotations

import re

from neptune_exporter.errors import InvalidOptionError
from neptune_exporter.loaders.base import KeyMap, map_key, run_key

DEFAULT_PROJECT_TEMPLATE = "{project}"


def _clean(text: str, allowed: str) -> str:
    return re.sub(f"[^{allowed}]", "-", text)


def wandb_run_id(project_id: str, run_id: str) -> str:
    """Deterministic W&B run id: readable lowercase prefix + hash of (project, run), only [a-z0-9_-]."""
    prefix = _clean(run_id.lower(), "a-z0-9_-").strip("-")[:40]
    digest = run_key(project_id, run_id)[:12]
    return f"{prefix}-{digest}" if prefix else digest


def wandb_project_name(project_id: str, template: str | None) -> str:
    """W&B project from the Neptune project via a template ({project}, {workspace}, {project_id})."""
    workspace, _, project = project_id.rpartition("/")
    try:
        name = (template or DEFAULT_PROJECT_TEMPLATE).format(
            project=project, workspace=workspace, project_id=project_id
        )
    except (KeyError, IndexError, ValueError) as error:
        raise InvalidOptionError(
            f"--project-template {template!r} is not valid ({error})",
            "use the fields {project}, {workspace}, {project_id}",
        ) from None
    return _clean(name, r"A-Za-z0-9_.\-")[:128] or "neptune"


def artifact_name(target_run_id: str, key: str) -> str:
    """Run-scoped artifact name of one attribute, unique per run and attribute."""
    readable = _clean(key, r"A-Za-z0-9_.\-")[:60]
    digest = run_key(target_run_id, key)[:10]
    return f"{target_run_id}-{readable}-{digest}"


class WandbKeyMap(KeyMap):
    """KeyMap that also moves keys off W&B's reserved leading underscore (`_step`, `_timestamp`, ...): a key that
    starts with `_`, or that its cleaning makes start with `_` (`@loss` → `_loss_…`), is stored as `u` + the cleaned
    key + a hash of the original, so W&B keeps it as a key of its own and validation reads it back."""

    def target_key(self, key: str) -> str:
        mapped = super().target_key(key)
        if not mapped.startswith("_"):
            return mapped
        return map_key("u" + key + "\x00", self.capabilities)  # forced rename: hash of the original

"""ZenML names of a Neptune run: the Model (project template), the Model Version (run id), metadata keys, artifacts."""

from __future__ import annotations

import hashlib
import re

from neptune_exporter.errors import InvalidOptionError
from neptune_exporter.loaders.base import KeyMap, TargetCapabilities

MAX_NAME = 255  # ZenML names, versions and metadata keys (STR_FIELD_MAX_LENGTH)
BANNED = "\t\n\r\v\f"  # characters ZenML refuses in names
STAGES = ("none", "staging", "production", "archived", "latest")  # ZenML reads these as stages, not names
DEFAULT_MODEL_TEMPLATE = "{project_id}"
RESERVED_PREFIX = "neptune."  # the provenance keys; a Neptune attribute under it is renamed
REFUSED_IN_KEYS = re.compile(r"[\x00-\x1f\x7f:]")  # ZenML refuses `:` in metadata keys; control characters

ZENML = TargetCapabilities(
    name="zenml",
    integer_steps=False,  # series keep their exact decimal steps (Parquet decimal128(18,6))
    increasing_steps_only=False,
    max_key_length=MAX_NAME,
    key_pattern=r"[^\x00-\x1f\x7f:]",
    max_param_length=None,
    metrics_per_batch=None,
    params_per_batch=None,
    tags_per_batch=None,
)


def model_name(template: str | None, project_id: str) -> str:
    """The ZenML Model of a project: the template with {project_id}, {workspace}, {project}; InvalidOptionError when
    the template is not usable."""
    template = template or DEFAULT_MODEL_TEMPLATE
    workspace, _, project = project_id.rpartition("/")
    try:
        name = template.format(project_id=project_id, workspace=workspace, project=project).strip()
    except (KeyError, IndexError, ValueError) as error:
        raise InvalidOptionError(
            f"--zenml-model-template {template!r} is invalid ({error})",
            "use only the fields {project_id}, {workspace} and {project}, e.g. '{project_id}'",
        ) from None
    if not name or len(name) > MAX_NAME or any(c in BANNED for c in name):
        raise InvalidOptionError(
            f"--zenml-model-template {template!r} gives the ZenML model name {name!r} for {project_id}, which ZenML "
            f"refuses (empty, over {MAX_NAME} characters, or a tab or line break)",
            "pass a template such as '{project_id}' or 'neptune-{project}'",
        )
    return name


def _short_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=4).hexdigest()


def version_name(run_id: str) -> str:
    """The Model Version of a run: its Neptune run id, or, when ZenML refuses that name (numeric, a stage name, a tab
    or line break, too long), `run-<id cleaned>-<8 hex of the id>`."""
    if run_id and len(run_id) <= MAX_NAME and not run_id.isnumeric() and run_id.lower() not in STAGES:
        if not any(c in BANNED for c in run_id):
            return run_id
    cleaned = "".join("_" if c in BANNED else c for c in run_id)[:200]
    return f"run-{cleaned}-{_short_hash(run_id)}"


def artifact_name(model: str, attribute: str) -> str:
    """`<model>/<attribute path>` (tabs and line breaks `_`), cut with a hash of the whole to 255 characters."""
    name = "".join("_" if c in BANNED else c for c in f"{model}/{attribute}")
    if len(name) <= MAX_NAME:
        return name
    return name[: MAX_NAME - 9] + "~" + _short_hash(name)


class ZenmlKeyMap(KeyMap):
    """Top-level metadata keys (namespaces, and names with no namespace): as they are when ZenML takes them (1..255
    characters, no `:`, no control character); else (and under the provenance prefix `neptune.`) renamed: those
    characters `_`, `_` before a `neptune.`, cut to fit, plus `~<8 hex of the original>`; the rename is recorded.
    Keys inside a namespace's dict are the rest of the path, as it is."""

    def target_key(self, key: str) -> str:
        if key and len(key) <= MAX_NAME and not REFUSED_IN_KEYS.search(key) and not key.startswith(RESERVED_PREFIX):
            return key
        cleaned = REFUSED_IN_KEYS.sub("_", key)
        if cleaned.startswith(RESERVED_PREFIX):
            cleaned = "_" + cleaned
        return cleaned[: MAX_NAME - 9] + "~" + _short_hash(key)


def key_map() -> ZenmlKeyMap:
    return ZenmlKeyMap(ZENML)

"""The MLflow tags that say where a run came from and how far its load got (provenance, fork links)."""

from __future__ import annotations

from neptune_exporter.loaders.base import ExportedRun, run_key
from neptune_exporter.storage.exported_run import (
    PROVENANCE_CHECKSUM,
    PROVENANCE_FORK_PARENT,
    PROVENANCE_FORK_STEP,
    PROVENANCE_LOAD_STATE,
    PROVENANCE_PROJECT,
    PROVENANCE_RUN_ID,
    PROVENANCE_STEP_MULTIPLIER,
)

TAG_PROJECT, TAG_RUN_ID, TAG_RUN_KEY = PROVENANCE_PROJECT, PROVENANCE_RUN_ID, "neptune.run_key"
TAG_CHECKSUM, TAG_LOAD_STATE, TAG_STEP_MULTIPLIER = (
    PROVENANCE_CHECKSUM,
    PROVENANCE_LOAD_STATE,
    PROVENANCE_STEP_MULTIPLIER,
)
TAG_FORK_PARENT, TAG_FORK_STEP, TAG_FORK_PARENT_TARGET = (
    PROVENANCE_FORK_PARENT,
    PROVENANCE_FORK_STEP,
    "neptune.fork_parent_mlflow_run_id",
)
TAG_PARENT_RUN = "mlflow.parentRunId"
LINK_TAGS = (TAG_FORK_PARENT_TARGET, TAG_PARENT_RUN)


def provenance_tags(export: ExportedRun, multiplier: int, load_state: str) -> dict[str, str]:
    """Tags every loaded run carries: where it came from, which export, how steps were scaled, load state."""
    record = export.provenance(multiplier, load_state)
    fork_parent, fork_step = record.pop(TAG_FORK_PARENT), record.pop(TAG_FORK_STEP)
    tags = {key: str(value) for key, value in record.items()}
    tags[TAG_RUN_KEY] = run_key(export.project_id, export.run_id)
    if fork_parent:
        tags[TAG_FORK_PARENT] = fork_parent
        if fork_step is not None:
            tags[TAG_FORK_STEP] = repr(float(fork_step))
    return tags

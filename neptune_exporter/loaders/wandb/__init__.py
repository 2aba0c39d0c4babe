"""Weights & Biases target: exported runs become W&B runs (online, or offline under --wandb-dir for `wandb sync`).

Modules: `loader` (WandbLoader), `target` (online/offline, process-wide settings), `names` (W&B ids and keys),
`export_reader` (one pass over the export), `history` (rows logged by step), `artifacts`, `offline` (offline runs
already there), `online` (what a W&B server already holds).
"""

from neptune_exporter.loaders.wandb.artifacts import ArtifactSpec, artifact_specs
from neptune_exporter.loaders.wandb.export_reader import RunContent, config_value, mapped_run
from neptune_exporter.loaders.wandb.history import HistoryWriter, write_history
from neptune_exporter.loaders.wandb.loader import WandbLoader
from neptune_exporter.loaders.wandb.names import (
    DEFAULT_PROJECT_TEMPLATE,
    WandbKeyMap,
    artifact_name,
    wandb_project_name,
    wandb_run_id,
)
from neptune_exporter.loaders.wandb.offline import (
    CHECKSUM,
    LOAD_STATE,
    await_offline_log,
    log_says_complete,
    offline_log_complete,
    offline_prior_state,
)
from neptune_exporter.loaders.wandb.online import PriorState
from neptune_exporter.loaders.wandb.target import QUIET_ENV, WandbTarget, offline_sync_hint

__all__ = [
    "CHECKSUM",
    "DEFAULT_PROJECT_TEMPLATE",
    "LOAD_STATE",
    "QUIET_ENV",
    "ArtifactSpec",
    "HistoryWriter",
    "PriorState",
    "RunContent",
    "WandbKeyMap",
    "WandbLoader",
    "WandbTarget",
    "artifact_name",
    "artifact_specs",
    "await_offline_log",
    "config_value",
    "log_says_complete",
    "mapped_run",
    "offline_log_complete",
    "offline_prior_state",
    "offline_sync_hint",
    "wandb_project_name",
    "wandb_run_id",
    "write_history",
]

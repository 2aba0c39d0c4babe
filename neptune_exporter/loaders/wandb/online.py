"""Online W&B: what a server already holds for a run (resume point, completion marker) via `wandb.Api`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from neptune_exporter.errors import TargetError, TargetUnavailableError
from neptune_exporter.storage.exported_run import PROVENANCE_CHECKSUM as CHECKSUM
from neptune_exporter.storage.exported_run import PROVENANCE_LOAD_STATE as LOAD_STATE
from neptune_exporter.storage.exported_run import ExportedRun


@dataclass
class PriorState:
    """What the target already holds for a run (online here; offline: loaders/wandb/offline.py reads the `.wandb` logs)."""

    state: str  # "absent" | "partial" | "complete"
    folders: list[Path] = field(default_factory=list)  # offline run folders found
    next_step: int | None = None  # online resume: first step not yet logged
    complete_log: Path | None = None  # offline: the `.wandb` log of the complete run


def _api(target):
    import wandb

    overrides = {"base_url": target.base_url} if target.base_url else {}
    return wandb.Api(api_key=target.api_key, overrides={**overrides, "entity": target.entity}, timeout=60)


def _run_path(loader, exported: ExportedRun, target_run_id: str) -> str:
    return f"{loader.target.entity}/{loader.project_name(exported.project_id)}/{target_run_id}"


def fetch_run(loader, exported: ExportedRun, target_run_id: str):
    """The W&B run (public API object) or None when the server has no such run."""
    import wandb

    path = _run_path(loader, exported, target_run_id)
    try:
        return _api(loader.target).run(path)
    except (wandb.errors.CommError, ValueError) as error:
        text = str(error).lower()
        if "not found" in text or "could not find" in text or "404" in text:
            return None
        if "401" in text or "403" in text or "permission" in text or "api key" in text:
            raise TargetError(f"W&B refused access to {path}: {error}", "check WANDB_API_KEY and --entity") from None
        raise TargetUnavailableError(
            f"W&B at {loader.target.base_url or 'api.wandb.ai'} failed: {error}", "retry later or check WANDB_BASE_URL"
        ) from None


def online_prior_state(loader, exported: ExportedRun, target_run_id: str):
    """complete (marker + same checksum) → skip; otherwise resume after the last step the server holds."""
    run = fetch_run(loader, exported, target_run_id)
    if run is None:
        return PriorState("absent")
    summary = dict(run.summary)
    if summary.get(LOAD_STATE) == "complete" and summary.get(CHECKSUM) == exported.checksum:
        return PriorState("complete")
    last_step = run.lastHistoryStep
    return PriorState("partial", next_step=last_step + 1 if last_step >= 0 else None)


def fork_point(loader, exported: ExportedRun, parent_id: str) -> str | None:
    """W&B fork point of a Neptune fork: the parent's W&B id (`parent_id`) at the fork step in the parent's step scale."""
    import math

    parent = fetch_run(loader, exported, parent_id)
    if parent is None or exported.fork_step is None:
        return None
    multiplier = int(parent.config.get("neptune.step_multiplier") or 1)
    offset = int(parent.config.get("neptune.step_offset") or 0)
    step = math.floor(exported.fork_step * multiplier + 1e-9) + offset
    return f"{parent_id}?_step={max(step, 0)}"

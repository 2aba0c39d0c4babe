"""Offline W&B runs already under --wandb-dir: complete (same export checksum) or to be redone; waiting for the log."""

from __future__ import annotations

import time
from pathlib import Path

from neptune_exporter.errors import TargetUnavailableError
from neptune_exporter.loaders.wandb.online import PriorState
from neptune_exporter.storage.exported_run import PROVENANCE_CHECKSUM, PROVENANCE_LOAD_STATE

LOAD_STATE = PROVENANCE_LOAD_STATE
CHECKSUM = PROVENANCE_CHECKSUM
OFFLINE_LOG_TIMEOUT_SECONDS = 60.0  # for wandb-core to write a finished run's last records
OFFLINE_LOG_POLL_SECONDS = 0.1


def await_offline_log(
    wandb_dir: Path, target_run_id: str, checksum: str, timeout_s: float = OFFLINE_LOG_TIMEOUT_SECONDS
) -> None:
    """Wait until the offline log reads back complete: `run.finish()` can return before wandb-core has written
    the last records, and a run is only loaded once a rerun would find it complete (and skip it)."""
    deadline = time.monotonic() + timeout_s
    while not offline_log_complete(wandb_dir, target_run_id, checksum):
        if time.monotonic() >= deadline:
            raise TargetUnavailableError(
                f"the W&B offline log of run {target_run_id!r} was not complete {timeout_s:g} s after the run finished",
                "load again (the incomplete offline run is redone); check free space under --wandb-dir",
            )
        time.sleep(OFFLINE_LOG_POLL_SECONDS)


def offline_log_complete(wandb_dir: Path, target_run_id: str, checksum: str) -> bool:
    """True when a rerun would skip this run: an offline run of this id finished complete with this checksum."""
    return offline_prior_state(wandb_dir, target_run_id, checksum).state == "complete"


def offline_prior_state(wandb_dir: Path, target_run_id: str, checksum: str) -> PriorState:
    """Offline runs of this id already under the wandb dir: complete (same checksum) or to be redone."""
    from neptune_exporter.storage.wandb_log import find_offline_runs, run_log_path

    folders = find_offline_runs(wandb_dir, target_run_id)
    for folder in reversed(folders):
        log_path = run_log_path(folder)
        if log_path is not None and log_says_complete(log_path, checksum):
            return PriorState("complete", [f for f in folders if f != folder], complete_log=log_path)
    return PriorState("partial" if folders else "absent", folders)


def log_says_complete(log_path: Path, checksum: str) -> bool:
    """The `.wandb` log reached `run.finish()` with load state complete and this export checksum (only the exit
    record and those two summary keys are decoded: history is not, so a large run's log is checked quickly)."""
    from neptune_exporter.storage.wandb_log import read_summary_keys

    finished, summary = read_summary_keys(log_path, (LOAD_STATE, CHECKSUM))
    return finished and summary.get(LOAD_STATE) == "complete" and summary.get(CHECKSUM) == checksum

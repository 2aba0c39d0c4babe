"""A W&B offline load counts as loaded only once its log reads back complete (wandb-core may still be writing)."""

from __future__ import annotations

import pytest

from neptune_exporter.errors import TargetUnavailableError
from neptune_exporter.loaders.wandb import offline as loader


def test_waits_until_the_log_reads_back_complete(monkeypatch, tmp_path):
    answers = iter([False, False, True])
    seen = []

    def log_complete(wandb_dir, run_id, checksum):
        seen.append((wandb_dir, run_id, checksum))
        return next(answers)

    monkeypatch.setattr(loader, "offline_log_complete", log_complete)
    monkeypatch.setattr(loader, "OFFLINE_LOG_POLL_SECONDS", 0.0)
    loader.await_offline_log(tmp_path, "run-1", "abc")
    assert seen == [(tmp_path, "run-1", "abc")] * 3


def test_a_log_that_never_completes_is_a_retryable_error_naming_the_run(tmp_path):
    with pytest.raises(TargetUnavailableError, match="'run-1'.*not complete") as raised:
        loader.await_offline_log(tmp_path, "run-1", "abc", timeout_s=0.2)  # no offline run there at all
    assert raised.value.transient and "load again" in raised.value.remedy

"""flows/fan_out.py without a Prefect server: how the parent judges its chunks (a chunk flow run's end is faked; the
e2e test tests/e2e/test_fan_out.py runs the real thing on two workers)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prefect.client.schemas.objects import StateType

from flows.fan_out import PENDING_PATIENCE, FanOut, LifeSigns
from neptune_exporter.errors import StorageNotSharedError, failure_message
from neptune_exporter.export import ExportOptions
from neptune_exporter.storage.fan_out import Distribution


def plan(run_id: str) -> dict:
    return {"run": {"project_id": "ws/p", "run_id": run_id, "sys_id": run_id.upper()}, "action": "full", "reason": ""}


def ended(state_type: StateType, message: str) -> SimpleNamespace:
    """A chunk flow run as the API shows it once it ended."""
    return SimpleNamespace(
        name="c0001 attempt 1: 2 run(s)", state=SimpleNamespace(type=state_type, name="x", message=message)
    )


@pytest.fixture
def fan(tmp_path, monkeypatch) -> FanOut:
    monkeypatch.setenv("NEPTUNE_EXPORTER_RETRY_BACKOFF_SECONDS", "0")
    monkeypatch.setenv("NEPTUNE_EXPORTER_RETRY_ATTEMPTS", "3")
    options = ExportOptions(projects=("ws/p",), data_path=str(tmp_path / "data"), files_path=str(tmp_path / "files"))
    return FanOut(options, Distribution("pool-a"), lambda result: None)


def errors_of(fan: FanOut) -> dict[str, tuple[str, str, str]]:
    return {
        key: (result["status"], result["errors"][0]["error_type"], result["errors"][0]["message"])
        for key, result in fan.results.items()
    }


def test_a_chunk_its_own_code_failed_fails_its_runs_and_no_chunk_starts_after_it(fan):
    line = failure_message(
        StorageNotSharedError(
            "the data path /d is not shared storage: ...", "mount the same shared storage"
        ).to_record()
    )
    attempts = []

    def attempt(chunk, plans, number):
        attempts.append((chunk, number))
        if fan.refused is None:
            fan.judge(ended(StateType.FAILED, line), chunk, plans)
        return FanOut.attempt(fan, chunk, plans, number)

    fan.attempt = attempt  # type: ignore[method-assign]
    fan.run_chunk("c0001", [plan("a"), plan("b")])
    fan.run_chunk("c0002", [plan("c")])
    assert attempts == [("c0001", 1), ("c0002", 1)]  # a terminal failure is not retried
    message = "the data path /d is not shared storage: ... (chunk c0001, flow run 'c0001 attempt 1: 2 run(s)')"
    assert errors_of(fan) == {
        "ws/p/a": ("failed", "StorageNotSharedError", message),
        "ws/p/b": ("failed", "StorageNotSharedError", message),
        "ws/p/c": ("failed", "StorageNotSharedError", message),
    }
    assert fan.results["ws/p/c"]["errors"][0]["remedy"] == "mount the same shared storage"


def test_a_lost_chunk_is_retried_under_the_policy_and_its_runs_fail_when_the_attempts_are_spent(fan):
    attempts = []

    def lost(chunk, plans, number):
        attempts.append(number)
        fan.judge(ended(StateType.CRASHED, "worker killed"), chunk, plans)

    fan.attempt = lost  # type: ignore[method-assign]
    fan.run_chunk("c0001", [plan("a")])
    assert attempts == [1, 2, 3]
    assert errors_of(fan) == {
        "ws/p/a": (
            "failed",
            "ChunkLostError",
            "chunk c0001: flow run 'c0001 attempt 1: 2 run(s)' ended x with 1 of 1 run(s) not done: worker killed",
        )
    }


def test_a_chunk_that_ended_with_every_run_done_is_done_whatever_its_state():
    fan = FanOut.__new__(FanOut)
    fan.results = {"ws/p/a": {"status": "failed"}}
    assert fan.judge(ended(StateType.FAILED, "1 of 1 runs failed"), "c0001", [plan("a")]) is None


def test_a_run_is_lost_when_its_heartbeat_stands_still_while_it_runs_and_never_while_it_waits_for_a_worker():
    signs = LifeSigns(30)
    assert signs.silent_for_too_long(StateType.SCHEDULED, None) is None
    signs.since -= 10_000  # however long it waits for a free worker
    assert signs.silent_for_too_long(StateType.SCHEDULED, None) is None
    assert signs.silent_for_too_long(StateType.PENDING, None) is None  # a worker took it: the clock starts
    signs.since -= 30 * PENDING_PATIENCE - 5
    assert signs.silent_for_too_long(StateType.PENDING, None) is None
    signs.since -= 10
    assert signs.silent_for_too_long(StateType.PENDING, None) == (
        "stayed pending for 150 s (its worker never started it)"
    )
    assert signs.silent_for_too_long(StateType.RUNNING, '{"beat": 1}') is None
    signs.since -= 25
    assert signs.silent_for_too_long(StateType.RUNNING, '{"beat": 2}') is None  # a beat: the clock restarts
    signs.since -= 31
    assert signs.silent_for_too_long(StateType.RUNNING, '{"beat": 2}') == (
        "gave no sign of life for 30 s (its worker or process is gone)"
    )

"""flows/runtime.py: chunk subflows run without heartbeats, their parent keeps its own; run_in_process returns results."""

from __future__ import annotations

import pytest
from prefect import flow
from prefect.settings import get_current_settings

from flows.runtime import run_in_process, run_subflow


@flow(name="heartbeat-probe")
def heartbeat_probe() -> int | None:
    return get_current_settings().flows.heartbeat_frequency


@flow(name="heartbeat-parent")
def heartbeat_parent() -> dict:
    return {
        "parent": get_current_settings().flows.heartbeat_frequency,
        "chunk": run_subflow(heartbeat_probe),
        "after": get_current_settings().flows.heartbeat_frequency,
    }


@flow(name="failing-flow")
def failing_flow(message: str) -> None:
    raise ValueError(message)


def test_chunk_subflow_has_no_heartbeat_while_the_parent_keeps_its_own(prefect_harness):
    default = get_current_settings().flows.heartbeat_frequency
    assert default is not None  # Prefect's default (180 s) is on
    frequencies = run_in_process(heartbeat_parent)  # this process started no local server: heartbeats stay on
    assert frequencies == {"parent": default, "chunk": None, "after": default}


def test_run_in_process_reraises_the_flows_error(prefect_harness):
    with pytest.raises(ValueError, match="bad options"):
        run_in_process(failing_flow, message="bad options")


def test_a_run_on_the_processs_own_local_server_sends_no_heartbeats(prefect_harness, monkeypatch):
    from neptune_exporter import prefect_env

    monkeypatch.setattr(prefect_env, "runs_on_local_server", lambda: True)  # the server dies with this process
    assert run_in_process(heartbeat_parent) == {"parent": None, "chunk": None, "after": None}

"""flows/guard.py against the session's Prefect test server: a run is Skipped while another writes to its data path,
or when a newer one already ran; other data paths and skipped runs do not count."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.filters import EventFilter, EventIDFilter
from prefect.states import Completed, Running, Scheduled

from flows.guard import HEARTBEAT, SKIPPED, skip_if_data_path_busy
from neptune_exporter.storage import lock

PROBE = "guard-probe"
SILENCE_S = 10  # NEPTUNE_EXPORTER_DEAD_RUN_AFTER_S in the test (Prefect's own beat: every 180 s, judged after 540 s)


@flow(name=PROBE)
def probe(paths: dict):
    """Stands for the export flow: the guard first, then the work (here: nothing)."""
    return skip_if_data_path_busy(paths["data_path"]) or {"exported": paths["data_path"]}


def other_run(data_path: str, *states, scheduled: datetime | None = None):
    """A run of the probe flow for `data_path` taken through `states` (as another process would)."""
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(
            probe,
            parameters={"paths": {"data_path": data_path}},
            state=Scheduled(scheduled_time=scheduled or datetime.now(UTC)),
        )
        for state in states:
            client.set_flow_run_state(run.id, state, force=True)
        return client.read_flow_run(run.id)


def test_a_run_is_skipped_while_another_writes_to_its_data_path_only(prefect_harness, tmp_path):
    busy, free = str(tmp_path / "busy"), str(tmp_path / "free")
    writer = other_run(busy, Running())
    other_run(free + "-elsewhere", Running())
    skipped = probe({"data_path": busy}, return_state=True)
    assert skipped.is_completed() and skipped.name == SKIPPED
    assert f"export flow run {writer.name!r} ({writer.id}) is writing to {busy} since" in skipped.message
    assert skipped.result() == {"skipped": skipped.message}
    assert probe({"data_path": free}) == {"exported": free}


def test_an_overdue_run_is_skipped_once_a_newer_one_ran_but_not_for_a_skipped_one(prefect_harness, tmp_path):
    data = str(tmp_path / "data")
    in_a_minute = datetime.now(UTC) + timedelta(minutes=1)
    other_run(data, Running(), Completed(name=SKIPPED), scheduled=in_a_minute)  # skipped: did not run
    assert probe({"data_path": data}) == {"exported": data}
    newer = other_run(data, Running(), Completed(), scheduled=in_a_minute + timedelta(minutes=1))
    late = probe({"data_path": data}, return_state=True)
    assert late.name == SKIPPED and f"a newer export of {data}, flow run {newer.name!r}" in late.message
    assert "would run out of order" in late.message


def heartbeat(run_id, occurred: datetime) -> None:
    """A `prefect.flow-run.heartbeat` event of the run, as its engine sends one; returns once the API can read it."""
    event_id = uuid.uuid4()
    event = {
        "id": str(event_id),
        "occurred": occurred.isoformat(),
        "event": HEARTBEAT,
        "resource": {"prefect.resource.id": f"prefect.flow-run.{run_id}"},
    }
    with get_client(sync_client=True) as client:
        client.request("POST", "/events", json=[event])
        deadline = time.monotonic() + 60
        while not client.read_events(filter=EventFilter(id=EventIDFilter(id=[event_id])), limit=1).events:
            assert time.monotonic() < deadline, "the heartbeat event was never stored"
            time.sleep(0.5)


def test_a_running_run_without_heartbeats_is_marked_crashed_and_one_that_beats_still_blocks(
    prefect_harness, tmp_path, monkeypatch
):
    monkeypatch.setenv("NEPTUNE_EXPORTER_DEAD_RUN_AFTER_S", str(SILENCE_S))
    data = str(tmp_path / "data")
    beating, dead = other_run(data, Running()), other_run(data, Running())
    started = time.monotonic()
    while time.monotonic() - started < SILENCE_S + 1:  # only one of them beats, as a live process's engine does
        heartbeat(beating.id, datetime.now(UTC))
    blocked = probe({"data_path": data}, return_state=True)
    assert blocked.name == SKIPPED and f"export flow run {beating.name!r}" in blocked.message
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(beating.id).state.type == StateType.RUNNING
        state = client.read_flow_run(dead.id).state
    assert state.type == StateType.CRASHED and state.message.startswith(
        f"no heartbeat since {dead.start_time:%Y-%m-%d %H:%M:%S %Z} ({SILENCE_S} s without one): its process is gone; marked "
        f"crashed by flow run "
    )

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(beating.id, Completed(), force=True)
    assert probe({"data_path": data}) == {"exported": data}  # nothing Running any more


def test_a_silent_run_is_not_called_dead_while_a_process_holds_its_data_paths_lock(
    prefect_harness, tmp_path, monkeypatch
):
    """A server that keeps no events (its event store off) has no heartbeats: the lock shows the export lives."""
    monkeypatch.setenv("NEPTUNE_EXPORTER_DEAD_RUN_AFTER_S", "1")
    data = tmp_path / "data"
    writing = other_run(str(data), Running())
    time.sleep(2)
    with lock.hold(data / lock.EXPORT_LOCK, "export"):
        assert probe({"data_path": str(data)}, return_state=True).name == SKIPPED
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(writing.id).state.type == StateType.RUNNING
    assert probe({"data_path": str(data)}) == {"exported": str(data)}  # the lock gone and no beat: dead
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(writing.id).state.type == StateType.CRASHED

"""flows/guard.py against the session's Prefect test server: a run is Skipped while another writes to its data path,
or when a newer one already ran; other data paths and skipped runs do not count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.states import Completed, Running, Scheduled

from flows.guard import SKIPPED, skip_if_data_path_busy

PROBE = "guard-probe"


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

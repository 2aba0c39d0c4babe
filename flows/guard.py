"""One export at a time per data path, in schedule order: a run that would overlap or overtake another is Skipped.

The export flow calls `skip_if_data_path_busy` first. It reads, through the Prefect API, the other runs of the same
flow whose `paths.data_path` is this run's, and returns a state named "Skipped" (the flow returns it) when

- another one is Running and entered Running before this one (it writes there now: never two writers), or
- one expected to start later than this one (a newer scheduled run) already ran: an overdue run never runs after a
  newer one, so runs that do run always run in schedule order.

Otherwise it returns None and the export goes on. "Skipped" is of type COMPLETED (as Prefect's own "Cached"): the
run did what it should, nothing; a Cancelled or Failed final state makes Prefect 3.9.1's deployment entry point log
it as an ERROR with a traceback ("Engine execution exited with unexpected exception ... CancelledRun"). Its result
is `{"skipped": message}`.

A run that died without ending (its process killed, still Running in the API) would block the data path forever.
Every Prefect flow run sends a heartbeat event (`prefect.flow-run.heartbeat`, every PREFECT_FLOWS_HEARTBEAT_FREQUENCY
seconds, 180 by default): a Running run whose last heartbeat (or its entry into Running) is older than three beat
intervals (or NEPTUNE_EXPORTER_DEAD_RUN_AFTER_S), while no process holds the data path's lock, is dead. The guard
marks it Crashed (its state message and this run's log say why) and goes on; with heartbeats turned off it never
judges, and such a run blocks until it is cancelled. (A server whose event store is off keeps no heartbeat: the
lock still keeps a live export that writes from being called dead.)

Under the guard, the data path's lock file is the process-level truth (`neptune_exporter/storage/lock.py`, held by
the flow through `export.export_lock`): whatever the API says, only the process holding `<data>/.neptune-exporter.lock`
writes there. The guard keeps scheduled runs in order and apart without touching the disk; the lock also stops what
the guard cannot see (a CLI export, a run on another Prefect server, a run the guard let through on a stale view) and
is released by the kernel when its process dies, however it dies. A flow run that finds the lock held ends
"Skipped" as well (`locked_state`), its message naming the holder, its result `{"locked": message}`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.context import FlowRunContext
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
from prefect.logging import get_run_logger
from prefect.settings import get_current_settings
from prefect.states import Completed, Crashed, State

from neptune_exporter.settings import Settings
from neptune_exporter.storage import lock

SKIPPED = "Skipped"
HEARTBEAT = "prefect.flow-run.heartbeat"
BEATS_MISSED = 3  # heartbeat intervals without one before a Running run counts as dead
RAN = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED]
RUNS_READ = 200


def data_path_of(run: FlowRun) -> str | None:
    """The normalised `paths.data_path` parameter of an export flow run (None when it has none)."""
    path = (run.parameters.get("paths") or {}).get("data_path")
    return os.path.normpath(path) if isinstance(path, str) else None


def started_before(run: FlowRun, other: FlowRun) -> bool:
    """`run` entered Running before `other` (ties broken by id, so exactly one of two goes first)."""
    never = datetime.max.replace(tzinfo=UTC)
    return (run.start_time or never, str(run.id)) < (other.start_time or never, str(other.id))


_ENFORCED: ContextVar[bool] = ContextVar("neptune_exporter_guard_enforced", default=True)


@contextmanager
def not_enforced() -> Iterator[None]:
    """The CLI's own runs: the user's command always runs (a rerun after a kill must resume, not be skipped)."""
    token = _ENFORCED.set(False)
    try:
        yield
    finally:
        _ENFORCED.reset(token)


def skip_if_data_path_busy(data_path: str) -> State | None:
    """A "Skipped" state when another export runs for `data_path` or a newer one already ran; else None."""
    context = FlowRunContext.get()
    if not _ENFORCED.get() or context is None or context.flow_run is None:
        return None
    with get_client(sync_client=True) as client:
        me = client.read_flow_run(context.flow_run.id)
        same_path = [run for run in related_runs(client, context.flow.name, me) if data_path_of(run) == data_path]
        same_path = [run for run in same_path if not crashed_if_dead(client, run, me)]
    reason = skip_reason(me, same_path, data_path)
    return Completed(name=SKIPPED, message=reason, data={"skipped": reason}) if reason else None


def related_runs(client, flow_name: str, me: FlowRun) -> list[FlowRun]:
    """Other runs of this flow that are Running, or that ran and were expected to start after this one."""
    by_flow = FlowFilter(name=FlowFilterName(any_=[flow_name]))
    running = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])))
    newer = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=RAN)),
        expected_start_time=FlowRunFilterExpectedStartTime(after_=me.expected_start_time),
    )
    found = [
        *client.read_flow_runs(flow_filter=by_flow, flow_run_filter=running, limit=RUNS_READ),
        *client.read_flow_runs(flow_filter=by_flow, flow_run_filter=newer, limit=RUNS_READ),
    ]
    return [run for run in found if run.id != me.id and not is_skipped(run)]


def dead_after_s() -> float | None:
    """How long a Running run may go without a heartbeat before it counts as dead (None: heartbeats are off)."""
    configured = Settings.from_env().dead_run_after_s
    if configured > 0:
        return float(configured)
    frequency = get_current_settings().flows.heartbeat_frequency
    return None if frequency is None else BEATS_MISSED * float(max(frequency, 30))


def last_sign_of_life(client, run: FlowRun) -> datetime | None:
    """When the run last said it lives: its latest heartbeat event, or when it entered its state."""
    since = run.start_time or (run.state.timestamp if run.state else None)
    if since is None:
        return None
    beats = client.read_events(
        filter=EventFilter(
            occurred=EventOccurredFilter(since=since),
            event=EventNameFilter(name=[HEARTBEAT]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{run.id}"]),
        ),
        limit=1,
    ).events
    return max([since, *(beat.occurred for beat in beats)])


def crashed_if_dead(client, run: FlowRun, me: FlowRun) -> bool:
    """A Running run that stopped sending heartbeats (its process is gone) is marked Crashed: True when it was."""
    patience = dead_after_s()
    if run.state_type != StateType.RUNNING or patience is None:
        return False
    last = last_sign_of_life(client, run)
    if last is None or (datetime.now(UTC) - last).total_seconds() <= patience:
        return False
    data_path = data_path_of(run)
    if data_path is not None and lock.current_holder(Path(data_path) / lock.EXPORT_LOCK) is not None:
        return False  # a process writes there: alive, whatever its heartbeats say
    message = (
        f"no heartbeat since {last:%Y-%m-%d %H:%M:%S %Z} ({patience:.0f} s without one): its process is gone; "
        f"marked crashed by flow run {me.name!r}, which exports in its place"
    )
    client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    get_run_logger().warning("flow run %r (%s) was still Running with %s", run.name, run.id, message)
    return True


def is_skipped(run: FlowRun) -> bool:
    return run.state is not None and run.state.name == SKIPPED


def skip_reason(me: FlowRun, same_path: list[FlowRun], data_path: str) -> str | None:
    """Why this run must not write to `data_path` now (None when it may)."""
    for run in same_path:
        if run.state_type == StateType.RUNNING and started_before(run, me):
            return (
                f"skipped: export flow run {run.name!r} ({run.id}) is writing to {data_path} since "
                f"{run.start_time:%Y-%m-%d %H:%M:%S %Z}; the next scheduled run picks up what changed"
            )
    for run in same_path:
        if run.state_type in RAN and later(run.expected_start_time, me.expected_start_time):
            return (
                f"skipped: a newer export of {data_path}, flow run {run.name!r} ({run.id}, expected "
                f"{run.expected_start_time:%Y-%m-%d %H:%M:%S %Z}), already ran; this overdue run (expected "
                f"{me.expected_start_time:%Y-%m-%d %H:%M:%S %Z}) would run out of order"
            )
    return None


def locked_state(message: str) -> State:
    """The final state of a flow run that found its folder locked by another export or load: Skipped, with why."""
    return Completed(name=SKIPPED, message=message, data={"locked": message})


def later(time: datetime | None, than: datetime | None) -> bool:
    return time is not None and than is not None and time > than

"""How the flows run: chunk subflows without heartbeats, one in-process entry for the CLI's flows, their results."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.states import State

from flows import guard
from neptune_exporter import prefect_env
from tasks.policy import RunsFailed


class HandledFailureFilter(logging.Filter):
    """Drops the engine's "Engine execution exited with unexpected exception" record of a handled failure.

    Prefect 3.9 runs a deployment's flow with `run_flow(..., error_logger=<flow run logger>)`, which re-raises the
    exception of every Failed final state and logs it with its traceback at ERROR — also when the flow returned
    `Failed` on purpose. For our `RunsFailed` (runs failed or differ; the flow already logged its totals and
    "Finished in state Failed(...)") that record is false, so it is not passed on. Other errors keep it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, RunsFailed)


def quiet_handled_failures() -> None:
    """Install `HandledFailureFilter` on Prefect's flow-run logger (once)."""
    logger = logging.getLogger("prefect.flow_runs")
    if not any(isinstance(f, HandledFailureFilter) for f in logger.filters):
        logger.addFilter(HandledFailureFilter())


quiet_handled_failures()


@contextmanager
def without_heartbeats() -> Iterator[None]:
    """Flow runs started inside send no heartbeats.

    A flow run's heartbeat thread sleeps in 1 s steps and is joined when the run ends, so each flow run lasts up
    to 1 s longer (Prefect 3.9.1). Heartbeats let a server mark a run whose process died as crashed: a chunk
    subflow runs in its parent's process, whose own heartbeat says that, and a local server dies with the
    process it serves.
    """
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def result_of(state: State) -> Any:
    """A finished run's result: its return value, or the result a handled failure (`RunsFailed`) carries.

    Any other failure re-raises its error.
    """
    result = state.result(raise_on_failure=False)
    if isinstance(result, RunsFailed):
        return result.result
    if isinstance(result, BaseException):
        raise result
    return result


def run_subflow(subflow: Callable[..., Any], *args: Any) -> Any:
    """Call a chunk subflow (its parent's heartbeat covers it); its result, also when it ended Failed."""
    with without_heartbeats():
        return result_of(subflow(*args, return_state=True))


def run_in_process(flow_fn: Callable[..., Any], **parameters: Any) -> dict:
    """Run a flow here (PREFECT_API_URL or the local server); its result, also when Failed. Flow errors re-raise."""
    prefect_env.wait_until_ready()  # the local server `prefect_env.warm_up` started, if any
    with without_heartbeats() if prefect_env.runs_on_local_server() else nullcontext():
        with guard.not_enforced():  # the user's own command always runs
            return result_of(flow_fn(**parameters, return_state=True))

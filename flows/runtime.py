"""How the flows run: chunk subflows without heartbeats, per-run tasks dispatched until a stop is requested, one
in-process entry for the CLI's flows (in a thread, so Ctrl-C / SIGTERM reach the CLI's handler), their results."""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

from prefect.futures import PrefectFuture
from prefect.logging.handlers import PrefectConsoleHandler
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.states import State

from flows import guard
from neptune_exporter import interrupt, prefect_env
from tasks.policy import RunsFailed, failed, interrupted

Item = TypeVar("Item")


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


class HandledRunFailureFilter(logging.Filter):
    """Drops the task engine's ERROR "Task run failed with state: Failed(... RunsFailed(...))" of a run failure the
    task handled: a second error record, with an empty traceback ("NoneType: None"), for what the task's state
    already says ("Finished in state Failed('<error> — fix: <remedy>')"). Failures the task did not handle keep it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Task run failed with state: ") and "RunsFailed(" in message)


class TerminalFailureLineFilter(logging.Filter):
    """On the CLI's terminal only: drops a task run's "Finished in state Failed('<error> — fix: <remedy>')", which the
    command prints once as its `failed: PROJECT RUN: ...` line (the Prefect UI keeps the log line), and Prefect's
    "Still processing items: N items remaining..." while the process hands its last events to the server on exit
    (a loaded machine: a line after the command's own last one, about nothing the user can act on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        handled = message.startswith("Finished in state Failed(") and " — fix: " in message
        draining = message.startswith("Still processing items: ") and record.name.endswith("Worker")
        return not ((handled and record.name == "prefect.task_runs") or draining)


class StoppedRunFilter(logging.Filter):
    """Drops Prefect's ERROR "Finished in state Cancelled(...)" of a run stopped on Ctrl-C / SIGTERM: the command says
    one line for all of them, and each state keeps its message in the API."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (interrupt.requested() and record.getMessage().startswith("Finished in state Cancelled"))


def quiet_handled_failures() -> None:
    """Install `HandledFailureFilter` on Prefect's flow-run logger, `HandledRunFailureFilter` on its task-run logger
    and `StoppedRunFilter` on both (once)."""
    for name, kinds in (
        ("prefect.flow_runs", (HandledFailureFilter, StoppedRunFilter)),
        ("prefect.task_runs", (HandledRunFailureFilter, StoppedRunFilter)),
    ):
        logger = logging.getLogger(name)
        for kind in kinds:
            if not any(isinstance(f, kind) for f in logger.filters):
                logger.addFilter(kind())


quiet_handled_failures()


def quiet_terminal_failure_lines() -> None:
    """Install `TerminalFailureLineFilter` on the terminal's Prefect console handlers (once): the CLI's own lines."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
            isinstance(f, TerminalFailureLineFilter) for f in handler.filters
        ):
            handler.addFilter(TerminalFailureLineFilter())


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


def dispatch(
    submit: Callable[[Item], PrefectFuture],
    items: Iterable[Item],
    window: int,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[tuple[PrefectFuture, Item]]:
    """Submit `submit(item)` for the items, at most `window` unfinished at a time (the task runner's workers), and
    yield each (future, item) as it finishes. Once a stop is requested (`interrupt`, or `stop()` says so) no further
    item is submitted: the ones running finish, the rest stay to do."""
    finished: queue.SimpleQueue[tuple[PrefectFuture, Item]] = queue.SimpleQueue()
    pending, running = iter(items), 0

    def submit_next() -> bool:
        item = None if interrupt.requested() or stop() else next(pending, None)
        if item is None:
            return False
        submit(item).add_done_callback(lambda future, item=item: finished.put((future, item)))
        return True

    while running < max(1, window) and submit_next():
        running += 1
    while running:
        done = finished.get()
        running += submit_next() - 1  # the next one starts before this one's result is handled
        yield done


def cut_short(results: list[dict], planned: int) -> bool:
    """True when a stop request left some of the `planned` runs without a result, or stopped one mid-way."""
    return len(results) < planned or any(result.get("status") == interrupt.INTERRUPTED for result in results)


def stopped(summary: dict, complete: int, planned: int) -> State:
    """The Cancelled final state of a flow cut short: the one line the CLI prints as message and in the summary."""
    line = interrupt.message(complete, planned - complete)
    return interrupted(line, {**summary, "interrupted": line})


def refusal(*checks: State) -> State | None:
    """The flow's final state when one of its input checks (`tasks.policy.rejected`) refused: Failed with that
    check's line and `{"rejected": line}` as result; None when every check passed."""
    for check in checks:
        if check.is_failed():
            return failed(check.message or "an input check failed", {"rejected": check.message})
    return None


def run_in_process(flow_fn: Callable[..., Any], **parameters: Any) -> dict:
    """Run a flow here (PREFECT_API_URL or the local server); its result, also when Failed. Flow errors re-raise.

    The flow runs in a worker thread while the main thread waits: run in the main thread, Prefect's engine installs
    its own SIGTERM handler for the flow run (its runner's cancellation); from a worker thread it cannot, so Ctrl-C
    and SIGTERM stay with the CLI's handler (`interrupt`: the flow stops dispatching runs and ends Cancelled)."""
    prefect_env.wait_until_ready()  # the local server `prefect_env.warm_up` started, if any
    quiet_terminal_failure_lines()
    with without_heartbeats() if prefect_env.runs_on_local_server() else nullcontext():
        with guard.not_enforced():  # the user's own command always runs
            return result_of(in_thread(lambda: flow_fn(**parameters, return_state=True)))


def in_thread(call: Callable[[], Any]) -> Any:
    """`call()` in a thread with this context (Prefect settings, the guard), a signal meanwhile a stop request; its
    result or its exception."""
    context, outcome = contextvars.copy_context(), {}

    def target() -> None:
        try:
            outcome["result"] = context.run(call)
        except BaseException as error:  # re-raised below, in the caller's thread
            outcome["error"] = error

    worker = threading.Thread(target=target, name="flow-run")
    interrupt.runs_starting()
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]

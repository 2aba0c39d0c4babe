"""Ctrl-C / SIGTERM of a command as a request to stop: no new run starts, a run in progress ends at a safe point.

`handled` (the CLI, main thread) makes both signals call one handler. During start-up (before the runs are
dispatched) the handler calls `on_startup` (the CLI says one line and exits: nothing was written yet). While
`runs_starting()` (the flow then runs in another thread), the handler only records the request: the
flows stop dispatching, an export in progress abandons its current write at the next batch (`StopBetweenBatches`
raises `Interrupted`, the writer removes its temporary part), a load stops between two requests, and the command
reports and exits 130. Whatever happens, the process ends within GRACE_SECONDS of the first signal: `on_overdue`
(the CLI's hard exit) runs then, or at once on a second signal.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C
GRACE_SECONDS = 8.0
SIGNALS = (signal.SIGINT, signal.SIGTERM)
RERUN = "rerun the same command to continue"
STARTUP_LINE = f"interrupted during start-up: no run started — {RERUN}"  # stopped before any run was dispatched
INTERRUPTED = "interrupted"  # the status of a run stopped before it finished (next to complete / failed / skipped)


class Interrupted(BaseException):
    """Raised inside a run's work once a stop was requested: not an error of the run (so no `except Exception`
    records it as failed); the run is left for the rerun."""


_requested = threading.Event()
_started = threading.Event()  # the runs are (or were) dispatched: a signal no longer ends the process at once
_on_startup: Callable[[], object] | None = None
_on_overdue: Callable[[], object] | None = None
_overdue_timer: threading.Timer | None = None


def requested() -> bool:
    """True once Ctrl-C / SIGTERM asked this process to stop."""
    return _requested.is_set()


def request() -> None:
    """Ask this process to stop as Ctrl-C does while the runs are dispatched (the signal handler's first step)."""
    _requested.set()


def raise_if_requested() -> None:
    """`Interrupted` when a stop was requested: called at points where a run can be abandoned cleanly."""
    if _requested.is_set():
        raise Interrupted("stopped on request")


@contextmanager
def handled(on_startup: Callable[[], object], on_overdue: Callable[[], object]) -> Iterator[None]:
    """Handle SIGINT and SIGTERM in the block (the main thread's; elsewhere nothing changes): `on_startup` ends the
    process on a signal during start-up; `on_overdue` when stopping takes longer than GRACE_SECONDS after the first
    signal, or on a second one. The previous handlers come back after the block."""
    global _on_startup, _on_overdue
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _on_startup, _on_overdue = on_startup, on_overdue
    _started.clear()
    previous = {signum: signal.signal(signum, _handle) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _handle(signum: int, frame: Any) -> None:
    if not _started.is_set():
        _call(_on_startup)
    elif _requested.is_set():  # a second Ctrl-C: stop now
        _call(_on_overdue)
    else:
        request()
        _start_overdue_timer()


def _call(callback: Callable[[], object] | None) -> None:
    if callback is not None:
        callback()


def _start_overdue_timer() -> None:
    global _overdue_timer
    _overdue_timer = threading.Timer(GRACE_SECONDS, _call, args=(_on_overdue,))
    _overdue_timer.daemon = True
    _overdue_timer.start()


def runs_starting() -> None:
    """From now on a signal only records the stop request: the runs in progress end it cleanly."""
    _started.set()


class StopBetweenBatches:
    """A progress sink that raises `Interrupted` between batches once a stop was requested, forwarding the rest."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink

    def on_plan(self, total_runs: int) -> None:
        self.sink.on_plan(total_runs)

    def on_points(self, points: int, bytes_: int) -> None:
        raise_if_requested()
        self.sink.on_points(points, bytes_)

    def on_run_done(self, result: Any) -> None:
        self.sink.on_run_done(result)


def message(complete: int, to_do: int) -> str:
    """The one line an interrupted command prints."""
    return f"interrupted: {complete} runs complete, {to_do} to do — {RERUN}"


def reset() -> None:
    """Forget a stop request (tests; a process that handled one and goes on)."""
    global _overdue_timer
    _requested.clear()
    if _overdue_timer is not None:
        _overdue_timer.cancel()
        _overdue_timer = None

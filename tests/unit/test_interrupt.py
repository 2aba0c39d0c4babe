"""Ctrl-C / SIGTERM handling (neptune_exporter/interrupt.py): start-up ends at once, later a stop request, then overdue."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from neptune_exporter import interrupt
from neptune_exporter.progress import ProgressCounter


@pytest.fixture(autouse=True)
def fresh_state() -> Iterator[None]:
    interrupt.reset()
    yield
    interrupt.reset()


class Calls:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.overdue = threading.Event()

    def startup(self) -> None:
        self.names.append("startup")

    def late(self) -> None:
        self.names.append("overdue")
        self.overdue.set()


@contextmanager
def runs_started(calls: Calls) -> Iterator[None]:
    """The CLI's handling, past start-up."""
    with interrupt.handled(calls.startup, calls.late):
        interrupt.runs_starting()
        yield


def test_a_signal_during_start_up_calls_on_startup_and_requests_nothing():
    calls, before = Calls(), signal.getsignal(signal.SIGINT)
    with interrupt.handled(calls.startup, calls.late):
        os.kill(os.getpid(), signal.SIGINT)
    assert calls.names == ["startup"] and not interrupt.requested()
    assert signal.getsignal(signal.SIGINT) is before  # the previous handler is back


def test_once_runs_start_a_signal_is_a_stop_request_and_a_second_one_is_overdue_at_once(monkeypatch):
    monkeypatch.setattr(interrupt, "GRACE_SECONDS", 3600.0)
    calls = Calls()
    with runs_started(calls):
        os.kill(os.getpid(), signal.SIGTERM)
        assert interrupt.requested() and calls.names == []
        os.kill(os.getpid(), signal.SIGINT)
    assert calls.names == ["overdue"]


def test_a_stop_that_takes_longer_than_the_grace_period_is_overdue(monkeypatch):
    monkeypatch.setattr(interrupt, "GRACE_SECONDS", 0.05)
    calls = Calls()
    with runs_started(calls):
        os.kill(os.getpid(), signal.SIGINT)
        assert calls.overdue.wait(30)
    assert calls.names == ["overdue"]


def test_outside_the_main_thread_handled_changes_nothing():
    seen = []

    def in_worker() -> None:
        with interrupt.handled(lambda: None, lambda: None):
            seen.append(signal.getsignal(signal.SIGINT))

    before = signal.getsignal(signal.SIGINT)
    worker = threading.Thread(target=in_worker)
    worker.start()
    worker.join()
    assert seen == [before]


def test_stop_between_batches_forwards_until_a_stop_is_requested():
    counter = ProgressCounter()
    sink = interrupt.StopBetweenBatches(counter)
    sink.on_plan(2)
    sink.on_points(10, 100)
    interrupt.request()
    with pytest.raises(interrupt.Interrupted):
        sink.on_points(5, 50)
    assert not isinstance(interrupt.Interrupted(), Exception)  # `except Exception` never records it as a failure
    counts = counter.counts()
    assert (counts.total_runs, counts.points, counts.bytes) == (2, 10, 100)
    assert interrupt.message(3, 7) == "interrupted: 3 runs complete, 7 to do — rerun the same command to continue"

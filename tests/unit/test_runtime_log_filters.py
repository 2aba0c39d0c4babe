"""The log filters of flows/runtime.py: what the CLI's terminal drops, and what it keeps."""

from __future__ import annotations

import logging

from flows.runtime import HandledRunFailureFilter, TerminalFailureLineFilter


def record(name: str, message: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_the_terminal_drops_handled_failure_lines_and_the_exit_drain_line_only():
    terminal = TerminalFailureLineFilter()
    handled = "Finished in state Failed('TerminalError: attribute is corrupt — fix: re-log it')"
    assert not terminal.filter(record("prefect.task_runs", handled, logging.ERROR))
    assert terminal.filter(record("prefect.flow_runs", handled, logging.ERROR))  # a flow's final state stays
    assert terminal.filter(record("prefect.task_runs", "Finished in state Failed('boom')", logging.ERROR))
    assert not terminal.filter(record("prefect.EventsWorker", "Still processing items: 3 items remaining..."))
    assert terminal.filter(record("prefect.EventsWorker", "Failed to send events to the server"))
    assert terminal.filter(record("neptune_exporter", "Still processing items: your own words"))


def test_a_handled_run_failure_loses_only_its_second_error_record():
    handled = HandledRunFailureFilter()
    assert not handled.filter(record("prefect.task_runs", "Task run failed with state: Failed(RunsFailed(...))"))
    assert handled.filter(record("prefect.task_runs", "Task run failed with state: Failed(ValueError('x'))"))

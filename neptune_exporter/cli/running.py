"""What every command that runs a flow shares: starting Prefect, and Ctrl-C / SIGTERM in one line (exit 130)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer

from neptune_exporter import interrupt
from neptune_exporter.cli.app import fail
from neptune_exporter.errors import TerminalError

STARTUP_INTERRUPTED = interrupt.STARTUP_LINE
OVERDUE_INTERRUPTED = f"interrupted: stopped without waiting for the runs in progress — {interrupt.RERUN}"
_said: list[str] = []


def say_interrupted(line: str) -> None:
    """The one line of an interrupted command, on stderr (only the first one said)."""
    if not _said:
        _said.append(line)
        typer.echo(line, err=True)


def exit_at_once(line: str) -> NoReturn:
    """Say `line` (unless a line was said) and end the process now, whatever threads still wait (the local Prefect
    server stops by itself when this process is gone)."""
    say_interrupted(line)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(interrupt.EXIT_INTERRUPTED)


@contextmanager
def stops_on_interrupt() -> Iterator[None]:
    """Ctrl-C / SIGTERM in the block: during start-up one line and exit 130 at once; once the runs are dispatched the
    flow stops them (`interrupt`) and the command says how far it got; either way the process ends within
    interrupt.GRACE_SECONDS."""
    _said.clear()
    with interrupt.handled(
        on_startup=lambda: exit_at_once(STARTUP_INTERRUPTED), on_overdue=lambda: exit_at_once(OVERDUE_INTERRUPTED)
    ):
        yield


def start_prefect(*modules: str) -> None:
    """A usable PREFECT_HOME (else one line, exit 2), then Prefect's server starting and `modules` importing in the
    background (`prefect_env.warm_up`)."""
    from neptune_exporter.prefect_env import check_prefect_home, warm_up

    try:
        check_prefect_home()
    except TerminalError as error:
        raise fail(error) from None
    warm_up(*modules)


def import_in_background(*modules: str) -> None:
    """Import `modules` on a thread while this one goes on (after `start_prefect`; its `wait_ready` waits for them)."""
    from neptune_exporter.prefect_env import warm_up

    warm_up().import_in_background(*modules)

"""The `neptune-exporter` console script: Ctrl-C or SIGTERM while the CLI still loads ends it in one line (exit 130)."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from neptune_exporter import interrupt


def _stop_while_loading(signum: int, frame: Any) -> None:
    sys.stderr.write(interrupt.STARTUP_LINE + "\n")
    sys.stderr.flush()
    os._exit(interrupt.EXIT_INTERRUPTED)


def main() -> None:
    """Load the CLI with a one-line stop on Ctrl-C / SIGTERM (no KeyboardInterrupt traceback from an import), then run
    it; each command handles the signals itself from its start-up on (cli/running.py)."""
    previous = {signum: signal.signal(signum, _stop_while_loading) for signum in interrupt.SIGNALS}
    from neptune_exporter.cli import main as cli_main  # typer, the commands and their options: about a second

    for signum, handler in previous.items():
        signal.signal(signum, handler)
    cli_main()

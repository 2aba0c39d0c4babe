"""The `neptune-exporter` Typer app, its exit codes, the one-line failure every command prints on bad input, and
the lines of failed runs."""

from __future__ import annotations

import typer

from neptune_exporter.errors import NeptuneExporterError, failure_message

app = typer.Typer(
    name="neptune-exporter",
    help="Export Neptune runs to Parquet + files, load them into MLflow / W&B, and validate nothing was lost.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def cli() -> None:
    """Export Neptune runs to Parquet + files, load them into MLflow / W&B, and validate nothing was lost."""


EXIT_RUNS_FAILED = 1


EXIT_BAD_INPUT = 2


EXIT_LOCKED = 3  # another export of the data path (or load of the export into the target) holds its lock


def fail(error: NeptuneExporterError | str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ONE line naming the problem and its fix on stderr; return the Exit to raise."""
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(code)


def print_failures(failures: list[dict], shown: int = 10) -> None:
    """`failed: PROJECT RUN: ErrorType: message — fix: remedy` on stderr for the first `shown` failed runs."""
    for failure in failures[:shown]:
        typer.echo(f"failed: {failure['project_id']} {failure['run_id']}: {failure_message(failure)}", err=True)

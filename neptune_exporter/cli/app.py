"""The `neptune-exporter` Typer app, its exit codes and the one-line failure every command prints on bad input."""

from __future__ import annotations

import typer

from neptune_exporter.errors import NeptuneExporterError

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


def fail(error: NeptuneExporterError | str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ONE line naming the problem and its fix on stderr; return the Exit to raise."""
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(code)

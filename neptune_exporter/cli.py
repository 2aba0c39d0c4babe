"""`neptune-exporter` command line: export, load, validate, migrate, summary, serve, fake-neptune, demo."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="neptune-exporter",
    help="Export Neptune runs to Parquet + files, load them into MLflow / W&B, and validate nothing was lost.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()

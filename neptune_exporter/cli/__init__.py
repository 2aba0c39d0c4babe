"""`neptune-exporter` command line: export, summary, load, validate, serve, fake-neptune, fake-wandb, demo.

Modules: `app` (the Typer app, exit codes, failures), `options` (option types and their parsing), one module per
command group; importing them registers the commands on `app` in this order (the order `--help` lists them).
"""

# Importing a command module registers its commands on `app`; `--help` lists them in this order.
# isort: off
from neptune_exporter.cli.app import EXIT_BAD_INPUT, EXIT_LOCKED, EXIT_RUNS_FAILED, app, fail, print_failures
from neptune_exporter.cli.export_command import export, print_export_summary, run_export_command, run_export_flow
from neptune_exporter.cli.schedule_command import schedule
from neptune_exporter.cli.summary_command import summary
from neptune_exporter.cli.load_commands import load, run_load_command, run_load_summary, validate
from neptune_exporter.cli.serve_commands import demo, fake_neptune, fake_wandb, serve

# isort: on
from neptune_exporter.cli.options import (
    attribute_selection,
    build_export_options,
    build_load_options,
    export_options_from,
    parse_datetime,
    parse_kind_option,
)
from neptune_exporter.process_memory import bound_allocators


def main() -> None:
    """Console-script entry point."""
    bound_allocators()
    app()


__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_LOCKED",
    "EXIT_RUNS_FAILED",
    "app",
    "attribute_selection",
    "build_export_options",
    "build_load_options",
    "demo",
    "export",
    "export_options_from",
    "fail",
    "fake_neptune",
    "fake_wandb",
    "load",
    "main",
    "parse_datetime",
    "parse_kind_option",
    "print_export_summary",
    "print_failures",
    "run_export_command",
    "run_export_flow",
    "run_load_command",
    "run_load_summary",
    "schedule",
    "serve",
    "summary",
    "validate",
]

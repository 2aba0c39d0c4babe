"""`neptune-exporter validate --against neptune3|neptune2`: the export compared with the live Neptune server."""

from __future__ import annotations

import os

import typer

from neptune_exporter import interrupt
from neptune_exporter.cli.app import EXIT_RUNS_FAILED, fail
from neptune_exporter.cli.options import run_selection_from
from neptune_exporter.cli.running import say_interrupted, start_prefect, stops_on_interrupt
from neptune_exporter.errors import NeptuneExporterError
from neptune_exporter.settings import neptune_api_token


def audit_options(values: dict, api_token: str | None):
    """The audit's options from the `validate` command's values; the runs selected with export's own options and
    rules (bad input: one line, exit 2)."""
    from neptune_exporter.validation.source_audit import AuditOptions, check_audit_options, reader_class

    try:
        options = AuditOptions(
            against=values["against"],
            data_path=str(values["data_path"]),
            files_path=str(values["files_path"]),
            projects=tuple(values["project"] or ()),
            runs=run_selection_from(values),
            report_path=None if values["report_path"] is None else str(values["report_path"]),
            deep=values["deep"],
            api_token=neptune_api_token(api_token),
        )
        reader_class(options.against)
        check_audit_options(options)
    except NeptuneExporterError as error:
        raise fail(error) from None
    return options


def run_source_validation(options) -> int:
    """Preflight, the validate-source flow in this process, the verdict; exit 1 on a difference."""
    from neptune_exporter.prefect_env import configure_prefect

    if options.api_token:
        os.environ["NEPTUNE_API_TOKEN"] = options.api_token  # the flow reads it from the process environment
    with stops_on_interrupt():
        start_prefect("flows.validate_source")
        configure_prefect()
        from flows.runtime import run_in_process
        from flows.validate_source import validate_source

        summary = run_in_process(validate_source, options=options.to_json())
        if "interrupted" in summary:
            say_interrupted(summary["interrupted"])
            return interrupt.EXIT_INTERRUPTED
    if "rejected" in summary:
        raise fail(summary["rejected"])
    typer.echo(
        f"validation against the {summary['target']} server: {summary['runs_checked']} run(s) checked, "
        f"{summary['verdict']}"
    )
    for note in summary["not_compared"]:
        typer.echo(f"not compared: {note}")
    for run in summary["not_validated"][:10]:
        typer.echo(f"not validated: {run['project_id']} {run['run_id']}: {run.get('message')}", err=True)
    typer.echo(f"report: {summary['report_markdown']}  (JSON: {summary['report_json']})")
    return EXIT_RUNS_FAILED if summary["runs_with_differences"] else 0

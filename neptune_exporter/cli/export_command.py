"""`neptune-exporter export`: preflight, then the export flow in this process, and a short summary."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from neptune_exporter import interrupt
from neptune_exporter.cli.app import EXIT_LOCKED, EXIT_RUNS_FAILED, app, fail, print_failures
from neptune_exporter.cli.options import (
    ArchivedOpt,
    AttributeOpt,
    AttributesOpt,
    ChunkRunsOpt,
    DataPathOpt,
    DistributeOpt,
    ExcludeKindsOpt,
    ExcludeProjectsOpt,
    ExperimentsOpt,
    ExportWorkersOpt,
    FilesPathOpt,
    IfLockedOpt,
    IncludeKindsOpt,
    IncludeProjectsOpt,
    MaxParallelOpt,
    ModelsOpt,
    ModifiedAfterOpt,
    PreviewsOpt,
    ProcessesOpt,
    ProjectOpt,
    QueryOpt,
    RunsRegexOpt,
    SourceOpt,
    WhereOpt,
    WorkPoolOpt,
    WorkspaceOpt,
    distribution,
    export_options_from,
)
from neptune_exporter.cli.running import import_in_background, say_interrupted, start_prefect, stops_on_interrupt
from neptune_exporter.errors import TerminalError
from neptune_exporter.settings import Settings, neptune_api_token
from neptune_exporter.storage.lock import check_if_locked

if TYPE_CHECKING:
    from neptune_exporter.export import ExportOptions


@app.command()
def export(
    source: SourceOpt = "neptune3",
    project: ProjectOpt = None,
    workspace: WorkspaceOpt = None,
    include_projects: IncludeProjectsOpt = None,
    exclude_projects: ExcludeProjectsOpt = None,
    data_path: DataPathOpt = Path("./exports/data"),
    files_path: FilesPathOpt = Path("./exports/files"),
    api_token: Annotated[
        str | None, typer.Option(help="Neptune API token; default NEPTUNE_API_TOKEN.", show_default=False)
    ] = None,
    runs: RunsRegexOpt = None,
    experiments: ExperimentsOpt = None,
    where: WhereOpt = None,
    query: QueryOpt = None,
    modified_after: ModifiedAfterOpt = None,
    include_archived: ArchivedOpt = False,
    include_models: ModelsOpt = False,
    attributes: AttributesOpt = None,
    attribute: AttributeOpt = None,
    include: IncludeKindsOpt = None,
    exclude: ExcludeKindsOpt = None,
    include_previews: PreviewsOpt = False,
    workers: ExportWorkersOpt = 4,
    processes: ProcessesOpt = None,
    if_locked: IfLockedOpt = "stop",
    distribute: DistributeOpt = False,
    work_pool: WorkPoolOpt = None,
    chunk_runs: ChunkRunsOpt = 100,
    max_parallel: MaxParallelOpt = 4,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Export runs to Parquet + files (resumable, incremental); exit 1 when any run failed, 3 when the data path is
    locked by another export."""
    try:
        options = export_options_from(locals(), neptune_api_token(api_token))
        check_if_locked(if_locked)
        spread = distribution(distribute, work_pool, chunk_runs, max_parallel)
    except TerminalError as error:
        raise fail(error) from None
    raise typer.Exit(run_export_command(options, no_progress=no_progress, if_locked=if_locked, distribute=spread))


def run_export_command(
    options: ExportOptions, *, no_progress: bool = False, if_locked: str = "stop", distribute: dict | None = None
) -> int:
    """Preflight (bad input → one line, exit 2), then the export flow in-process; the exit status."""
    with stops_on_interrupt():
        summary = preflight_and_export(options, no_progress, if_locked, distribute)
        if "interrupted" in summary:
            say_interrupted(summary["interrupted"])
            return interrupt.EXIT_INTERRUPTED
    if "locked" in summary:  # another export holds the data path's lock (storage/lock.py)
        raise fail(summary["locked"], EXIT_LOCKED)
    if "rejected" in summary:  # the flow's own preflight refused what ours passed (the source changed in between)
        raise fail(summary["rejected"])
    if "skipped" in summary:  # another export writes to this data path now (flows/guard.py)
        raise fail(summary["skipped"], EXIT_RUNS_FAILED)
    print_export_summary(summary)
    return EXIT_RUNS_FAILED if summary["runs_failed"] else 0


def preflight_and_export(
    options: ExportOptions, no_progress: bool, if_locked: str = "stop", distribute: dict | None = None
) -> dict:
    """Preflight (bad input → one line, exit 2), then the export flow's summary."""
    from neptune_exporter.export import make_source, preflight

    start_prefect()  # Prefect's server starts while the Neptune client loads and preflight runs
    settings = Settings.from_env()
    try:
        source = make_source(options, settings)
        import_in_background("flows.export")  # after the client's import: the first Neptune request goes out first
        preflight(options, source)
    except TerminalError as error:
        raise fail(error) from None
    if options.api_token:
        os.environ["NEPTUNE_API_TOKEN"] = options.api_token  # the flow reads it from the process environment
    try:
        return run_export_flow(options, no_progress=no_progress, if_locked=if_locked, distribute=distribute)
    except TerminalError as error:
        raise fail(error) from None


def run_export_flow(
    options: ExportOptions, *, no_progress: bool = False, if_locked: str = "stop", distribute: dict | None = None
) -> dict:
    """Run flows/export.py:export in this process (PREFECT_API_URL or ephemeral mode) with a terminal bar."""
    from neptune_exporter import progress
    from neptune_exporter.prefect_env import configure_prefect

    configure_prefect()
    from flows.export import run_export_in_process

    with progress.terminal_bar("exporting", no_progress):
        return run_export_in_process(options, if_locked, distribute)


def print_export_summary(summary: dict) -> None:
    """A few lines: runs by status, points, bytes, where the data and error report are."""
    typer.echo(
        f"runs: {summary['runs_complete']} exported, {summary['runs_skipped']} unchanged, "
        f"{summary['runs_failed']} failed · {summary['points']:,} points · {summary['files']:,} files · "
        f"{summary['bytes']:,} bytes"
    )
    typer.echo(f"data: {summary['data_path']}  files: {summary['files_path']}")
    print_failures(summary.get("failures", []))
    if summary.get("error_reports"):
        typer.echo(f"error report: {', '.join(summary['error_reports'])}", err=True)

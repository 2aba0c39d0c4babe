"""`neptune-exporter schedule`: scheduled incremental exports on the Prefect server that `serve` runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neptune_exporter.cli.app import app, fail
from neptune_exporter.cli.options import (
    ArchivedOpt,
    AttributeOpt,
    AttributesOpt,
    DataPathOpt,
    ExcludeKindsOpt,
    ExcludeProjectsOpt,
    ExperimentsOpt,
    ExportWorkersOpt,
    FilesPathOpt,
    IncludeKindsOpt,
    IncludeProjectsOpt,
    ModelsOpt,
    ModifiedAfterOpt,
    PreviewsOpt,
    ProcessesOpt,
    ProjectOpt,
    QueryOpt,
    RunsRegexOpt,
    SourceOpt,
    WhereOpt,
    WorkspaceOpt,
    export_options_from,
)
from neptune_exporter.errors import InvalidOptionError, TerminalError


@app.command()
def schedule(
    name: Annotated[
        str | None, typer.Argument(help="Schedule name (its slug on the deployment), e.g. nightly.")
    ] = None,
    cron: Annotated[str | None, typer.Option(help="When to run, as a cron expression, e.g. '0 2 * * *'.")] = None,
    interval: Annotated[float | None, typer.Option(help="Or: seconds between runs.")] = None,
    timezone_name: Annotated[
        str | None, typer.Option("--timezone", help="IANA time zone of the schedule (default UTC).")
    ] = None,
    list_schedules: Annotated[
        bool, typer.Option("--list", help="Show every export schedule, its parameters and next runs.")
    ] = False,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the schedule NAME.")] = False,
    source: SourceOpt = "neptune3",
    project: ProjectOpt = None,
    workspace: WorkspaceOpt = None,
    include_projects: IncludeProjectsOpt = None,
    exclude_projects: ExcludeProjectsOpt = None,
    data_path: DataPathOpt = Path("./exports/data"),
    files_path: FilesPathOpt = Path("./exports/files"),
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
) -> None:
    """Create or update a scheduled incremental export on the Prefect server (PREFECT_API_URL) that `serve` runs.

    The schedule NAME of deployment export/<source> runs with these options as its parameters (paths made absolute
    here); `--list` shows the schedules, `NAME --delete` removes one. The token stays in the serving process.
    """
    from neptune_exporter.prefect_env import configure_prefect

    configure_prefect()
    try:
        from deployments import schedules

        schedules.require_api_url()
        if list_schedules:
            found = schedules.list_all()
            typer.echo("\n".join(line for item in found for line in item.lines()) or "no export schedules")
            return
        if not name:
            raise InvalidOptionError(
                "no schedule name given", "pass a name, e.g. `neptune-exporter schedule nightly ...`, or --list"
            )
        schedules.check_name(name)
        if delete:
            removed = schedules.remove(name, source)
            typer.echo(f"schedule {name!r} of export/{source} " + ("deleted" if removed else "did not exist"))
            return
        when = schedules.schedule_of(cron, interval, timezone_name)
        options = export_options_from(locals(), api_token=None)
        from flows.export import flow_parameters

        stored = schedules.upsert(name, source, flow_parameters(options), when)
    except TerminalError as error:
        raise fail(error) from None
    typer.echo("\n".join(stored.lines()))

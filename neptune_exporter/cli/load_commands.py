"""`neptune-exporter load` and `validate`: preflight, the load / validate flow in this process, a short summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from neptune_exporter import interrupt
from neptune_exporter.cli.app import EXIT_LOCKED, EXIT_RUNS_FAILED, app, fail, print_failures
from neptune_exporter.cli.options import (
    ArchivedOpt,
    ChunkRunsOpt,
    CometDirOpt,
    CometProjectOpt,
    CometWorkspaceOpt,
    DataPathOpt,
    DistributeOpt,
    ExperimentsOpt,
    FilesPathOpt,
    GoodseedHomeOpt,
    GoodseedProjectOpt,
    IfLockedOpt,
    LoadProjectOpt,
    MaxParallelOpt,
    ModifiedAfterOpt,
    MultiplierOpt,
    NoProgressOpt,
    QueryOpt,
    ReportPathOpt,
    RunsOpt,
    TargetOpt,
    TemplateOpt,
    TrackingUriOpt,
    WandbDirOpt,
    WandbEntityOpt,
    WandbProjectOpt,
    WhereOpt,
    WorkersOpt,
    WorkPoolOpt,
    ZenmlDirOpt,
    ZenmlModelOpt,
    distribution,
    load_options_or_exit,
)
from neptune_exporter.cli.running import say_interrupted, start_prefect, stops_on_interrupt
from neptune_exporter.errors import InvalidOptionError, NeptuneExporterError, TerminalError
from neptune_exporter.settings import Settings


def preflight_load(options, reports: bool = True) -> int:
    """Export folder present, runs selected, the report folder writable (when `reports`), target reachable; one
    clear line and exit 2 otherwise. Runs found."""
    from neptune_exporter.export import check_writable
    from neptune_exporter.load import check_target, make_loader, report_dir, select_runs

    try:
        # Local checks first: nothing is created in the target on bad input, and nothing runs in the background yet
        # (a command that exits while the warm-up thread imports can abort: "FATAL: exception not rethrown").
        selected = len(select_runs(options))
        if reports:
            check_writable(report_dir(options), "--report-path")
        start_prefect("flows.load")  # Prefect's server starts and the flows import while the target is checked
        loader = make_loader(options, Settings.from_env())
        check_target(loader)
        return selected
    except NeptuneExporterError as error:
        raise fail(error) from None


def run_load_flow(flow_name: str, options, no_progress: bool, **parameters: Any) -> dict:
    """Run flows/load.py:load or flows/validate.py:validate in this process, with a terminal bar."""
    from neptune_exporter import progress
    from neptune_exporter.prefect_env import configure_prefect

    configure_prefect()
    from flows.load import load as load_flow
    from flows.runtime import run_in_process
    from flows.validate import validate as validate_flow

    flow_fn = load_flow if flow_name == "load" else validate_flow
    with progress.terminal_bar("loading", no_progress or flow_name != "load"):
        try:
            summary = run_in_process(flow_fn, options=options.to_json(), **parameters)
        except NeptuneExporterError as error:
            raise fail(error) from None
    if "rejected" in summary:  # the flow's own check refused what ours passed (the export or target changed between)
        raise fail(summary["rejected"])
    return summary


def print_validation(summary: dict) -> None:
    """The verdict, each run that could not be validated (its error and fix, on stderr), where the report is."""
    typer.echo(
        f"validation against {summary['target']}: {summary['runs_checked']} run(s) checked, {summary['verdict']}"
    )
    for run in summary["not_validated"][:10]:
        typer.echo(
            f"not validated: {run['project_id']} {run['run_id']}: {run.get('message')} — fix: {run.get('remedy')}",
            err=True,
        )
    typer.echo(f"report: {summary['report_markdown']}  (JSON: {summary['report_json']})")


def run_load_summary(
    options,
    *,
    validate: bool = True,
    no_progress: bool = False,
    if_locked: str = "stop",
    distribute: dict | None = None,
) -> tuple[int, dict]:
    """Preflight (bad input → one line, exit 2), the load flow in-process, a short summary; exit status + the flow's summary."""
    from neptune_exporter.loaders.comet.target import offline_upload_hint
    from neptune_exporter.loaders.wandb import offline_sync_hint

    with stops_on_interrupt():
        preflight_load(options, reports=validate)
        summary = run_load_flow(
            "load", options, no_progress, run_validation=validate, if_locked=if_locked, distribute=distribute
        )
        if "interrupted" in summary:
            say_interrupted(summary["interrupted"])
            return interrupt.EXIT_INTERRUPTED, summary
    if "locked" in summary:  # another load of this export into this target holds its lock (storage/lock.py)
        raise fail(summary["locked"], EXIT_LOCKED)
    typer.echo(
        f"runs: {summary['loaded']} loaded, {summary['skipped']} already complete, {summary['failed']} failed → {options.target}"
    )
    print_failures(summary["failures"])
    if "validation" in summary:
        print_validation(summary["validation"])
    if hint := offline_sync_hint(options) or offline_upload_hint(options):
        typer.echo(hint)
    differing = summary.get("validation", {}).get("runs_with_differences", 0)
    return (EXIT_RUNS_FAILED if summary["failed"] or differing else 0), summary


def run_load_command(
    options,
    *,
    validate: bool = True,
    no_progress: bool = False,
    if_locked: str = "stop",
    distribute: dict | None = None,
) -> int:
    """`run_load_summary` for callers that only need the exit status."""
    return run_load_summary(
        options, validate=validate, no_progress=no_progress, if_locked=if_locked, distribute=distribute
    )[0]


def distributed(values: dict) -> tuple[Any, dict | None]:
    """The command's options and its flow's `distribute` parameter; with --distribute the paths made absolute (the
    chunks run elsewhere). One line and exit 2 on options that do not go together."""
    from dataclasses import replace

    from neptune_exporter.locations import absolute_path
    from neptune_exporter.settings import COMET_OFFLINE_DIR, WANDB_OFFLINE_DIR

    options = load_options_or_exit(values)
    if options.target == "comet":  # archives land where the user ran the command, wherever the flow runs
        options = replace(options, comet_dir=absolute_path(options.comet_dir or COMET_OFFLINE_DIR))
    try:
        spread = distribution(values["distribute"], values["work_pool"], values["chunk_runs"], values["max_parallel"])
    except TerminalError as error:
        raise fail(error) from None
    if spread is not None:
        wandb_dir = absolute_path(options.wandb_dir or WANDB_OFFLINE_DIR) if options.target == "wandb" else None
        options = replace(
            options,
            data_path=absolute_path(options.data_path),
            files_path=absolute_path(options.files_path),
            wandb_dir=wandb_dir or options.wandb_dir,
        )
    return options, spread


@app.command()
def load(
    target: TargetOpt = "mlflow",
    data_path: DataPathOpt = Path("./exports/data"),
    files_path: FilesPathOpt = Path("./exports/files"),
    project: LoadProjectOpt = None,
    runs: RunsOpt = None,
    workers: WorkersOpt = 4,
    mlflow_tracking_uri: TrackingUriOpt = None,
    experiment_name_template: TemplateOpt = "{project}/{experiment}",
    step_multiplier: MultiplierOpt = None,
    wandb_dir: WandbDirOpt = None,
    wandb_entity: WandbEntityOpt = None,
    wandb_project_template: WandbProjectOpt = None,
    goodseed_home: GoodseedHomeOpt = None,
    goodseed_project_template: GoodseedProjectOpt = None,
    zenml_dir: ZenmlDirOpt = None,
    zenml_model_template: ZenmlModelOpt = None,
    comet_dir: CometDirOpt = None,
    comet_workspace: CometWorkspaceOpt = None,
    comet_project_template: CometProjectOpt = None,
    report_path: ReportPathOpt = None,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Skip the validation after loading.")] = False,
    if_locked: IfLockedOpt = "stop",
    distribute: DistributeOpt = False,
    work_pool: WorkPoolOpt = None,
    chunk_runs: ChunkRunsOpt = 100,
    max_parallel: MaxParallelOpt = 4,
    no_progress: NoProgressOpt = False,
) -> None:
    """Load exports into MLflow / W&B / GoodSeed / ZenML / Comet (idempotent, resumable), then validate them. Exit 1
    on failed runs or differences, 2 when nothing is selected, 3 when another load of the export into the target
    runs."""
    options, spread = distributed(locals())
    raise typer.Exit(
        run_load_command(
            options, validate=not no_validate, no_progress=no_progress, if_locked=if_locked, distribute=spread
        )
    )


SOURCE_ONLY = ("experiments", "where", "query", "modified_after", "include_archived", "deep")  # --against options


@app.command()
def validate(
    target: TargetOpt = "mlflow",
    data_path: DataPathOpt = Path("./exports/data"),
    files_path: FilesPathOpt = Path("./exports/files"),
    project: LoadProjectOpt = None,
    runs: RunsOpt = None,
    workers: WorkersOpt = 4,
    mlflow_tracking_uri: TrackingUriOpt = None,
    experiment_name_template: TemplateOpt = "{project}/{experiment}",
    step_multiplier: MultiplierOpt = None,
    wandb_dir: WandbDirOpt = None,
    wandb_entity: WandbEntityOpt = None,
    wandb_project_template: WandbProjectOpt = None,
    goodseed_home: GoodseedHomeOpt = None,
    goodseed_project_template: GoodseedProjectOpt = None,
    zenml_dir: ZenmlDirOpt = None,
    zenml_model_template: ZenmlModelOpt = None,
    comet_dir: CometDirOpt = None,
    comet_workspace: CometWorkspaceOpt = None,
    comet_project_template: CometProjectOpt = None,
    report_path: ReportPathOpt = None,
    distribute: DistributeOpt = False,
    work_pool: WorkPoolOpt = None,
    chunk_runs: ChunkRunsOpt = 100,
    max_parallel: MaxParallelOpt = 4,
    against: Annotated[
        str | None,
        typer.Option("--against", help="Compare the export with the live source instead: neptune3 or neptune2."),
    ] = None,
    api_token: Annotated[
        str | None, typer.Option(help="Neptune API token (--against); default NEPTUNE_API_TOKEN.", show_default=False)
    ] = None,
    experiments: ExperimentsOpt = None,
    where: WhereOpt = None,
    query: QueryOpt = None,
    modified_after: ModifiedAfterOpt = None,
    include_archived: ArchivedOpt = False,
    deep: Annotated[
        bool,
        typer.Option(
            "--deep",
            help="With --against: re-read every point of every series and every single file's bytes from the server "
            "and compare them one by one (bounded memory; requests grow with the points).",
        ),
    ] = False,
) -> None:
    """Compare every exported run with the target (params, tags, every point, every file's sha256), or with the
    Neptune server it came from (--against; -p required; --deep for every point and file content). Exit 1 on
    differences."""
    if against is not None:
        from neptune_exporter.cli import source_validate as source

        audit = source.audit_options(locals(), api_token)
        raise typer.Exit(source.run_source_validation(audit))
    values = locals()
    if given := [name for name in SOURCE_ONLY if values[name]]:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise fail(InvalidOptionError(f"{flags}: with --against only", "add --against neptune3|neptune2"))
    options, spread = distributed({k: v for k, v in values.items() if k not in ("against", "api_token", *SOURCE_ONLY)})
    with stops_on_interrupt():
        preflight_load(options)
        summary = run_load_flow("validate", options, True, distribute=spread)
        if "interrupted" in summary:
            say_interrupted(summary["interrupted"])
            raise typer.Exit(interrupt.EXIT_INTERRUPTED)
    print_validation(summary)
    raise typer.Exit(EXIT_RUNS_FAILED if summary["runs_with_differences"] else 0)

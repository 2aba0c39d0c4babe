"""`neptune-exporter` command line: export, summary, load, validate, serve, fake-neptune, fake-wandb, demo."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from neptune_exporter import interrupt
from neptune_exporter.errors import InvalidOptionError, NeptuneExporterError, TerminalError, failure_message
from neptune_exporter.locations import CLI_PROJECT_FIX, select_projects
from neptune_exporter.model import AttributeKind, as_utc, parse_kinds
from neptune_exporter.selection import AttributeSelection, RunSelection, compile_regex
from neptune_exporter.settings import Settings, neptune_api_token
from neptune_exporter.storage.lock import check_if_locked

if TYPE_CHECKING:
    from neptune_exporter.export import ExportOptions

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


# ---------------------------------------------------------------------------- Ctrl-C / SIGTERM

STARTUP_INTERRUPTED = f"interrupted during start-up: no run started — {interrupt.RERUN}"
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


def parse_datetime(text: str | None, option: str) -> datetime | None:
    """An ISO date/time (naive means UTC) or InvalidOptionError naming the option."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidOptionError(
            f"{option} {text!r} is not a date/time", "use ISO format, e.g. 2024-05-01 or 2024-05-01T12:00:00+00:00"
        ) from None
    return as_utc(value)


def parse_kind_option(words: list[str] | None, option: str) -> frozenset[AttributeKind] | None:
    """`--include/--exclude parameters,metrics,...` or InvalidOptionError naming the bad word."""
    if not words:
        return None
    try:
        return parse_kinds(words)
    except ValueError as exc:
        raise InvalidOptionError(f"{option}: {exc}", f"pass a comma-separated list to {option}") from None


def check_regexes(**options: str | None) -> None:
    """Compile every regex option now so a bad one fails before any work starts."""
    for option, pattern in options.items():
        compile_regex(pattern, "--" + option.replace("_", "-"))


# ============================================================================ export

SourceOpt = Annotated[str, typer.Option("--source", help="neptune3 (neptune-query) or neptune2 (neptune client).")]
ProjectOpt = Annotated[
    list[str] | None, typer.Option("-p", "--project", help="WORKSPACE/PROJECT, repeatable; default NEPTUNE_PROJECT.")
]
DataPathOpt = Annotated[Path, typer.Option("-d", "--data-path", help="Parquet output folder.")]
FilesPathOpt = Annotated[Path, typer.Option("-f", "--files-path", help="Downloaded files folder.")]


WorkspaceOpt = Annotated[str | None, typer.Option(help="Export every project of this workspace.")]
IncludeProjectsOpt = Annotated[str | None, typer.Option(help="With --workspace: projects matching REGEX.")]
ExcludeProjectsOpt = Annotated[str | None, typer.Option(help="With --workspace: skip projects matching REGEX.")]
RunsRegexOpt = Annotated[str | None, typer.Option(help="Runs whose id / custom run id matches REGEX.")]
ExperimentsOpt = Annotated[str | None, typer.Option(help="Runs of experiments whose name matches REGEX (3.x).")]
WhereOpt = Annotated[str | None, typer.Option(help="Filter, e.g. 'params/lr > 0.01 and sys/tags contains \"best\"'.")]
QueryOpt = Annotated[str | None, typer.Option(help="Raw NQL query (neptune2 only).")]
ModifiedAfterOpt = Annotated[str | None, typer.Option(help="Runs modified after this ISO DATETIME.")]
ArchivedOpt = Annotated[bool, typer.Option(help="Also export archived runs.")]
ModelsOpt = Annotated[
    bool, typer.Option(help="Also export the model registry: models and model versions (neptune2 only).")
]
AttributesOpt = Annotated[str | None, typer.Option(help="Attributes whose path matches REGEX.")]
AttributeOpt = Annotated[list[str] | None, typer.Option(help="Exact attribute path, repeatable.")]
IncludeKindsOpt = Annotated[list[str] | None, typer.Option(help="Kinds to export: parameters,metrics,series,files.")]
ExcludeKindsOpt = Annotated[list[str] | None, typer.Option(help="Kinds to leave out: parameters,metrics,series,files.")]
PreviewsOpt = Annotated[bool, typer.Option(help="Also export metric preview points.")]
ExportWorkersOpt = Annotated[int, typer.Option(min=1, help="Runs exported at the same time.")]
IfLockedOpt = Annotated[
    str,
    typer.Option(
        "--if-locked",
        help="When another export writes to the data path (or another load of this export into this target runs): "
        "stop (one line naming it, exit 3) or wait for it to end.",
    ),
]


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
    if_locked: IfLockedOpt = "stop",
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Export runs to Parquet + files (resumable, incremental); exit 1 when any run failed, 3 when the data path is
    locked by another export."""
    try:
        options = export_options_from(locals(), neptune_api_token(api_token))
        check_if_locked(if_locked)
    except TerminalError as error:
        raise fail(error) from None
    raise typer.Exit(run_export_command(options, no_progress=no_progress, if_locked=if_locked))


def export_options_from(values: dict[str, Any], api_token: str | None) -> ExportOptions:
    """The selection options of `export` / `schedule` (their parameter names) → validated ExportOptions."""
    return build_export_options(
        source=values["source"],
        projects=list(select_projects(values["project"], values["workspace"], CLI_PROJECT_FIX)),
        workspace=values["workspace"],
        include_projects=values["include_projects"],
        exclude_projects=values["exclude_projects"],
        data_path=values["data_path"],
        files_path=values["files_path"],
        api_token=api_token,
        runs=RunSelection(
            runs_regex=values["runs"],
            experiments_regex=values["experiments"],
            where=values["where"],
            query=values["query"],
            modified_after=parse_datetime(values["modified_after"], "--modified-after"),
            include_archived=values["include_archived"],
        ),
        attributes=attribute_selection(
            values["attributes"], values["attribute"], values["include"], values["exclude"], values["include_previews"]
        ),
        workers=values["workers"],
        include_models=values["include_models"],
    )


def attribute_selection(
    regex: str | None, names: list[str] | None, include: list[str] | None, exclude: list[str] | None, previews: bool
) -> AttributeSelection:
    """AttributeSelection from the CLI options (kinds validated)."""
    include_kinds = parse_kind_option(include, "--include")
    return AttributeSelection(
        regex=regex,
        names=tuple(names or ()),
        include_kinds=include_kinds if include_kinds is not None else frozenset(AttributeKind),
        exclude_kinds=parse_kind_option(exclude, "--exclude") or frozenset(),
        include_previews=previews,
    )


def build_export_options(
    *, source: str, projects: list[str], workspace: str | None, api_token: str | None, **rest: Any
) -> ExportOptions:
    """Validated ExportOptions; TerminalError (one line with a fix) on bad input."""
    from neptune_exporter.export import ExportOptions

    if source not in ("neptune3", "neptune2"):
        raise InvalidOptionError(f"--source {source!r} is not supported", "use --source neptune3 or --source neptune2")
    if not projects and not workspace:
        raise InvalidOptionError("no project given", CLI_PROJECT_FIX)
    selection: RunSelection = rest["runs"]
    if selection.query and source != "neptune2":
        raise InvalidOptionError("--query (NQL) works with --source neptune2 only", "use --where with neptune3")
    if rest.get("include_models") and source != "neptune2":
        raise InvalidOptionError(
            "--include-models works with --source neptune2 only (the 2.x model registry)",
            "add --source neptune2, or drop --include-models",
        )
    check_regexes(
        runs=selection.runs_regex,
        experiments=selection.experiments_regex,
        attributes=rest["attributes"].regex,
        include_projects=rest["include_projects"],
        exclude_projects=rest["exclude_projects"],
    )
    return ExportOptions(
        source=source,
        projects=tuple(projects),
        workspace=workspace,
        api_token=api_token,
        data_path=str(rest["data_path"]),
        files_path=str(rest["files_path"]),
        runs=selection,
        attributes=rest["attributes"],
        workers=rest["workers"],
        include_projects=rest["include_projects"],
        exclude_projects=rest["exclude_projects"],
        include_models=bool(rest.get("include_models", False)),
    )


def run_export_command(options: ExportOptions, *, no_progress: bool = False, if_locked: str = "stop") -> int:
    """Preflight (bad input → one line, exit 2), then the export flow in-process; the exit status."""
    with stops_on_interrupt():
        summary = preflight_and_export(options, no_progress, if_locked)
        if "interrupted" in summary:
            say_interrupted(summary["interrupted"])
            return interrupt.EXIT_INTERRUPTED
    if "locked" in summary:  # another export holds the data path's lock (storage/lock.py)
        raise fail(summary["locked"], EXIT_LOCKED)
    if "skipped" in summary:  # another export writes to this data path now (flows/guard.py)
        raise fail(summary["skipped"], EXIT_RUNS_FAILED)
    print_export_summary(summary)
    return EXIT_RUNS_FAILED if summary["runs_failed"] else 0


def preflight_and_export(options: ExportOptions, no_progress: bool, if_locked: str = "stop") -> dict:
    """Preflight (bad input → one line, exit 2), then the export flow's summary."""
    from neptune_exporter.export import make_source, preflight

    start_prefect("flows.export")  # Prefect's server starts and the flow imports while preflight runs
    settings = Settings.from_env()
    try:
        preflight(options, make_source(options, settings))
    except TerminalError as error:
        raise fail(error) from None
    if options.api_token:
        os.environ["NEPTUNE_API_TOKEN"] = options.api_token  # the flow reads it from the process environment
    try:
        return run_export_flow(options, no_progress=no_progress, if_locked=if_locked)
    except TerminalError as error:
        raise fail(error) from None


def run_export_flow(options: ExportOptions, *, no_progress: bool = False, if_locked: str = "stop") -> dict:
    """Run flows/export.py:export in this process (PREFECT_API_URL or ephemeral mode) with a terminal bar."""
    from neptune_exporter import progress
    from neptune_exporter.prefect_env import configure_prefect

    configure_prefect()
    from flows.export import run_export_in_process

    with progress.terminal_bar("exporting", no_progress):
        return run_export_in_process(options, if_locked)


def print_failures(failures: list[dict], shown: int = 10) -> None:
    """`failed: PROJECT RUN: ErrorType: message — fix: remedy` on stderr for the first `shown` failed runs."""
    for failure in failures[:shown]:
        typer.echo(f"failed: {failure['project_id']} {failure['run_id']}: {failure_message(failure)}", err=True)


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


# ============================================================================ schedule


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


# ============================================================================ summary


@app.command()
def summary(
    data_path: DataPathOpt = Path("./exports/data"),
    files_path: FilesPathOpt = Path("./exports/files"),
    project: ProjectOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """What is on disk: runs, attributes by type, points, files, bytes, failures (also peer-tool exports)."""
    import json

    from rich.console import Console

    from neptune_exporter.storage.summary import add_files_on_disk, render_summary, summarize

    if not data_path.is_dir():
        raise fail(f"--data-path {data_path} does not exist — fix: pass the folder an export wrote (-d/--data-path)")
    figures = add_files_on_disk(summarize(data_path, projects=project or None), files_path)
    if as_json:
        typer.echo(json.dumps(figures, indent=2, default=str))
    else:
        Console(width=None if sys.stdout.isatty() else 160).print(render_summary(figures))


# ============================================================================ load / validate (engineer M)

TargetOpt = Annotated[str, typer.Option("--target", help="Where to load: mlflow or wandb.")]
LoadProjectOpt = Annotated[
    list[str] | None,
    typer.Option("-p", "--project", help="WORKSPACE/PROJECT, repeatable; default every exported project."),
]
RunsOpt = Annotated[
    str | None, typer.Option("--runs", help="Only runs whose id / custom run id / sys id matches REGEX.")
]
WorkersOpt = Annotated[int, typer.Option("--workers", min=1, help="Runs loaded / validated concurrently.")]
TrackingUriOpt = Annotated[
    str | None,
    typer.Option(
        "--mlflow-tracking-uri",
        envvar="MLFLOW_TRACKING_URI",
        help="MLflow server URL or sqlite:///path.db (env MLFLOW_TRACKING_URI).",
    ),
]
TemplateOpt = Annotated[
    str,
    typer.Option(
        "--experiment-name-template",
        help="MLflow experiment per project + experiment; runs without one go to {project}.",
    ),
]
MultiplierOpt = Annotated[
    int | None,
    typer.Option(
        "--step-multiplier",
        min=1,
        help="Scale steps by N (error if a step would not be whole); default: smallest exact power of ten per run.",
    ),
]
WandbDirOpt = Annotated[str | None, typer.Option("--wandb-dir", help="W&B: folder of offline runs (WANDB_DIR).")]
WandbEntityOpt = Annotated[
    str | None,
    typer.Option("--wandb-entity", "--entity", help="W&B: entity (team or user); needed online (WANDB_API_KEY set)."),
]
WandbProjectOpt = Annotated[
    str | None,
    typer.Option(
        "--wandb-project-template",
        "--project-template",
        help="W&B: project name template ({project}, {workspace}, {project_id}); default {project}.",
    ),
]
ReportPathOpt = Annotated[
    Path | None, typer.Option("--report-path", help="Folder of validation reports; default <data-path>/../reports.")
]
NoProgressOpt = Annotated[bool, typer.Option("--no-progress", help="No progress bar.")]


def build_load_options(target: str, data_path: Path, files_path: Path, project, runs, workers: int, **extra: Any):
    """CLI values → LoadOptions (a bad regex → InvalidOptionError before any work)."""
    from neptune_exporter.load import LoadOptions

    compile_regex(runs, "--runs")
    report_path = extra.pop("report_path", None)
    return LoadOptions(
        target=target, data_path=str(data_path), files_path=str(files_path), projects=tuple(project or ()),
        runs_regex=runs, workers=workers, report_path=str(report_path) if report_path else None, **extra,
    )  # fmt: skip


LOAD_COMMAND_ONLY = ("no_validate", "no_progress", "if_locked")


def load_options_or_exit(values: dict[str, Any]):
    """The command's parameters → LoadOptions, or one line and exit 2."""
    try:
        check_if_locked(values.get("if_locked", "stop"))
        return build_load_options(**{k: v for k, v in values.items() if k not in LOAD_COMMAND_ONLY})
    except TerminalError as error:
        raise fail(error) from None


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


def start_prefect(*modules: str) -> None:
    """A usable PREFECT_HOME (else one line, exit 2), then Prefect's server starting and `modules` importing in the
    background (`prefect_env.warm_up`)."""
    from neptune_exporter.prefect_env import check_prefect_home, warm_up

    try:
        check_prefect_home()
    except TerminalError as error:
        raise fail(error) from None
    warm_up(*modules)


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
            return run_in_process(flow_fn, options=options.to_json(), **parameters)
        except NeptuneExporterError as error:
            raise fail(error) from None


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
    options, *, validate: bool = True, no_progress: bool = False, if_locked: str = "stop"
) -> tuple[int, dict]:
    """Preflight (bad input → one line, exit 2), the load flow in-process, a short summary; exit status + the flow's summary."""
    from neptune_exporter.loaders.wandb import offline_sync_hint

    with stops_on_interrupt():
        preflight_load(options, reports=validate)
        summary = run_load_flow("load", options, no_progress, run_validation=validate, if_locked=if_locked)
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
    if hint := offline_sync_hint(options):
        typer.echo(hint)
    differing = summary.get("validation", {}).get("runs_with_differences", 0)
    return (EXIT_RUNS_FAILED if summary["failed"] or differing else 0), summary


def run_load_command(options, *, validate: bool = True, no_progress: bool = False, if_locked: str = "stop") -> int:
    """`run_load_summary` for callers that only need the exit status."""
    return run_load_summary(options, validate=validate, no_progress=no_progress, if_locked=if_locked)[0]


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
    report_path: ReportPathOpt = None,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Skip the validation after loading.")] = False,
    if_locked: IfLockedOpt = "stop",
    no_progress: NoProgressOpt = False,
) -> None:
    """Load exports into MLflow / W&B (idempotent, resumable), then validate them. Exit 1 on failed runs or
    differences, 2 when nothing is selected, 3 when another load of the export into the target runs."""
    options = load_options_or_exit(locals())
    raise typer.Exit(run_load_command(options, validate=not no_validate, no_progress=no_progress, if_locked=if_locked))


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
    report_path: ReportPathOpt = None,
) -> None:
    """Compare every exported run with the target (params, tags, every point, every file's sha256). Exit 1 on differences."""
    options = load_options_or_exit(locals())
    with stops_on_interrupt():
        preflight_load(options)
        summary = run_load_flow("validate", options, True)
        if "interrupted" in summary:
            say_interrupted(summary["interrupted"])
            raise typer.Exit(interrupt.EXIT_INTERRUPTED)
    print_validation(summary)
    raise typer.Exit(EXIT_RUNS_FAILED if summary["runs_with_differences"] else 0)


# ============================================================================ serve, fake-neptune, demo


@app.command()
def serve(
    home: Annotated[Path, typer.Option(help="PREFECT_HOME of the local server (SQLite database there).")] = Path(
        ".prefect-serve"
    ),
    port: Annotated[int, typer.Option(help="Port of the Prefect server and UI on 127.0.0.1.")] = 4200,
) -> None:
    """Start `prefect server start` (SQLite) and serve the deployments (export/neptune3, export/neptune2, ...)."""
    from deployments.server import PrefectServer, serve_deployments, stop_process

    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # `kill` stops the children too, like Ctrl-C
    server = PrefectServer(home, port)
    typer.echo(f"starting the Prefect server (PREFECT_HOME={home}); log: {server.log_path}")
    with server:
        typer.echo(f"Prefect UI: http://127.0.0.1:{server.port}  ·  export PREFECT_API_URL={server.api_url}")
        runner = serve_deployments(server.client_env())
        try:
            runner.wait()
        except KeyboardInterrupt:
            typer.echo("stopping")
        finally:
            stop_process(runner)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# The fake servers' own CLIs run as sub-commands, imported only when one of them runs: a CLI start never loads them.
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def _run_sub_app(sub_app: typer.Typer, ctx: typer.Context) -> None:
    """Run a sub-command's Typer app with the arguments after its name (`--help` included)."""
    typer.main.get_group(sub_app).main(args=list(ctx.args), prog_name=ctx.command_path)


@app.command("fake-neptune", context_settings=PASS_THROUGH, add_help_option=False)
def fake_neptune(ctx: typer.Context) -> None:
    """A local fake Neptune server (tests, demo, benchmarks); `fake-neptune --help` lists its commands."""
    from neptune_exporter.fake_neptune.cli import app as fake_app

    _run_sub_app(fake_app, ctx)


@app.command("fake-wandb", context_settings=PASS_THROUGH, add_help_option=False)
def fake_wandb(ctx: typer.Context) -> None:
    """A local stand-in for the W&B endpoints (try `wandb sync` offline runs); `fake-wandb --help` lists its commands."""
    from neptune_exporter.fake_wandb.cli import app as fake_wandb_app

    _run_sub_app(fake_wandb_app, ctx)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder of the demo's exports.")] = Path("./demo"),
    runs: Annotated[int, typer.Option(min=1, help="Runs in the generated sample project.")] = 8,
    points: Annotated[int, typer.Option(min=1, help="Points per metric.")] = 500,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh", help="Empty the demo's sub-folders first (default: reuse them; unchanged runs are skipped)."
        ),
    ] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """No credentials needed: fake Neptune with a sample project → export → MLflow (SQLite) + W&B (offline) → validation report."""
    from neptune_exporter.demo import DemoContext, run_demo

    ctx = DemoContext(
        out=out,
        runs=runs,
        points=points,
        fresh=fresh,
        no_progress=no_progress,
        export_command=run_export_command,
        load_command=run_load_summary,
    )
    raise typer.Exit(run_demo(ctx))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()

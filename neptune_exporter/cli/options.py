"""The CLI's options: their types (shared by export, schedule, load, validate) and their parsing into validated options."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from neptune_exporter.cli.app import fail
from neptune_exporter.errors import InvalidOptionError, TerminalError
from neptune_exporter.locations import CLI_PROJECT_FIX, select_projects
from neptune_exporter.model import AttributeKind, as_utc, parse_kinds
from neptune_exporter.selection import AttributeSelection, RunSelection, check_run_selection, compile_regex
from neptune_exporter.storage.lock import check_if_locked

if TYPE_CHECKING:
    from neptune_exporter.export import ExportOptions


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


ProcessesOpt = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Worker processes exporting the runs, each with its own Neptune client (0: this process). "
        "Default: cores - 1 for a remote Neptune server, 0 for one on this machine.",
        show_default=False,
    ),
]


IfLockedOpt = Annotated[
    str,
    typer.Option(
        "--if-locked",
        help="When another export writes to the data path (or another load of this export into this target runs): "
        "stop (one line naming it, exit 3) or wait for it to end.",
    ),
]


def run_selection_from(values: dict[str, Any]) -> RunSelection:
    """The run selection options of `export` / `schedule` / `validate --against` (their parameter names)."""
    return RunSelection(
        runs_regex=values["runs"],
        experiments_regex=values["experiments"],
        where=values["where"],
        query=values["query"],
        modified_after=parse_datetime(values["modified_after"], "--modified-after"),
        include_archived=values["include_archived"],
    )


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
        runs=run_selection_from(values),
        attributes=attribute_selection(
            values["attributes"], values["attribute"], values["include"], values["exclude"], values["include_previews"]
        ),
        workers=values["workers"],
        include_models=values["include_models"],
        processes=values.get("processes"),
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
    check_run_selection(source, selection)
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


TargetOpt = Annotated[str, typer.Option("--target", help="Where to load: mlflow, wandb, goodseed, zenml or comet.")]


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


GoodseedHomeOpt = Annotated[
    str | None,
    typer.Option(
        "--goodseed-home",
        envvar="GOODSEED_HOME",
        help="GoodSeed: its home folder (runs under projects/<project>/runs/); default GOODSEED_HOME, else ~/.goodseed.",
    ),
]


CometDirOpt = Annotated[
    str | None,
    typer.Option(
        "--comet-dir", help="Comet: folder of offline archives, one <key>.zip per run; default ./comet-archives."
    ),
]


GoodseedProjectOpt = Annotated[
    str | None,
    typer.Option(
        "--goodseed-project-template",
        help="GoodSeed: project name template ({project}, {workspace}, {name}); default {project}.",
    ),
]


ZenmlDirOpt = Annotated[
    str | None,
    typer.Option("--zenml-dir", help="ZenML: folder of the local store (ZENML_CONFIG_PATH); default ./zenml-store."),
]


ZenmlModelOpt = Annotated[
    str | None,
    typer.Option(
        "--zenml-model-template",
        help="ZenML: model name per project ({project_id}, {workspace}, {project}); default {project_id}.",
    ),
]


CometWorkspaceOpt = Annotated[
    str | None, typer.Option("--comet-workspace", help="Comet: workspace (default COMET_WORKSPACE, else your default).")
]


CometProjectOpt = Annotated[
    str | None,
    typer.Option(
        "--comet-project-template",
        help="Comet: project name template ({project}, {workspace}, {project_id}); default {project}.",
    ),
]


ReportPathOpt = Annotated[
    Path | None, typer.Option("--report-path", help="Folder of validation reports; default <data-path>/../reports.")
]


NoProgressOpt = Annotated[bool, typer.Option("--no-progress", help="No progress bar.")]
DistributeOpt = Annotated[
    bool,
    typer.Option(
        "--distribute",
        help="Work in chunks, each a flow run of deployment <command>-chunk/<source or target> on the work pool of "
        "the Prefect server PREFECT_API_URL names; the data and files paths must be shared storage.",
    ),
]
WorkPoolOpt = Annotated[
    str | None, typer.Option("--work-pool", help="With --distribute: the work pool the chunks run on.")
]
ChunkRunsOpt = Annotated[int, typer.Option("--chunk-runs", min=1, help="With --distribute: runs per chunk.")]
MaxParallelOpt = Annotated[
    int, typer.Option("--max-parallel", min=1, help="With --distribute: chunks running at the same time.")
]


def distribution(distribute: bool, work_pool: str | None, chunk_runs: int, max_parallel: int) -> dict | None:
    """A flow's `distribute` parameter (None without --distribute); InvalidOptionError on options that do not go
    together or a missing PREFECT_API_URL (the workers' server)."""
    from neptune_exporter.storage.fan_out import Distribution

    if not distribute:
        if work_pool:
            raise InvalidOptionError(
                "--work-pool works with --distribute only", "add --distribute, or drop --work-pool"
            )
        return None
    if not os.environ.get("PREFECT_API_URL"):
        raise InvalidOptionError(
            "--distribute needs the Prefect server your workers poll",
            "set PREFECT_API_URL to it (e.g. http://prefect-server:4200/api) and run `prefect worker start --pool "
            "NAME` on each node",
        )
    return Distribution.from_json(
        {"work_pool": work_pool, "chunk_runs": chunk_runs, "max_parallel": max_parallel}
    ).to_json()


def build_load_options(target: str, data_path: Path, files_path: Path, project, runs, workers: int, **extra: Any):
    """CLI values → LoadOptions (a bad regex → InvalidOptionError before any work)."""
    from neptune_exporter.load import LoadOptions

    compile_regex(runs, "--runs")
    report_path = extra.pop("report_path", None)
    if extra.get("goodseed_home"):  # a flow may run elsewhere: GoodSeed's home goes to it absolute
        from neptune_exporter.locations import absolute_path

        extra["goodseed_home"] = absolute_path(extra["goodseed_home"])
    if target == "zenml" or extra.get("zenml_dir"):  # absolute: a flow may run in another working directory
        from neptune_exporter.storage.zenml_store import zenml_dir

        extra["zenml_dir"] = str(zenml_dir(extra.get("zenml_dir")))
    return LoadOptions(
        target=target, data_path=str(data_path), files_path=str(files_path), projects=tuple(project or ()),
        runs_regex=runs, workers=workers, report_path=str(report_path) if report_path else None, **extra,
    )  # fmt: skip


LOAD_COMMAND_ONLY = ("no_validate", "no_progress", "if_locked", "distribute", "work_pool", "chunk_runs", "max_parallel")


def load_options_or_exit(values: dict[str, Any]):
    """The command's parameters → LoadOptions, or one line and exit 2."""
    try:
        check_if_locked(values.get("if_locked", "stop"))
        return build_load_options(**{k: v for k, v in values.items() if k not in LOAD_COMMAND_ONLY})
    except TerminalError as error:
        raise fail(error) from None

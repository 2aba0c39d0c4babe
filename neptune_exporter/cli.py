"""`neptune-exporter` command line: export, load, validate, migrate, summary, serve, fake-neptune, demo."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from neptune_exporter.errors import InvalidOptionError, NeptuneExporterError, TerminalError
from neptune_exporter.exporters.base import AttributeSelection, RunSelection, compile_regex
from neptune_exporter.model import AttributeKind, parse_kinds
from neptune_exporter.settings import Settings, default_projects, neptune_api_token

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


def fail(error: NeptuneExporterError | str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ONE line naming the problem and its fix on stderr; return the Exit to raise."""
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(code)


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
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


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
ProjectOpt = Annotated[Optional[list[str]], typer.Option("-p", "--project", help="WORKSPACE/PROJECT, repeatable; default NEPTUNE_PROJECT.")]
DataPathOpt = Annotated[Path, typer.Option("-d", "--data-path", help="Parquet output folder.")]
FilesPathOpt = Annotated[Path, typer.Option("-f", "--files-path", help="Downloaded files folder.")]


@app.command()
def export(
    source: SourceOpt = "neptune3",
    project: ProjectOpt = None,
    workspace: Annotated[Optional[str], typer.Option(help="Export every project of this workspace.")] = None,
    include_projects: Annotated[Optional[str], typer.Option(help="With --workspace: projects matching REGEX.")] = None,
    exclude_projects: Annotated[Optional[str], typer.Option(help="With --workspace: skip projects matching REGEX.")] = None,
    data_path: DataPathOpt = Path("./exports/data"),
    files_path: FilesPathOpt = Path("./exports/files"),
    api_token: Annotated[Optional[str], typer.Option(help="Neptune API token; default NEPTUNE_API_TOKEN.", show_default=False)] = None,
    runs: Annotated[Optional[str], typer.Option(help="Runs whose id / custom run id matches REGEX.")] = None,
    experiments: Annotated[Optional[str], typer.Option(help="Runs of experiments whose name matches REGEX (3.x).")] = None,
    where: Annotated[Optional[str], typer.Option(help='Filter, e.g. \'params/lr > 0.01 and sys/tags contains "best"\'.')] = None,
    query: Annotated[Optional[str], typer.Option(help="Raw NQL query (neptune2 only).")] = None,
    modified_after: Annotated[Optional[str], typer.Option(help="Runs modified after this ISO DATETIME.")] = None,
    include_archived: Annotated[bool, typer.Option(help="Also export archived runs.")] = False,
    attributes: Annotated[Optional[str], typer.Option(help="Attributes whose path matches REGEX.")] = None,
    attribute: Annotated[Optional[list[str]], typer.Option(help="Exact attribute path, repeatable.")] = None,
    include: Annotated[Optional[list[str]], typer.Option(help="Kinds to export: parameters,metrics,series,files.")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(help="Kinds to leave out: parameters,metrics,series,files.")] = None,
    include_previews: Annotated[bool, typer.Option(help="Also export metric preview points.")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Runs exported at the same time.")] = 4,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Export runs to Parquet + files (resumable, incremental); exit 1 when any run failed."""
    try:
        options = build_export_options(
            source=source, projects=project or default_projects(), workspace=workspace,
            include_projects=include_projects, exclude_projects=exclude_projects,
            data_path=data_path, files_path=files_path, api_token=neptune_api_token(api_token),
            runs=RunSelection(
                runs_regex=runs, experiments_regex=experiments, where=where, query=query,
                modified_after=parse_datetime(modified_after, "--modified-after"), include_archived=include_archived,
            ),
            attributes=attribute_selection(attributes, attribute, include, exclude, include_previews),
            workers=workers,
        )
    except TerminalError as error:
        raise fail(error) from None
    raise typer.Exit(run_export_command(options, no_progress=no_progress))


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
) -> "ExportOptions":
    """Validated ExportOptions; TerminalError (one line with a fix) on bad input."""
    from neptune_exporter.export import ExportOptions

    if source not in ("neptune3", "neptune2"):
        raise InvalidOptionError(f"--source {source!r} is not supported", "use --source neptune3 or --source neptune2")
    if not projects and not workspace:
        raise InvalidOptionError("no project given", "pass -p WORKSPACE/PROJECT, --workspace WS, or set NEPTUNE_PROJECT")
    selection: RunSelection = rest["runs"]
    if selection.query and source != "neptune2":
        raise InvalidOptionError("--query (NQL) works with --source neptune2 only", "use --where with neptune3")
    check_regexes(
        runs=selection.runs_regex, experiments=selection.experiments_regex, attributes=rest["attributes"].regex,
        include_projects=rest["include_projects"], exclude_projects=rest["exclude_projects"],
    )
    return ExportOptions(
        source=source, projects=tuple(projects), workspace=workspace, api_token=api_token,
        data_path=str(rest["data_path"]), files_path=str(rest["files_path"]), runs=selection,
        attributes=rest["attributes"], workers=rest["workers"],
        include_projects=rest["include_projects"], exclude_projects=rest["exclude_projects"],
    )


def run_export_command(options: "ExportOptions", *, no_progress: bool = False) -> int:
    """Preflight (bad input → one line, exit 2), then the export flow in-process; the exit status."""
    from neptune_exporter.export import make_source, preflight

    settings = Settings.from_env()
    try:
        preflight(options, make_source(options, settings))
    except TerminalError as error:
        raise fail(error) from None
    if options.api_token:
        os.environ["NEPTUNE_API_TOKEN"] = options.api_token  # the flow reads it from the process environment
    try:
        summary = run_export_flow(options, no_progress=no_progress)
    except TerminalError as error:
        raise fail(error) from None
    print_export_summary(summary)
    return EXIT_RUNS_FAILED if summary["runs_failed"] else 0


def run_export_flow(options: "ExportOptions", *, no_progress: bool = False) -> dict:
    """Run flows/export.py:export in this process (PREFECT_API_URL or ephemeral mode) with a terminal bar."""
    from neptune_exporter import progress
    from neptune_exporter.prefect_env import configure_prefect

    configure_prefect()
    from flows.export import run_in_process

    bar = progress.TerminalProgress() if progress.wants_terminal_bar(no_progress) else None
    with progress.installed(bar):
        if bar is None:
            return run_in_process(options)
        with bar:
            return run_in_process(options)


def print_export_summary(summary: dict) -> None:
    """A few lines: runs by status, points, bytes, where the data and error report are."""
    typer.echo(
        f"runs: {summary['runs_complete']} exported, {summary['runs_skipped']} unchanged, "
        f"{summary['runs_failed']} failed · {summary['points']:,} points · {summary['files']:,} files · "
        f"{summary['bytes']:,} bytes"
    )
    typer.echo(f"data: {summary['data_path']}  files: {summary['files_path']}")
    for failure in summary.get("failures", [])[:10]:
        typer.echo(f"failed: {failure['project_id']} {failure['run_id']}: {failure['message']}", err=True)
    if summary.get("error_reports"):
        typer.echo(f"error report: {', '.join(summary['error_reports'])}", err=True)


# ============================================================================ summary


@app.command()
def summary(
    data_path: DataPathOpt = Path("./exports/data"),
    project: ProjectOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """What is on disk: runs, attributes by type, points, files, bytes, failures (also peer-tool exports)."""
    import json

    from rich.console import Console

    from neptune_exporter.storage.summary import render_summary, summarize

    if not data_path.is_dir():
        raise fail(f"--data-path {data_path} does not exist — fix: pass the folder an export wrote (-d/--data-path)")
    figures = summarize(data_path, projects=project or None)
    if as_json:
        typer.echo(json.dumps(figures, indent=2, default=str))
    else:
        Console().print(render_summary(figures))


# ============================================================================ load / validate (engineer M)
# `load` and `validate` commands go here (flows/load.py, flows/validate.py).


# ============================================================================ serve, fake-neptune, demo


@app.command()
def serve(
    home: Annotated[Path, typer.Option(help="PREFECT_HOME of the local server (SQLite database there).")] = Path(".prefect-serve"),
    port: Annotated[int, typer.Option(help="Port of the Prefect server and UI on 127.0.0.1.")] = 4200,
) -> None:
    """Start `prefect server start` (SQLite) and serve the deployments (export/neptune3, export/neptune2, ...)."""
    from deployments.server import PrefectServer, serve_deployments, stop_process

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


def _mount_fake_neptune() -> None:
    from neptune_exporter.fake_neptune.cli import app as fake_app

    app.add_typer(fake_app, name="fake-neptune", help="A local fake Neptune server (tests, demo, benchmarks).")


_mount_fake_neptune()


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder of the demo's exports.")] = Path("./demo"),
    runs: Annotated[int, typer.Option(min=1, help="Runs in the generated sample project.")] = 8,
    points: Annotated[int, typer.Option(min=1, help="Points per metric.")] = 500,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """No credentials needed: a fake Neptune server with a sample project → export → summary."""
    from neptune_exporter.demo import DemoContext, run_demo

    raise typer.Exit(run_demo(DemoContext(out=out, runs=runs, points=points, no_progress=no_progress)))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()

"""Prefect tasks of the export flow: thin wrappers around `neptune_exporter.export` calls."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from neptune_exporter import export as library
from neptune_exporter import export_results, export_runner, interrupt, progress
from neptune_exporter.errors import TerminalError, failure_message
from neptune_exporter.exporters.base import Source
from neptune_exporter.settings import Settings, neptune_api_token
from neptune_exporter.storage.manifest import STATUS_FAILED, manifest_path
from tasks.policy import cached_task_options, detached, failed, interrupted, rejected, retry_options

_sources: dict[tuple[str, str | None], Source] = {}
_sources_lock = threading.Lock()
_run_exporters: dict[tuple[str, str | None], export_runner.RunExporter] = {}


def source_for(options: library.ExportOptions) -> Source:
    """One Source per kind and token in this process (clients and their auth are shared by all tasks)."""
    key = (options.source, neptune_api_token(options.api_token))
    with _sources_lock:
        if key not in _sources:
            _sources[key] = library.make_source(options, Settings.from_env())
        return _sources[key]


def run_exporter_for(options: library.ExportOptions) -> export_runner.RunExporter:
    """Where this export's runs are exported (this process, or its worker processes: `--processes`); one per export
    options in this process, kept until `run_exporters_closed` ends."""
    key = (json.dumps(options.to_json(), sort_keys=True), neptune_api_token(options.api_token))
    source = source_for(options)
    with _sources_lock:
        if key not in _run_exporters:
            _run_exporters[key] = export_runner.open_run_exporter(options, Settings.from_env(), source)
        return _run_exporters[key]


@contextmanager
def run_exporters_closed() -> Iterator[None]:
    """Close the run exporters (worker processes) the block opened, when it ends."""
    try:
        yield
    finally:
        with _sources_lock:
            exporters = list(_run_exporters.values())
            _run_exporters.clear()
        for exporter in exporters:
            exporter.close()


@task(name="preflight", cache_policy=NO_CACHE, **retry_options())
def preflight(options: dict) -> list[str] | State:
    """Projects to export, after every input check; a refused input ends the task Failed with its fix (`rejected`)."""
    parsed = library.ExportOptions.from_json(options)
    try:
        return library.preflight(parsed, source_for(parsed))
    except TerminalError as error:
        return rejected(error)


@task(name="discover-and-plan", cache_policy=NO_CACHE, **retry_options())
def discover_and_plan(options: dict, projects: list[str]) -> list[dict]:
    """Runs of the projects matching the selection, each with its plan (skip / full / incremental / redo)."""
    parsed = library.ExportOptions.from_json(options)
    runs = library.discover(source_for(parsed), parsed, projects)
    return [plan.to_json() for plan in library.plan_runs(runs, parsed)]


@task(name="export-run", task_run_name="export {run_key}", **cached_task_options("plan", "options"))
def export_run(
    run_key: str, manifest_path: str, modification_time: str | None, fingerprint: str, plan: dict, options: dict
) -> dict | State:
    """Export one run; a small JSON pointer (manifest path, status, figures). Cached on the key inputs.

    `export_one` retries transient errors under the one policy; a run that still fails gets its failed manifest,
    and the task ends Failed with the error and its fix as message. On Ctrl-C / SIGTERM the run stops between two
    batches (its temporary part removed, its manifest untouched) and the task ends Cancelled: the rerun exports it.
    """
    parsed, run_plan = library.ExportOptions.from_json(options), library.RunPlan.from_json(plan)
    sink = interrupt.StopBetweenBatches(progress.PointsOnly(progress.active()))
    try:
        interrupt.raise_if_requested()
        result = run_exporter_for(parsed).export_one(run_plan, sink)
    except interrupt.Interrupted:
        stopped = export_results.RunExportResult(
            run_plan.run.project_id, run_plan.run.run_id, interrupt.INTERRUPTED, manifest_path, action=run_plan.action
        )
        return interrupted(f"{run_key}: stopped on Ctrl-C / SIGTERM before it finished", stopped.to_json())
    pointer = result.to_json()
    if result.status == STATUS_FAILED:
        return failed(failure_message(result.errors[0] if result.errors else None), pointer)
    return pointer


def export_run_call(plan: dict, options: library.ExportOptions) -> dict:
    """Keyword arguments of `export_run` for one plan: the cache key inputs plus the plan and options.

    Fresh copies (`detached`): Prefect links task inputs to earlier results by object identity, and plans share
    interned strings ("full", "neptune3") with other runs' results, which drew false dependency arrows.
    """
    run = plan["run"]
    path = manifest_path(Path(options.data_path), run["project_id"], run["run_id"], run.get("scope"))
    return detached(
        {
            "run_key": f"{run['project_id']}/{run['run_id']}",
            "manifest_path": str(path.resolve()),
            "modification_time": run.get("modification_time"),
            "fingerprint": options.fingerprint(),
            "plan": plan,
            "options": options.to_json(),
        }
    )


@task(name="write-export-summary", cache_policy=NO_CACHE)
def write_export_summary(pointers: list[dict], options: dict) -> dict:
    """Per-project `export_summary.json` + `errors.jsonl`; the totals dict the CLI and artifacts show."""
    parsed = library.ExportOptions.from_json(options)
    results = [export_results.RunExportResult.from_json(p) for p in pointers]
    written = export_results.write_export_summary(Path(parsed.data_path), results, parsed)
    reports = [
        path
        for path in (p.with_name(export_results.ERRORS_FILE) for p in written)
        if path.is_file() and path.stat().st_size
    ]
    return export_results.export_summary(results, parsed, reports)

"""The `export` flow: preflight → discover and plan → per-run export tasks in chunked subflows → summary."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import replace
from typing import Any, Iterator, Optional

from prefect import flow
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture, as_completed
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from flows import guard
from flows.runtime import run_in_process, run_subflow
from neptune_exporter import export as library
from neptune_exporter import locations
from neptune_exporter import progress
from neptune_exporter.settings import Settings
from tasks import export as export_tasks

SELECTION_KEYS = ("workspace", "include_projects", "exclude_projects", "runs", "attributes", "include_models")
PATH_KEYS = ("data_path", "files_path")
PROGRESS_EVERY_SECONDS = 2.0
FAILURES_SHOWN = 50


def flow_parameters(options: library.ExportOptions) -> dict[str, Any]:
    """ExportOptions → the flow's JSON parameters (source, projects, selection, paths, workers); no token."""
    data = options.to_json()
    return {
        "source": data["source"],
        "projects": data["projects"],
        "selection": {key: data[key] for key in SELECTION_KEYS},
        "paths": {key: locations.absolute_path(data[key]) for key in PATH_KEYS},
        "workers": data["workers"],
    }


def options_from_parameters(
    source: str, projects: list[str] | None, selection: dict | None, paths: dict | None, workers: int
) -> library.ExportOptions:
    """The flow's parameters → ExportOptions: projects default to NEPTUNE_PROJECT of this process, paths must be
    absolute (InvalidOptionError naming the absolute path otherwise); the token comes from NEPTUNE_API_TOKEN."""
    merged = {"source": source, "projects": projects or [], **(selection or {}), **(paths or {}), "workers": workers}
    options = library.ExportOptions.from_json(merged)
    return replace(
        options,
        projects=locations.select_projects(options.projects, options.workspace, locations.FLOW_PROJECT_FIX),
        data_path=locations.require_absolute(options.data_path, "paths.data_path"),
        files_path=locations.require_absolute(options.files_path, "paths.files_path"),
    )


def plan_chunks(plans: list[dict], size: int) -> Iterator[list[dict]]:
    """Plans grouped by project, in chunks of at most `size` runs (one subflow each)."""
    by_project: dict[str, list[dict]] = defaultdict(list)
    for plan in plans:
        by_project[plan["run"]["project_id"]].append(plan)
    for project_plans in by_project.values():
        for start in range(0, len(project_plans), max(1, size)):
            yield project_plans[start : start + size]


class RunProgress:
    """Counts finished runs; updates the terminal bar (if any) and the Prefect progress artifact, throttled."""

    def __init__(self, artifact_id: str | None, done_before: int, total_runs: int) -> None:
        self.artifact_id, self.done, self.total = artifact_id, done_before, total_runs
        self._last_update = 0.0

    def run_done(self, pointer: dict) -> None:
        self.done += 1
        sink = progress.active()
        if sink is not None:
            sink.on_run_done(pointer)
        if time.monotonic() - self._last_update >= PROGRESS_EVERY_SECONDS or self.done == self.total:
            self.publish()

    def publish(self) -> None:
        if self.artifact_id:
            update_progress_artifact(self.artifact_id, progress=100.0 * self.done / max(1, self.total))
        self._last_update = time.monotonic()


def skipped_pointer(pointer: dict) -> dict:
    """A cached pointer stands for a run left as it was: skipped, nothing new."""
    return {**pointer, "status": "skipped", "action": "skip", "rows": 0, "points": 0, "files": 0, "bytes": 0, "errors": []}


def pointer_of(future: PrefectFuture, plan: dict, options: dict) -> dict:
    """The JSON pointer a finished export task stands for; a task that ended in an error is recorded as failed."""
    future.wait()  # sets the final state locally (otherwise `state` asks the API, which may lag)
    state: State = future.state
    if state.is_completed():
        pointer = future.result()
        return skipped_pointer(pointer) if state.name == "Cached" else pointer
    error = future.result(raise_on_failure=False)
    if not isinstance(error, BaseException):
        error = RuntimeError(state.message or f"export task ended {state.name}")
    return export_tasks.record_failed_run(plan, options, error)


@flow(name="export-chunk", log_prints=False)
def export_chunk(plans: list[dict], options: dict, progress_state: dict) -> list[dict]:
    """Export up to `runs_per_task_batch` runs of one project: one task per run on the flow's thread pool.

    A run the plan skips (complete manifest, same modification time and options) may be answered from the task
    cache (shown as Cached in the UI); every other run refreshes the cache, so the manifest stays the truth.
    """
    parsed = library.ExportOptions.from_json(options)
    reuse, refresh = export_tasks.export_run, export_tasks.export_run.with_options(refresh_cache=True)
    futures = {}
    for plan in plans:
        task = reuse if plan["action"] == "skip" else refresh
        futures[task.submit(**export_tasks.export_run_call(plan, parsed))] = plan
    tracker = RunProgress(**progress_state)
    pointers = []
    for future in as_completed(list(futures)):
        pointers.append(pointer_of(future, futures[future], options))
        tracker.run_done(pointers[-1])
    return pointers


def start_progress(total_runs: int) -> str | None:
    """The Prefect progress artifact of this export; the terminal bar learns the total."""
    sink = progress.active()
    if sink is not None:
        sink.on_plan(total_runs)
    start = 0.0 if total_runs else 100.0
    artifact = create_progress_artifact(progress=start, key="export-progress", description=f"Runs exported of {total_runs}")
    return str(artifact) if artifact else None


def project_rows(pointers: list[dict]) -> list[dict]:
    """One summary table row per project."""
    grouped: dict[str, list] = defaultdict(list)
    for pointer in pointers:
        grouped[pointer["project_id"]].append(library.RunExportResult.from_json(pointer))
    rows = []
    for project_id, results in sorted(grouped.items()):
        figures = library.totals(results)
        rows.append({"project": project_id, **{k: figures[k] for k in
                     ("runs_complete", "runs_skipped", "runs_failed", "points", "files", "bytes")}})
    return rows


def summary_markdown(summary: dict) -> str:
    """The run's markdown report: totals, where the data is, failures with their first error."""
    lines = [
        "# Neptune export",
        "",
        f"- runs exported: **{summary['runs_complete']}**, unchanged: {summary['runs_skipped']}, "
        f"failed: **{summary['runs_failed']}**",
        f"- points: {summary['points']:,} · files: {summary['files']:,} · bytes: {summary['bytes']:,}",
        f"- data: `{summary['data_path']}` · files: `{summary['files_path']}`",
    ]
    if summary["failures"]:
        lines += ["", "## Failed runs", "", "| project | run | error |", "|---|---|---|"]
        lines += [f"| {f['project_id']} | {f['run_id']} | {f['message']} |" for f in summary["failures"][:FAILURES_SHOWN]]
    if summary["error_reports"]:
        lines += ["", "Error reports (JSONL): " + ", ".join(f"`{p}`" for p in summary["error_reports"])]
    return "\n".join(lines)


def publish_summary(summary: dict, pointers: list[dict]) -> None:
    """Table and markdown summary artifacts of the run."""
    create_table_artifact(table=project_rows(pointers), key="export-summary", description="Runs per project")
    create_markdown_artifact(markdown=summary_markdown(summary), key="export-report", description="Export report")


@flow(name="export", log_prints=False)
def export(
    source: str = "neptune3",
    projects: Optional[list[str]] = None,
    selection: Optional[dict] = None,
    paths: Optional[dict] = None,
    workers: int = 4,
) -> dict:
    """Export Neptune runs to Parquet + files: resumable, incremental; Failed when any run failed."""
    options = options_from_parameters(source, projects, selection, paths, workers)
    if (skipped := guard.skip_if_data_path_busy(options.data_path)) is not None:
        return skipped
    options_json = options.to_json()
    plans = export_tasks.discover_and_plan(options_json, export_tasks.preflight(options_json))
    artifact_id = start_progress(len(plans))
    chunk_flow = export_chunk.with_options(task_runner=ThreadPoolTaskRunner(max_workers=options.workers))
    pointers: list[dict] = []
    for chunk in plan_chunks(plans, Settings.from_env().runs_per_task_batch):
        state = {"artifact_id": artifact_id, "done_before": len(pointers), "total_runs": len(plans)}
        pointers += run_subflow(chunk_flow, chunk, options_json, state)
    summary = export_tasks.write_export_summary(pointers, options_json)
    publish_summary(summary, pointers)
    if summary["runs_failed"]:
        return Failed(message=f"{summary['runs_failed']} of {len(pointers)} runs failed", data=summary)
    return summary


def run_export_in_process(options: library.ExportOptions) -> dict:
    """Run the export flow here (PREFECT_API_URL or the local server); its summary. A flow-level error re-raises."""
    return run_in_process(export, **flow_parameters(options))

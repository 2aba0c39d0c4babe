"""The `export` flow: preflight → discover and plan → per-run export tasks in chunked subflows → summary."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from flows import fan_out, guard
from flows.live import LiveRuns
from flows.runtime import cut_short, dispatch, refusal, run_in_process, run_subflow, stopped
from neptune_exporter import export as library
from neptune_exporter import export_results, interrupt, locations, progress
from neptune_exporter.errors import PathLockedError, failure_message
from neptune_exporter.process_memory import bound_allocators
from neptune_exporter.settings import Settings
from neptune_exporter.storage.fan_out import Distribution
from neptune_exporter.storage.manifest import STATUS_COMPLETE, STATUS_FAILED
from tasks import export as export_tasks
from tasks.policy import RunsFailed, detached, failed, interrupted

SELECTION_KEYS = ("workspace", "include_projects", "exclude_projects", "runs", "attributes", "include_models")
PATH_KEYS = ("data_path", "files_path")
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
        "processes": data["processes"],
    }


def options_from_parameters(
    source: str,
    projects: list[str] | None,
    selection: dict | None,
    paths: dict | None,
    workers: int,
    processes: int | None = None,
) -> library.ExportOptions:
    """The flow's parameters → ExportOptions: projects default to NEPTUNE_PROJECT of this process, paths must be
    absolute (InvalidOptionError naming the absolute path otherwise); the token comes from NEPTUNE_API_TOKEN."""
    merged = {
        "source": source,
        "projects": projects or [],
        **(selection or {}),
        **(paths or {}),
        "workers": workers,
        "processes": processes,
    }
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


def run_key(project_id: str, run_id: str) -> str:
    return f"{project_id}/{run_id}"


def skipped_pointer(pointer: dict) -> dict:
    """A cached pointer stands for a run left as it was: skipped, nothing new."""
    return {
        **pointer,
        "status": "skipped",
        "action": "skip",
        "rows": 0,
        "points": 0,
        "files": 0,
        "bytes": 0,
        "errors": [],
    }


def pointer_of(future: PrefectFuture, plan: dict, options: dict) -> dict:
    """The JSON pointer a finished export task stands for; a failed task's pointer travels in its Failed state."""
    future.wait()  # sets the final state locally (otherwise `state` asks the API, which may lag)
    state: State = future.state
    if state.is_completed():
        pointer = future.result()
        return skipped_pointer(pointer) if state.name == "Cached" else pointer
    error = future.result(raise_on_failure=False)
    if isinstance(error, RunsFailed) and error.result:
        return error.result
    if not isinstance(error, BaseException):  # crashed or cancelled: record the run as failed all the same
        error = RuntimeError(state.message or f"export task ended {state.name}")
    return export_tasks.record_failed_run(plan, options, error).to_json()


def show_run_done(live: LiveRuns | None, pointer: dict) -> None:
    """A finished run on the terminal bar (if any) and in the flow run's progress artifact and run table."""
    sink = progress.active()
    if sink is not None:
        sink.on_run_done(pointer)
    if live is not None:
        is_failed = pointer["status"] == STATUS_FAILED
        error = failure_message(pointer["errors"][0]) if is_failed and pointer["errors"] else ""
        live.run_done(
            run_key(pointer["project_id"], pointer["run_id"]),
            pointer["status"],
            is_failed,
            pointer["points"],
            pointer["files"],
            pointer["bytes"],
            error,
        )


@flow(name="export-chunk", log_prints=False)
def export_chunk(plans: list[dict], options: dict, live: str = "", shared: dict | None = None) -> list[dict] | State:
    """Export up to `runs_per_task_batch` runs of one project: one task per run on the flow's thread pool.

    A run the plan skips (complete manifest, same modification time and options) may be answered from the task
    cache (shown as Cached in the UI); every other run refreshes the cache, so the manifest stays the truth.
    The chunk ends Failed when any of its runs failed (its pointers travel in the state), Cancelled when a stop
    request (Ctrl-C / SIGTERM) left runs to do. Run by a distributing parent on a worker (`shared`: flows/fan_out.py),
    it first checks it sees the parent's data path, then journals each run's result there.
    """
    bound_allocators()  # a worker's flow-run process is ours too (the CLI's did this at its start)
    parsed = library.ExportOptions.from_json(options)
    with export_tasks.run_exporters_closed() if shared is not None else nullcontext():  # a parent closes its own
        return fan_out.as_chunk(
            parsed.data_path, shared, lambda report: export_chunk_runs(plans, options, parsed, live, report)
        )


def export_chunk_runs(
    plans: list[dict], options: dict, parsed: library.ExportOptions, live: str, report: fan_out.ChunkReport
) -> list[dict] | State:
    """The chunk's runs, each one's result reported as it ends; the chunk's final state."""
    reuse, refresh = export_tasks.export_run, export_tasks.export_run.with_options(refresh_cache=True)

    def submit(plan: dict) -> PrefectFuture:
        task = reuse if plan["action"] == "skip" else refresh
        return task.submit(**export_tasks.export_run_call(plan, parsed))

    view = LiveRuns.find(live)
    pointers = []
    for future, plan in dispatch(submit, plans, parsed.workers, report.given_up):
        pointers.append(pointer_of(future, plan, options))
        report.finished(pointers[-1])
        show_run_done(view, pointers[-1])
    if report.given_up():
        return interrupted(
            f"given up (lost to its parent, or its parent replaced): {len(plans) - len(pointers)} run(s) left to its retry",
            [],
        )
    if cut_short(pointers, len(plans)):
        return interrupted(
            f"stopped on request: {len(plans) - len(pointers)} of {len(plans)} runs not started", pointers
        )
    failures = sum(pointer["status"] == STATUS_FAILED for pointer in pointers)
    return failed(f"{failures} of {len(pointers)} runs failed", pointers) if failures else pointers


def start_progress(plans: list[dict]) -> LiveRuns:
    """The live view of this export (progress artifact + run table); the terminal bar learns the total."""
    sink = progress.active()
    if sink is not None:
        sink.on_plan(len(plans))
    return LiveRuns("export", [run_key(p["run"]["project_id"], p["run"]["run_id"]) for p in plans])


def log_plan(plans: list[dict]) -> None:
    """At start: how many runs, and what the plan does with them."""
    actions = Counter(plan["action"] for plan in plans)
    projects = len({plan["run"]["project_id"] for plan in plans})
    get_run_logger().info(
        "%d run(s) planned in %d project(s): %d new, %d changed, %d unchanged, %d to redo (failed or incomplete before)",
        len(plans),
        projects,
        actions["full"],
        actions["incremental"],
        actions["skip"],
        actions["redo"],
    )
    redo = [plan for plan in plans if plan["action"] == "redo"]
    for plan in redo[:FAILURES_SHOWN]:  # why: failed or interrupted before, options changed, damaged parts
        get_run_logger().info(
            "to redo: %s: %s", run_key(plan["run"]["project_id"], plan["run"]["run_id"]), plan["reason"]
        )
    if len(redo) > FAILURES_SHOWN:
        get_run_logger().info("… and %d more run(s) to redo", len(redo) - FAILURES_SHOWN)


def log_totals(summary: dict, seconds: float) -> None:
    """At the end: counts, figures, duration and where the data is."""
    get_run_logger().info(
        "export finished in %s: %d exported, %d unchanged, %d failed · %s points, %s files, %s · data: %s · files: %s",
        progress.human_duration(seconds),
        summary["runs_complete"],
        summary["runs_skipped"],
        summary["runs_failed"],
        f"{summary['points']:,}",
        f"{summary['files']:,}",
        progress.human_bytes(summary["bytes"]),
        summary["data_path"],
        summary["files_path"],
    )


def project_rows(pointers: list[dict]) -> list[dict]:
    """One summary table row per project."""
    grouped: dict[str, list] = defaultdict(list)
    for pointer in pointers:
        grouped[pointer["project_id"]].append(export_results.RunExportResult.from_json(pointer))
    rows = []
    for project_id, results in sorted(grouped.items()):
        figures = export_results.totals(results)
        rows.append(
            {
                "project": project_id,
                **{k: figures[k] for k in ("runs_complete", "runs_skipped", "runs_failed", "points", "files", "bytes")},
            }
        )
    return rows


def summary_markdown(summary: dict, pointers: list[dict]) -> str:
    """The run's markdown report: totals, where the data is, each failure with its error and its fix in full."""
    lines = [
        "# Neptune export",
        "",
        f"- runs exported: **{summary['runs_complete']}**, unchanged: {summary['runs_skipped']}, "
        f"failed: **{summary['runs_failed']}**",
        f"- points: {summary['points']:,} · files: {summary['files']:,} · bytes: {summary['bytes']:,}",
        f"- data: `{summary['data_path']}` · files: `{summary['files_path']}`",
    ]
    failures = [p for p in pointers if p["status"] == STATUS_FAILED]
    if failures:
        lines += ["", "## Failed runs", ""]
        for pointer in sorted(failures, key=lambda p: (p["project_id"], p["run_id"]))[:FAILURES_SHOWN]:
            lines.append(f"- `{run_key(pointer['project_id'], pointer['run_id'])}`")
            lines += [f"  - {failure_message(record)}" for record in pointer["errors"]] or ["  - no error recorded"]
        if len(failures) > FAILURES_SHOWN:
            lines.append(f"- … and {len(failures) - FAILURES_SHOWN} more: see the error reports")
    if summary["error_reports"]:
        lines += ["", "Error reports (JSONL): " + ", ".join(f"`{p}`" for p in summary["error_reports"])]
    return "\n".join(lines)


def publish_summary(summary: dict, pointers: list[dict]) -> None:
    """Table and markdown summary artifacts of the run."""
    create_table_artifact(table=project_rows(pointers), key="export-summary", description="Runs per project")
    create_markdown_artifact(
        markdown=summary_markdown(summary, pointers), key="export-report", description="Export report"
    )


@flow(name="export", log_prints=False)
def export(
    source: str = "neptune3",
    projects: list[str] | None = None,
    selection: dict | None = None,
    paths: dict | None = None,
    workers: int = 4,
    if_locked: str = "stop",
    distribute: dict | None = None,
    processes: int | None = None,
) -> dict | State:
    """Export Neptune runs to Parquet + files: resumable, incremental; Failed when any run failed. Skipped when another
    export writes to the data path (flows/guard.py; `if_locked="wait"` waits for its lock instead). With `distribute`
    ({"work_pool": ..., "chunk_runs": ..., "max_parallel": ...}) the runs are exported by `export-chunk/<source>` flow
    runs on that work pool (flows/fan_out.py); the data path must be shared storage. `processes`: worker processes
    per flow-run process exporting the runs (0: its threads; default: cores - 1 for a remote source)."""
    bound_allocators()  # a deployment's flow-run process is ours too (the CLI's did this at its start)
    options = options_from_parameters(source, projects, selection, paths, workers, processes)
    distribution = Distribution.from_json(distribute) if distribute is not None else None
    if (skipped := guard.skip_if_data_path_busy(options.data_path)) is not None:
        return skipped
    checked = export_tasks.preflight(options.to_json(), return_state=True)  # before the lock: no folder on bad input
    if (refused := refusal(checked)) is not None:
        return refused
    projects = checked.result()
    try:
        with (
            library.export_lock(options, if_locked, on_wait=get_run_logger().warning),
            export_tasks.run_exporters_closed(),
        ):
            return export_locked(options, projects, distribution)
    except PathLockedError as error:
        return guard.locked_state(str(error))


def export_in_chunks(options: library.ExportOptions, plans: list[dict], live: LiveRuns) -> list[dict]:
    """The runs' results, from chunk subflows in this process."""
    chunk_flow = export_chunk.with_options(task_runner=ThreadPoolTaskRunner(max_workers=options.workers))
    pointers: list[dict] = []
    for chunk in plan_chunks(plans, Settings.from_env().runs_per_task_batch):
        if interrupt.requested():
            break
        pointers += run_subflow(chunk_flow, chunk, detached(options.to_json()), live.token)
    return pointers


def export_locked(
    options: library.ExportOptions, projects: list[str], distribution: Distribution | None = None
) -> dict | State:
    """The export flow's work on the projects preflight passed, while it holds the data path's lock."""
    options_json = options.to_json()
    started = time.monotonic()
    fan = None if distribution is None else fan_out.FanOut(options, distribution, lambda p: show_run_done(live, p))
    if fan is not None:  # before the plan: the chunks of a killed parent stop first, the plan sees what they did
        fan.start()
    plans = export_tasks.discover_and_plan(options_json, projects)
    log_plan(plans)
    live = start_progress(plans)
    pointers = export_in_chunks(options, plans, live) if fan is None else fan.run(plans)
    live.close()
    summary = export_tasks.write_export_summary(detached(pointers), detached(options_json))
    if fan is not None:
        fan.finish()
    publish_summary(summary, pointers)
    log_totals(summary, time.monotonic() - started)
    if cut_short(pointers, len(plans)):
        return stopped(summary, sum(p["status"] in (STATUS_COMPLETE, "skipped") for p in pointers), len(plans))
    if summary["runs_failed"]:
        return failed(f"{summary['runs_failed']} of {len(pointers)} runs failed", summary)
    return summary


def run_export_in_process(
    options: library.ExportOptions, if_locked: str = "stop", distribute: dict | None = None
) -> dict:
    """Run the export flow here (PREFECT_API_URL or the local server); its summary. A flow-level error re-raises."""
    return run_in_process(export, **flow_parameters(options), if_locked=if_locked, distribute=distribute)

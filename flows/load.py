"""The `load` flow: check the target → runs in fork waves → per-run load tasks in chunked subflows → validation."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from flows import fan_out, guard
from flows.live import LiveRuns
from flows.runtime import cut_short, dispatch, run_subflow, stopped
from flows.validate import (
    chunks,
    distributed_options,
    finished_results,
    publish_report,
    run_key,
    selected_waves,
    validate_runs,
    workers_of,
)
from neptune_exporter import interrupt, progress
from neptune_exporter import load as library
from neptune_exporter.errors import PathLockedError, failure_message
from neptune_exporter.settings import Settings
from neptune_exporter.storage.fan_out import Distribution
from tasks import load as load_tasks
from tasks.policy import detached, failed, interrupted


def show_run_done(live: LiveRuns | None, result: dict) -> None:
    """A loaded (or failed) run on the terminal bar (if any) and in the progress artifact and run table."""
    sink = progress.active()
    if sink is not None:
        sink.on_points(int(result.get("points") or 0), 0)  # loaders report a run's points when it ends
        sink.on_run_done(result)
    if live is not None:
        is_failed = result["status"] == "failed"
        live.run_done(
            run_key(result),
            result["status"],
            is_failed,
            result["points"],
            result["files"],
            error=failure_message(result["error"]) if is_failed else "",
        )


def failed_load(run: dict, error: BaseException) -> dict:
    """The result of a load task that ended without one (an unexpected error)."""
    record = {
        "error_type": type(error).__name__,
        "message": str(error) or repr(error),
        "remedy": "run the load again; if it keeps failing, report the error with the log",
    }
    return not_loaded(run, record)


def not_loaded(run: dict, record: dict) -> dict:
    """The result of a run that was not loaded, with its error record."""
    return {
        "project_id": run["project_id"],
        "run_id": run["run_id"],
        "status": "failed",
        "target_run_id": None,
        "points": 0,
        "files": 0,
        "error": record,
    }


@flow(name="load-chunk", log_prints=False)
def load_chunk(options: dict, runs: list[dict], live: str = "", shared: dict | None = None) -> list[dict] | State:
    """Load up to `runs_per_task_batch` runs of one fork wave: one task per run; Failed when any run failed,
    Cancelled when a stop request (Ctrl-C / SIGTERM) left runs to do (the runs being loaded finish first). Run by a
    distributing parent on a worker (`shared`: flows/fan_out.py), it first checks it sees the parent's data path,
    then journals each run's result there."""
    return fan_out.as_chunk(options["data_path"], shared, lambda report: load_chunk_runs(options, runs, live, report))


def load_chunk_runs(options: dict, runs: list[dict], live: str, report: fan_out.ChunkReport) -> list[dict] | State:
    """The chunk's runs, each one's result reported as it ends; the chunk's final state."""
    submit = lambda run: load_tasks.load_run.submit(detached(options), detached(run))
    view = LiveRuns.find(live)
    results = []
    for result in finished_results(dispatch(submit, runs, workers_of(options), report.given_up), failed_load):
        results.append(result)
        report.finished(result)
        show_run_done(view, result)
    if report.given_up():
        return interrupted(
            f"given up (lost to its parent, or its parent replaced): {len(runs) - len(results)} run(s) left to its retry",
            [],
        )
    if cut_short(results, len(runs)):
        return interrupted(f"stopped on request: {len(runs) - len(results)} of {len(runs)} runs not started", results)
    failures = sum(result["status"] == "failed" for result in results)
    return failed(f"{failures} of {len(results)} runs failed to load", results) if failures else results


def project_rows(results: list[dict]) -> list[dict]:
    """Runs loaded / skipped / failed and points per project."""
    grouped: dict[str, Counter] = defaultdict(Counter)
    for result in results:
        grouped[result["project_id"]][result["status"]] += 1
        grouped[result["project_id"]]["points"] += result["points"]
    return [
        {"project": p, **{k: c[k] for k in ("loaded", "skipped", "failed", "points")}}
        for p, c in sorted(grouped.items())
    ]


def start_progress(waves: list[list[dict]]) -> LiveRuns:
    """The live view of this load (progress artifact + run table); the terminal bar learns the total."""
    runs = [run for wave in waves for run in wave]
    sink = progress.active()
    if sink is not None:
        sink.on_plan(len(runs))
    get_run_logger().info("%d run(s) to load in %d fork wave(s)", len(runs), len(waves))
    return LiveRuns("load", [run_key(run) for run in runs], with_bytes=False)


def load_summary(target: str, results: list[dict]) -> dict:
    """Counts by status and each failure with its error and fix."""
    counts = Counter(r["status"] for r in results)
    summary = {"target": target, "runs": len(results), **{k: counts[k] for k in ("loaded", "skipped", "failed")}}
    summary["failures"] = [
        {"project_id": r["project_id"], "run_id": r["run_id"], **(r["error"] or {})}
        for r in results
        if r["status"] == "failed"
    ]
    return summary


@flow(name="load", log_prints=False)
def load(
    options: dict | None = None, run_validation: bool = True, if_locked: str = "stop", distribute: dict | None = None
) -> dict | State:
    """Load exported runs into the target (idempotent, resumable), then validate them; Failed on failures or
    differences. Skipped when another load of this export into this target runs (`if_locked="wait"` waits). With
    `distribute` ({"work_pool": ..., "chunk_runs": ..., "max_parallel": ...}) the runs are loaded (and validated) by
    `load-chunk/<target>` (`validate-chunk/<target>`) flow runs on that work pool (flows/fan_out.py); the data path
    must be shared storage. Only this parent holds the load's lock."""
    parsed = library.LoadOptions.from_json(options or {})
    distribution = Distribution.from_json(distribute) if distribute is not None else None
    if distribution is not None:
        parsed = distributed_options(parsed)
    try:
        with library.load_lock(parsed, if_locked, on_wait=get_run_logger().warning):
            return load_locked(parsed, run_validation, distribution)
    except PathLockedError as error:
        return guard.locked_state(str(error))


def load_in_chunks(options: dict, waves: list[list[dict]], live: LiveRuns) -> list[dict]:
    """The runs' results, from chunk subflows in this process, wave after wave."""
    chunk_flow = load_chunk.with_options(task_runner=ThreadPoolTaskRunner(max_workers=workers_of(options)))
    results: list[dict] = []
    for wave in waves:  # parents before their forks, so forks can link to them
        for chunk in chunks(wave, Settings.from_env().runs_per_task_batch):
            if not interrupt.requested():
                results += run_subflow(chunk_flow, detached(options), chunk, live.token)
    return results


def load_distributed(options: dict, waves: list[list[dict]], live: LiveRuns, distribution: Distribution) -> list[dict]:
    """The runs' results, from `load-chunk/<target>` flow runs on the work pool, wave after wave."""
    fan = fan_out.RunsFanOut(
        "load-chunk", options, distribution, lambda result: show_run_done(live, result), not_loaded
    )
    results: list[dict] = []
    for wave in waves:  # a wave's chunks all end before the next wave's forks start
        if not interrupt.requested():
            results += fan.run(wave)
    fan.finish()
    return results


def load_locked(
    parsed: library.LoadOptions, run_validation: bool, distribution: Distribution | None = None
) -> dict | State:
    """The load flow's work, while it holds the lock of this export's loads into this target."""
    options, started = parsed.to_json(), time.monotonic()
    waves = selected_waves(options)
    if isinstance(waves, State):
        return waves
    live = start_progress(waves)
    if distribution is None:
        results = load_in_chunks(options, waves, live)
    else:
        results = load_distributed(options, waves, live, distribution)
    live.close()
    create_table_artifact(table=project_rows(results), key=f"load-{parsed.target}", description="Runs per project")
    summary = load_summary(parsed.target, results)
    get_run_logger().info(
        "load into %s finished in %s: %d loaded, %d already complete, %d failed · %s points",
        parsed.target,
        progress.human_duration(time.monotonic() - started),
        summary["loaded"],
        summary["skipped"],
        summary["failed"],
        f"{sum(r['points'] for r in results):,}",
    )
    planned = sum(len(wave) for wave in waves)
    if cut_short(results, planned):  # stopped on request: no validation of a partial load
        return stopped(summary, summary["loaded"] + summary["skipped"], planned)
    if run_validation:
        summary["validation"] = publish_report(
            validate_runs(options, detached([run for wave in waves for run in wave]), distribution), options
        )
    problems = summary["failed"] + summary.get("validation", {}).get("runs_with_differences", 0)
    if problems:
        return failed(f"{summary['failed']} run(s) failed, {problems - summary['failed']} run(s) differ", summary)
    return summary

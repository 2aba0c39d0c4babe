"""The `load` flow: check the target → runs in fork waves → per-run load tasks in chunked subflows → validation."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Optional

from prefect import flow
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.runtime import run_subflow
from flows.validate import chunks, publish_report, validate_runs
from neptune_exporter import load as library
from neptune_exporter import progress
from neptune_exporter.settings import Settings
from tasks import load as load_tasks

PROGRESS_EVERY_SECONDS = 2.0


class LoadTracker:
    """Counts finished runs: terminal bar (if any) and the Prefect progress artifact, throttled."""

    def __init__(self, artifact_id: str | None, total: int):
        self.artifact_id, self.total, self.done, self._last = artifact_id, total, 0, 0.0

    def run_done(self, result: dict) -> None:
        self.done += 1
        sink = progress.active()
        if sink is not None:
            sink.on_points(int(result.get("points") or 0), 0)  # loaders report a run's points when it ends
            sink.on_run_done(result)
        if self.artifact_id and (time.monotonic() - self._last >= PROGRESS_EVERY_SECONDS or self.done == self.total):
            update_progress_artifact(self.artifact_id, progress=100.0 * self.done / max(1, self.total))
            self._last = time.monotonic()


@flow(name="load-chunk", log_prints=False)
def load_chunk(options: dict, runs: list[dict], progress_state: dict) -> list[dict]:
    """Load up to `runs_per_task_batch` runs of one fork wave: one task per run on the flow's thread pool."""
    tracker = LoadTracker(**progress_state)
    futures = [load_tasks.load_run.submit(options, run) for run in runs]
    results = []
    for future in as_completed(futures):
        results.append(future.result())
        tracker.run_done(results[-1])
    return results


def project_rows(results: list[dict]) -> list[dict]:
    """Runs loaded / skipped / failed and points per project."""
    grouped: dict[str, Counter] = defaultdict(Counter)
    for result in results:
        grouped[result["project_id"]][result["status"]] += 1
        grouped[result["project_id"]]["points"] += result["points"]
    return [{"project": p, **{k: c[k] for k in ("loaded", "skipped", "failed", "points")}} for p, c in sorted(grouped.items())]


def start_progress(total: int) -> str | None:
    sink = progress.active()
    if sink is not None:
        sink.on_plan(total)
    artifact = create_progress_artifact(progress=0.0, key="load-progress", description=f"Runs loaded of {total}")
    return str(artifact) if artifact else None


@flow(name="load", log_prints=False)
def load(options: Optional[dict] = None, run_validation: bool = True) -> dict:
    """Load exported runs into the target (idempotent, resumable), then validate them; Failed on failures or differences."""
    parsed = library.LoadOptions.from_json(options or {})
    options = parsed.to_json()
    waves = load_tasks.select_runs(options)
    load_tasks.check_target(options)
    total = sum(len(wave) for wave in waves)
    state = {"artifact_id": start_progress(total), "total": total}
    chunk_flow = load_chunk.with_options(task_runner=ThreadPoolTaskRunner(max_workers=max(1, parsed.workers)))
    results: list[dict] = []
    for wave in waves:  # parents before their forks, so forks can link to them
        for chunk in chunks(wave, Settings.from_env().runs_per_task_batch):
            results += run_subflow(chunk_flow, options, chunk, state)
    create_table_artifact(table=project_rows(results), key=f"load-{parsed.target}", description="Runs per project")
    counts = Counter(r["status"] for r in results)
    summary = {"target": parsed.target, "runs": len(results), **{k: counts[k] for k in ("loaded", "skipped", "failed")}}
    summary["failures"] = [{"project_id": r["project_id"], "run_id": r["run_id"], **(r["error"] or {})} for r in results if r["status"] == "failed"]
    if run_validation:
        summary["validation"] = publish_report(validate_runs(options, [run for wave in waves for run in wave]), options)
    problems = summary["failed"] + summary.get("validation", {}).get("runs_with_differences", 0)
    if problems:
        return Failed(message=f"{summary['failed']} run(s) failed, {problems - summary['failed']} run(s) differ", data=summary)
    return summary

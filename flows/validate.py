"""The `validate` flow: compare every exported run with its copy in the target; report as files + Prefect artifacts."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from flows.live import LiveRuns
from flows.runtime import cut_short, dispatch, refusal, run_subflow, stopped
from neptune_exporter import interrupt
from neptune_exporter import load as library
from neptune_exporter.settings import Settings
from neptune_exporter.validation.report import RunValidation, ValidationReport
from tasks import load as load_tasks
from tasks.policy import RunsFailed, detached, failed, interrupted

TABLE_ROWS_SHOWN = 1000


def chunks(runs: list[dict], size: int) -> Iterator[list[dict]]:
    """Runs in chunks of at most `size` (one subflow each keeps a flow run under Prefect's task-run comfort zone)."""
    for start in range(0, len(runs), max(1, size)):
        yield runs[start : start + size]


def run_key(run: dict) -> str:
    return f"{run['project_id']}/{run['run_id']}"


def finished_results(
    finished: Iterable[tuple[PrefectFuture, dict]], on_error: Callable[[dict, BaseException], dict]
) -> Iterator[dict]:
    """Per-run task results as they finish (`runtime.dispatch`); a Failed task's result travels in its state
    (`RunsFailed`), an unexpected error becomes `on_error(run, error)`."""
    for future, run in finished:
        future.wait()  # the final state locally (otherwise `state` asks the API, which may lag)
        outcome = future.result(raise_on_failure=False)
        if isinstance(outcome, RunsFailed) and outcome.result:
            yield outcome.result
        elif isinstance(outcome, BaseException) or not future.state.is_completed():
            error = (
                outcome
                if isinstance(outcome, BaseException)
                else RuntimeError(future.state.message or future.state.name)
            )
            yield on_error(run, error)
        else:
            yield outcome


def unvalidated(run: dict, error: BaseException) -> dict:
    """The entry of a run whose validation task ended without one (an unexpected error)."""
    record = {
        "error_type": type(error).__name__,
        "message": str(error) or repr(error),
        "remedy": "run the validation again; if it keeps failing, report the error with the log",
    }
    return RunValidation(run["project_id"], run["run_id"], None, error=record).to_json()


@flow(name="validate-chunk", log_prints=False)
def validate_chunk(options: dict, runs: list[dict], live: str = "") -> list[dict] | State:
    """Validate up to `runs_per_task_batch` runs: one task per run; Failed when any run differs, Cancelled when a stop
    request left runs unchecked."""
    submit = lambda run: load_tasks.validate_run.submit(detached(options), detached(run))
    view = LiveRuns.find(live)
    results = []
    for result in finished_results(dispatch(submit, runs, workers_of(options)), unvalidated):
        results.append(result)
        if view is not None:
            view.run_done(
                run_key(result),
                "ok" if result["ok"] else "differs",
                not result["ok"],
                int(result["checked"].get("points") or 0),
                int(result["checked"].get("artifacts") or 0),
            )
    if cut_short(results, len(runs)):
        return interrupted(f"stopped on request: {len(runs) - len(results)} of {len(runs)} runs not checked", results)
    differing = sum(not result["ok"] for result in results)
    return failed(f"{differing} of {len(results)} runs differ", results) if differing else results


def workers_of(options: dict) -> int:
    """Runs handled at the same time: the task runner's workers."""
    return max(1, library.LoadOptions.from_json(options).workers)


def validate_runs(options: dict, runs: list[dict]) -> ValidationReport:
    """Every run validated (chunked subflows, with a live `validate-progress` artifact); the assembled report."""
    parsed = library.LoadOptions.from_json(options)
    chunk_flow = validate_chunk.with_options(task_runner=ThreadPoolTaskRunner(max_workers=workers_of(options)))
    report = ValidationReport(target=parsed.target)
    live = LiveRuns("validate", [run_key(run) for run in runs], with_bytes=False, table=False)
    for chunk in chunks(runs, Settings.from_env().runs_per_task_batch):
        if interrupt.requested():
            break
        report.runs.extend(
            RunValidation.from_json(data) for data in run_subflow(chunk_flow, detached(options), chunk, live.token)
        )
    live.close()
    report.runs.sort(key=lambda run: (run.project_id, run.run_id))
    return report


def publish_report(report: ValidationReport, options: dict) -> dict:
    """Write JSON + markdown next to the data, publish table + markdown artifacts; a small summary (logged)."""
    json_path, md_path = report.write(library.report_dir(library.LoadOptions.from_json(options)))
    create_table_artifact(
        table=report.table_rows()[:TABLE_ROWS_SHOWN],
        key=f"validation-{report.target}",
        description="Runs compared with the export",
    )
    create_markdown_artifact(
        markdown=report.to_markdown(), key=f"validation-{report.target}-report", description="Validation report"
    )
    summary = {
        "target": report.target,
        "runs_checked": len(report.runs),
        "runs_with_differences": len(report.failed_runs),
        "differences": len(report.differences),
        "verdict": report.verdict(),
        "not_validated": [
            {"project_id": run.project_id, "run_id": run.run_id, **run.error} for run in report.unvalidated
        ][:TABLE_ROWS_SHOWN],
        "report_json": str(json_path),
        "report_markdown": str(md_path),
    }
    get_run_logger().info(
        "validation against %s: %d run(s) checked, %d with differences (%d difference(s)) · report: %s",
        report.target,
        summary["runs_checked"],
        summary["runs_with_differences"],
        summary["differences"],
        md_path,
    )
    return summary


def selected_waves(options: dict) -> list[list[dict]] | State:
    """The runs to load or validate in fork waves once the export and the target passed their checks; otherwise the
    flow's Failed final state, saying what was refused and the fix."""
    selected = load_tasks.select_runs(options, return_state=True)
    refused = refusal(selected) or refusal(load_tasks.check_target(detached(options), return_state=True))
    return refused if refused is not None else selected.result()


@flow(name="validate", log_prints=False)
def validate(options: dict | None = None) -> dict | State:
    """Compare params, tags, every metric point and every file in the target with the export; Failed on any difference."""
    parsed = library.LoadOptions.from_json(options or {})
    options = parsed.to_json()
    waves = selected_waves(options)
    if isinstance(waves, State):
        return waves
    runs = detached([run for wave in waves for run in wave])
    report = validate_runs(options, runs)
    if len(report.runs) < len(runs):  # stopped on request: a partial report would say too little
        return stopped({"target": report.target, "runs_checked": len(report.runs)}, len(report.runs), len(runs))
    summary = publish_report(report, options)
    if summary["runs_with_differences"]:
        return failed(summary["verdict"], summary)
    return summary

"""The `validate` flow: compare every exported run with its copy in the target; report as files + Prefect artifacts."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from flows import fan_out
from flows.live import LiveRuns
from flows.runtime import cut_short, dispatch, refusal, result_of, run_subflow, stopped
from flows.validate_source import validate_source
from neptune_exporter import interrupt, locations
from neptune_exporter import load as library
from neptune_exporter.settings import COMET_OFFLINE_DIR, WANDB_OFFLINE_DIR, Settings
from neptune_exporter.storage.fan_out import Distribution
from neptune_exporter.storage.zenml_store import DEFAULT_ZENML_DIR
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
    return not_validated(run, record)


def not_validated(run: dict, record: dict) -> dict:
    """The entry of a run that was not validated, with its error record."""
    return RunValidation(run["project_id"], run["run_id"], None, error=record).to_json()


def distributed_options(options: library.LoadOptions) -> library.LoadOptions:
    """Options a chunk on another machine reads the same: absolute paths (InvalidOptionError on a relative one; W&B's
    offline folder as well, else each worker would write its runs in its own working directory)."""
    wandb_dir, zenml_dir, goodseed_home = options.wandb_dir, options.zenml_dir, options.goodseed_home
    if options.target == "goodseed":  # the parent's home, the same on every worker (not each one's GOODSEED_HOME)
        home = goodseed_home or os.environ.get("GOODSEED_HOME") or os.path.expanduser("~/.goodseed")
        goodseed_home = locations.require_absolute(home, "options.goodseed_home")
    if options.target == "wandb":
        wandb_dir = locations.require_absolute(wandb_dir or WANDB_OFFLINE_DIR, "options.wandb_dir")
    comet_dir = options.comet_dir
    if options.target == "comet":  # each worker would otherwise write its archives in its own working directory
        comet_dir = locations.require_absolute(comet_dir or COMET_OFFLINE_DIR, "options.comet_dir")
    if options.target == "zenml":  # each worker's ZenML would otherwise open its own store
        zenml_dir = locations.require_absolute(zenml_dir or DEFAULT_ZENML_DIR, "options.zenml_dir")
    return replace(
        options,
        data_path=locations.require_absolute(options.data_path, "options.data_path"),
        files_path=locations.require_absolute(options.files_path, "options.files_path"),
        wandb_dir=wandb_dir,
        zenml_dir=zenml_dir,
        goodseed_home=goodseed_home,
        comet_dir=comet_dir,
    )


@flow(name="validate-chunk", log_prints=False)
def validate_chunk(options: dict, runs: list[dict], live: str = "", shared: dict | None = None) -> list[dict] | State:
    """Validate up to `runs_per_task_batch` runs: one task per run; Failed when any run differs, Cancelled when a stop
    request left runs unchecked. Run by a distributing parent on a worker (`shared`), it first checks it sees the
    parent's data path, then journals each run's entry there."""
    return fan_out.as_chunk(
        options["data_path"], shared, lambda report: validate_chunk_runs(options, runs, live, report)
    )


def validate_chunk_runs(options: dict, runs: list[dict], live: str, report: fan_out.ChunkReport) -> list[dict] | State:
    """The chunk's runs, each one's entry reported as it ends; the chunk's final state."""
    submit = lambda run: load_tasks.validate_run.submit(detached(options), detached(run))
    view = LiveRuns.find(live)
    results = []
    for result in finished_results(dispatch(submit, runs, workers_of(options), report.given_up), unvalidated):
        results.append(result)
        report.finished(result)
        show_checked(view, result)
    if report.given_up():
        return interrupted(
            f"given up (lost to its parent, or its parent replaced): {len(runs) - len(results)} run(s) left to its retry",
            [],
        )
    if cut_short(results, len(runs)):
        return interrupted(f"stopped on request: {len(runs) - len(results)} of {len(runs)} runs not checked", results)
    differing = sum(not result["ok"] for result in results)
    return failed(f"{differing} of {len(results)} runs differ", results) if differing else results


def show_checked(view: LiveRuns | None, result: dict) -> None:
    """A validated run in the live view (if any)."""
    if view is not None:
        view.run_done(
            run_key(result),
            "ok" if result["ok"] else "differs",
            not result["ok"],
            int(result["checked"].get("points") or 0),
            int(result["checked"].get("artifacts") or 0),
        )


def workers_of(options: dict) -> int:
    """Runs handled at the same time: the task runner's workers."""
    return max(1, library.LoadOptions.from_json(options).workers)


def validate_runs(options: dict, runs: list[dict], distribution: Distribution | None = None) -> ValidationReport:
    """Every run validated (chunked subflows here, or `validate-chunk/<target>` flow runs on a work pool with
    `distribution`; a live `validate-progress` artifact); the assembled report."""
    parsed = library.LoadOptions.from_json(options)
    report = ValidationReport(target=parsed.target)
    live = LiveRuns("validate", [run_key(run) for run in runs], with_bytes=False, table=False)
    if distribution is None:
        entries = validate_in_chunks(options, runs, live)
    else:
        fan = fan_out.RunsFanOut(
            "validate-chunk", options, distribution, lambda entry: show_checked(live, entry), not_validated
        )
        entries = fan.run(runs)
        fan.finish()
    report.runs.extend(RunValidation.from_json(data) for data in entries)
    live.close()
    report.runs.sort(key=lambda run: (run.project_id, run.run_id))
    return report


def validate_in_chunks(options: dict, runs: list[dict], live: LiveRuns) -> list[dict]:
    """The runs' entries, from chunk subflows in this process."""
    chunk_flow = validate_chunk.with_options(task_runner=ThreadPoolTaskRunner(max_workers=workers_of(options)))
    entries: list[dict] = []
    for chunk in chunks(runs, Settings.from_env().runs_per_task_batch):
        if interrupt.requested():
            break
        entries += run_subflow(chunk_flow, detached(options), chunk, live.token)
    return entries


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
def validate(options: dict | None = None, distribute: dict | None = None) -> dict | State:
    """Compare params, tags, every metric point and every file in the target with the export; Failed on any difference.
    With `distribute` ({"work_pool": ..., "chunk_runs": ..., "max_parallel": ...}) the runs are compared by
    `validate-chunk/<target>` flow runs on that work pool; the data path must be shared storage. With
    `options.against` (neptune3|neptune2, deployments `validate/neptune3|2`) the export is compared with its live
    source instead, by the `validate-source` subflow, whose final state this flow takes."""
    if (options or {}).get("against"):
        audit = validate_source(options=options, return_state=True)
        return result_of(audit) if audit.is_completed() else audit
    parsed = library.LoadOptions.from_json(options or {})
    distribution = Distribution.from_json(distribute) if distribute is not None else None
    if distribution is not None:
        parsed = distributed_options(parsed)
    options = parsed.to_json()
    waves = selected_waves(options)
    if isinstance(waves, State):
        return waves
    runs = detached([run for wave in waves for run in wave])
    report = validate_runs(options, runs, distribution)
    if len(report.runs) < len(runs):  # stopped on request: a partial report would say too little
        return stopped({"target": report.target, "runs_checked": len(report.runs)}, len(report.runs), len(runs))
    summary = publish_report(report, options)
    if summary["runs_with_differences"]:
        return failed(summary["verdict"], summary)
    return summary

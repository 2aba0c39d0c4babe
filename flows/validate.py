"""The `validate` flow: compare every exported run with its copy in the target; report as files + Prefect artifacts."""

from __future__ import annotations

from typing import Iterator, Optional

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import as_completed
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.runtime import run_subflow
from neptune_exporter import load as library
from neptune_exporter.settings import Settings
from neptune_exporter.validation.report import RunValidation, ValidationReport
from tasks import load as load_tasks

TABLE_ROWS_SHOWN = 1000


def chunks(runs: list[dict], size: int) -> Iterator[list[dict]]:
    """Runs in chunks of at most `size` (one subflow each keeps a flow run under Prefect's task-run comfort zone)."""
    for start in range(0, len(runs), max(1, size)):
        yield runs[start : start + size]


@flow(name="validate-chunk", log_prints=False)
def validate_chunk(options: dict, runs: list[dict]) -> list[dict]:
    """Validate up to `runs_per_task_batch` runs: one task per run on the flow's thread pool."""
    futures = [load_tasks.validate_run.submit(options, run) for run in runs]
    return [future.result() for future in as_completed(futures)]


def validate_runs(options: dict, runs: list[dict]) -> ValidationReport:
    """Every run validated (chunked subflows); the assembled report."""
    parsed = library.LoadOptions.from_json(options)
    chunk_flow = validate_chunk.with_options(task_runner=ThreadPoolTaskRunner(max_workers=max(1, parsed.workers)))
    report = ValidationReport(target=parsed.target)
    for chunk in chunks(runs, Settings.from_env().runs_per_task_batch):
        report.runs.extend(RunValidation.from_json(data) for data in run_subflow(chunk_flow, options, chunk))
    report.runs.sort(key=lambda run: (run.project_id, run.run_id))
    return report


def publish_report(report: ValidationReport, options: dict) -> dict:
    """Write JSON + markdown next to the data, publish table + markdown artifacts; a small summary."""
    json_path, md_path = report.write(library.report_dir(library.LoadOptions.from_json(options)))
    create_table_artifact(table=report.table_rows()[:TABLE_ROWS_SHOWN], key=f"validation-{report.target}", description="Runs compared with the export")
    create_markdown_artifact(markdown=report.to_markdown(), key=f"validation-{report.target}-report", description="Validation report")
    return {
        "target": report.target,
        "runs_checked": len(report.runs),
        "runs_with_differences": len(report.failed_runs),
        "differences": len(report.differences),
        "report_json": str(json_path),
        "report_markdown": str(md_path),
    }


@flow(name="validate", log_prints=False)
def validate(options: Optional[dict] = None) -> dict:
    """Compare params, tags, every metric point and every file in the target with the export; Failed on any difference."""
    parsed = library.LoadOptions.from_json(options or {})
    options = parsed.to_json()
    runs = [run for wave in load_tasks.select_runs(options) for run in wave]
    load_tasks.check_target(options)
    summary = publish_report(validate_runs(options, runs), options)
    if summary["runs_with_differences"]:
        return Failed(message=f"{summary['differences']} difference(s) in {summary['runs_with_differences']} run(s)", data=summary)
    return summary

"""The `validate-source` flow: compare the export with the Neptune server it came from; report as files + artifacts."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import State

from flows.runtime import refusal
from neptune_exporter.validation import source_audit as library
from neptune_exporter.validation.report import RunValidation
from tasks import source_audit as audit_tasks
from tasks.policy import detached, failed

TABLE_ROWS_SHOWN = 1000


def publish(report: library.SourceAuditReport, options: library.AuditOptions) -> dict:
    """Write JSON + markdown, publish the table and markdown artifacts; a small summary (logged)."""
    json_path, md_path = report.write(library.audit_report_dir(options), stem=f"validation_source_{report.target}")
    create_table_artifact(
        table=report.table_rows()[:TABLE_ROWS_SHOWN],
        key=f"validation-source-{report.target}",
        description=f"Exported runs compared with the {report.target} server",
    )
    create_markdown_artifact(
        markdown=report.to_markdown(),
        key=f"validation-source-{report.target}-report",
        description="Source validation report",
    )
    summary = {
        "target": report.target,
        "runs_checked": len(report.runs),
        "runs_with_differences": len(report.failed_runs),
        "differences": len(report.differences),
        "runs_not_on_server": len(report.not_on_server),
        "not_compared": report.not_compared,
        "verdict": report.verdict(),
        "not_validated": [{"project_id": r.project_id, "run_id": r.run_id, **r.error} for r in report.unvalidated],
        "report_json": str(json_path),
        "report_markdown": str(md_path),
    }
    get_run_logger().info(
        "validation against the %s server: %d run(s) checked, %s · report: %s",
        report.target,
        summary["runs_checked"],
        summary["verdict"],
        md_path,
    )
    return summary


@flow(name="validate-source", log_prints=False)
def validate_source(options: dict | None = None) -> dict | State:
    """Compare the export with the live Neptune server (run list, attribute types, atoms, series tails, file sizes;
    with `options.deep` every point and each single file's sha256); Failed on any difference. Runs are selected as
    `export` selects them (`options.runs`). The token comes from NEPTUNE_API_TOKEN. Deployments `validate/neptune3|2`
    run it as a subflow of `validate`."""
    parsed = library.AuditOptions.from_json(
        {"data_path": "./exports/data", "files_path": "./exports/files", **(options or {})}
    )
    if (refused := refusal(audit_tasks.check_options(parsed.to_json(), return_state=True))) is not None:
        return refused
    report = library.new_report(parsed)
    futures = [audit_tasks.audit_project.submit(detached(parsed.to_json()), project) for project in parsed.projects]
    for future in futures:
        future.wait()
        if (refused := refusal(future.state)) is not None:
            return refused
        report.runs.extend(RunValidation.from_json(run) for run in future.result())
    report.runs.sort(key=lambda run: (run.project_id, run.run_id))
    summary = publish(report, parsed)
    return failed(summary["verdict"], summary) if not report.ok else summary

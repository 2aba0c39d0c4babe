"""What an export produced: per-run results, their error records, totals, `errors.jsonl` and `export_summary.json`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from neptune_exporter.errors import NeptuneExporterError
from neptune_exporter.selection import ExportOptions
from neptune_exporter.storage.manifest import STATUS_COMPLETE, STATUS_FAILED, replacing, utc_now_iso, write_json_atomic
from neptune_exporter.storage.parquet import project_dir

SUMMARY_FILE = "export_summary.json"
ERRORS_FILE = "errors.jsonl"


@dataclass
class RunExportResult:
    """Outcome of one run's export (small and JSON-able: a pointer to the manifest plus figures)."""

    project_id: str
    run_id: str
    status: str  # "complete" | "failed" | "skipped"
    manifest_path: str | None
    rows: int = 0
    points: int = 0
    files: int = 0
    bytes: int = 0
    errors: list[dict] = field(default_factory=list)
    action: str = ""

    def to_json(self) -> dict:
        return {
            "project_id": self.project_id,
            "run_id": self.run_id,
            "status": self.status,
            "manifest_path": self.manifest_path,
            "rows": self.rows,
            "points": self.points,
            "files": self.files,
            "bytes": self.bytes,
            "errors": self.errors,
            "action": self.action,
        }

    @classmethod
    def from_json(cls, data: dict) -> RunExportResult:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def error_record(project_id: str, run_id: str | None, error: BaseException) -> dict:
    """One error report line: project, run, attribute, error type, message, remedy."""
    if isinstance(error, NeptuneExporterError):
        return {
            "project": project_id,
            "run": error.run or run_id,
            "attribute": error.attribute,
            "error_type": type(error).__name__,
            "message": error.message,
            "remedy": error.remedy,
        }
    return {
        "project": project_id,
        "run": run_id,
        "attribute": None,
        "error_type": type(error).__name__,
        "message": str(error) or repr(error),
        "remedy": "run the export again; if it keeps failing, report the error with the log",
    }


def _by_project(results: Iterable[RunExportResult]) -> dict[str, list[RunExportResult]]:
    grouped: dict[str, list[RunExportResult]] = {}
    for result in results:
        grouped.setdefault(result.project_id, []).append(result)
    return grouped


def totals(results: Iterable[RunExportResult]) -> dict:
    """Runs by status and summed figures."""
    results = list(results)
    return {
        "runs_complete": sum(r.status == STATUS_COMPLETE for r in results),
        "runs_failed": sum(r.status == STATUS_FAILED for r in results),
        "runs_skipped": sum(r.status == "skipped" for r in results),
        "rows": sum(r.rows for r in results),
        "points": sum(r.points for r in results),
        "files": sum(r.files for r in results),
        "bytes": sum(r.bytes for r in results),
    }


def write_error_report(data_root: Path | str, results: Iterable[RunExportResult]) -> list[Path]:
    """Per project `errors.jsonl` (project, run, attribute, error_type, message, remedy) of this export."""
    written = []
    for project_id, project_results in sorted(_by_project(results).items()):
        path = project_dir(data_root, project_id) / ERRORS_FILE
        with replacing(path) as handle:
            for result in project_results:
                for record in result.errors:
                    handle.write(json.dumps(record, default=str) + "\n")
        written.append(path)
    return written


def write_export_summary(
    data_root: Path | str, results: Iterable[RunExportResult], options: ExportOptions
) -> list[Path]:
    """Per project `export_summary.json`: runs ok/failed/skipped, totals, per-run errors; plus `errors.jsonl`."""
    results = list(results)
    written = []
    for project_id, project_results in sorted(_by_project(results).items()):
        summary = {
            "project_id": project_id,
            "exported_at": utc_now_iso(),
            "options": options.to_json(),
            **totals(project_results),
            "runs": {r.run_id: {"status": r.status, "action": r.action} for r in project_results},
            "failures": [
                {"run_id": r.run_id, "errors": r.errors} for r in project_results if r.status == STATUS_FAILED
            ],
        }
        written.append(write_json_atomic(project_dir(data_root, project_id) / SUMMARY_FILE, summary))
    write_error_report(data_root, results)
    return written


def export_summary(
    results: Iterable[RunExportResult], options: ExportOptions, error_reports: list[Path] | None = None
) -> dict:
    """The dict the CLI prints: totals, where the data is, failures (the first error record of each failed run:
    error_type, message, attribute, remedy)."""
    results = list(results)
    failures = [
        {**(r.errors[0] if r.errors else {"message": ""}), "project_id": r.project_id, "run_id": r.run_id}
        for r in results
        if r.status == STATUS_FAILED
    ]
    return {
        **totals(results),
        "data_path": str(options.data_path),
        "files_path": str(options.files_path),
        "failures": failures,
        "error_reports": [str(p) for p in error_reports or []],
    }

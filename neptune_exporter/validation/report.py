"""Validation report of an export against a target: per-run outcome, every difference, as JSON and markdown."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from neptune_exporter.errors import failure_message
from neptune_exporter.validation.compare import Difference


@dataclass
class RunValidation:
    """Outcome of validating one run: what was compared and how it differed."""

    project_id: str
    run_id: str
    target_run_id: str | None
    differences: list[Difference] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)  # params/tags/metrics/points/artifacts compared
    error: dict | None = None  # the run could not be validated (e.g. unreadable export)

    @property
    def ok(self) -> bool:
        return not self.differences and self.error is None

    @classmethod
    def from_json(cls, data: dict) -> RunValidation:
        differences = [Difference(**d) for d in data.get("differences") or []]
        return cls(
            data["project_id"],
            data["run_id"],
            data.get("target_run_id"),
            differences,
            dict(data.get("checked") or {}),
            data.get("error"),
        )

    def to_json(self) -> dict:
        return {
            "project_id": self.project_id,
            "run_id": self.run_id,
            "target_run_id": self.target_run_id,
            "ok": self.ok,
            "checked": dict(self.checked),
            "error": self.error,
            "differences": [d.to_json() for d in self.differences],
        }


@dataclass
class ValidationReport:
    """All runs validated against one target."""

    target: str
    runs: list[RunValidation] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def differences(self) -> list[Difference]:
        return [d for run in self.runs for d in run.differences]

    @property
    def failed_runs(self) -> list[RunValidation]:
        return [run for run in self.runs if not run.ok]

    @property
    def unvalidated(self) -> list[RunValidation]:
        """Runs that could not be compared (their export could not be read, e.g. a damaged part)."""
        return [run for run in self.runs if run.error is not None]

    @property
    def ok(self) -> bool:
        return not self.failed_runs

    def verdict(self) -> str:
        """`no differences`, or the differences and the runs that could not be validated."""
        if self.ok:
            return "no differences"
        differing = [run for run in self.failed_runs if run.error is None]
        text = f"{len(self.differences)} difference(s) in {len(differing)} run(s)"
        return text + (f", {len(self.unvalidated)} run(s) not validated" if self.unvalidated else "")

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "created_at": self.created_at,
            "ok": self.ok,
            "runs_checked": len(self.runs),
            "runs_with_differences": len(self.failed_runs),
            "differences": len(self.differences),
            "runs_not_validated": len(self.unvalidated),
            "runs": [run.to_json() for run in self.runs],
        }

    def table_rows(self) -> list[dict]:
        """One row per run (for a Prefect table artifact or a terminal table)."""
        rows = []
        for run in self.runs:
            row = {"project": run.project_id, "run": run.run_id, "ok": run.ok, "differences": len(run.differences)}
            row.update(run.checked)
            row["error"] = failure_message(run.error) if run.error else ""
            rows.append(row)
        return rows

    def to_markdown(self, max_differences: int = 200) -> str:
        """Human summary: totals, per-run table, then the differences (first `max_differences`)."""
        lines = [
            f"# Validation against {self.target}",
            "",
            f"{len(self.runs)} run(s) checked: **{self.verdict()}**.",
            "",
        ]
        rows = self.table_rows()
        if rows:
            headers = list(dict.fromkeys(k for row in rows for k in row))
            lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(_cell(row.get(h, "")) for h in headers) + " |" for row in rows]
        if self.unvalidated:
            lines += ["", "## Not validated", ""]
            lines += [
                f"- `{run.project_id}/{run.run_id}`: {error.get('message')} — fix: {error.get('remedy')}"
                for run, error in ((run, run.error or {}) for run in self.unvalidated)
            ]
        if self.differences:
            lines += [
                "",
                "## Differences",
                "",
                "| project | run | kind | key | problem | expected | actual |",
                "|---|---|---|---|---|---|---|",
            ]
            for d in self.differences[:max_differences]:
                cells = [d.project_id, d.run_id, d.kind, d.key, d.problem, d.expected, d.actual]
                lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
            if len(self.differences) > max_differences:
                lines.append(f"\n… and {len(self.differences) - max_differences} more (see the JSON report).")
        return "\n".join(lines) + "\n"

    def write(self, directory: Path, stem: str | None = None) -> tuple[Path, Path]:
        """Write `<stem>.json` and `<stem>.md` into `directory`; returns both paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        stem = stem or f"validation_{self.target}"
        json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
        json_path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=False), encoding="utf-8")
        md_path.write_text(self.to_markdown(), encoding="utf-8")
        return json_path, md_path


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")

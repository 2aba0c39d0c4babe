"""Live view of a running flow in Prefect: a progress artifact whose description carries the counts, a per-run table."""

from __future__ import annotations

import time
from uuid import UUID, uuid4

from prefect.artifacts import TableArtifact, create_progress_artifact, update_progress_artifact
from prefect.context import FlowRunContext

from neptune_exporter.progress import human_bytes, human_duration

PROGRESS_EVERY_SECONDS = 2.0
TABLE_EVERY_SECONDS = 10.0
TABLE_ROWS_SHOWN = 1000

_live: dict[str, LiveRuns] = {}


class LiveRuns:
    """Counts finished runs of one flow run and shows them, throttled: `<key>-progress` and `<key>-runs` artifacts.

    The progress description reads `n/N runs done, k failed · points · bytes · ETA`; the table has one row per run
    (pending until it ends). Chunk subflows find their parent's view by `token` (they run in its process) and publish
    to the parent flow run, so the UI shows one progress bar and one table per export, load or validation.
    """

    def __init__(self, key: str, run_keys: list[str], *, with_bytes: bool = True, table: bool = True) -> None:
        context = FlowRunContext.get()
        self.flow_run_id: UUID | None = context.flow_run.id if context and context.flow_run else None
        self.token = str(self.flow_run_id or uuid4())
        self.key, self.with_bytes, self.table = key, with_bytes, table
        self.total, self.done, self.failed, self.points, self.bytes = len(run_keys), 0, 0, 0, 0
        self.rows = {run: self._row(run, "pending") for run in run_keys}
        self.started, self._shown = time.monotonic(), {"progress": time.monotonic(), "table": 0.0}
        artifact = create_progress_artifact(
            progress=self.percent(), key=f"{key}-progress", description=self.description()
        )
        self.artifact_id, self.shown_all = artifact or None, False
        self.publish()
        _live[self.token] = self

    @staticmethod
    def find(token: str) -> LiveRuns | None:
        """The view a parent flow run opened in this process (None when the chunk runs elsewhere)."""
        return _live.get(token)

    def _row(self, run: str, status: str, points: int = 0, files: int = 0, bytes_: int = 0, error: str = "") -> dict:
        row = {"run": run, "status": status, "points": points, "files": files}
        return {**row, "bytes": bytes_, "error": error} if self.with_bytes else {**row, "error": error}

    def run_done(
        self, run: str, status: str, failed: bool, points: int = 0, files: int = 0, bytes_: int = 0, error: str = ""
    ) -> None:
        """One run ended: counts, its table row, then the artifacts (throttled)."""
        self.done += 1
        self.failed += int(failed)
        self.points += points
        self.bytes += bytes_
        self.rows[run] = self._row(run, status, points, files, bytes_, error)
        self.shown_all = False
        self.publish(force=self.done == self.total)

    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0

    def eta(self) -> str:
        if self.done >= self.total:
            return f"done in {human_duration(time.monotonic() - self.started)}"
        if not self.done:
            return "ETA after the first run"
        remaining = (time.monotonic() - self.started) / self.done * (self.total - self.done)
        return f"ETA {human_duration(remaining)}"

    def description(self) -> str:
        figures = [f"{self.done}/{self.total} runs done, {self.failed} failed", f"{self.points:,} points"]
        if self.with_bytes:
            figures.append(human_bytes(self.bytes))
        return " · ".join([*figures, self.eta()])

    def publish(self, force: bool = False) -> None:
        """Update the progress artifact (every 2 s) and the run table (every 10 s); both when forced."""
        now = time.monotonic()
        if self.artifact_id and (force or now - self._shown["progress"] >= PROGRESS_EVERY_SECONDS):
            update_progress_artifact(self.artifact_id, progress=self.percent(), description=self.description())
            self._shown["progress"] = now
        if self.table and (force or now - self._shown["table"] >= TABLE_EVERY_SECONDS):
            rows = list(self.rows.values())
            shown = f" (first {TABLE_ROWS_SHOWN} of {len(rows)})" if len(rows) > TABLE_ROWS_SHOWN else ""
            TableArtifact(
                key=f"{self.key}-runs",
                table=rows[:TABLE_ROWS_SHOWN],
                flow_run_id=self.flow_run_id,
                description=f"Runs: {self.description()}{shown}",
            ).create()
            self._shown["table"] = now
        self.shown_all = force

    def close(self) -> None:
        """Final figures on both artifacts (unless already shown); the view is forgotten."""
        if not self.shown_all:
            self.publish(force=True)
        _live.pop(self.token, None)

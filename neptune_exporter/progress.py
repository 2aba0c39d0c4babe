"""Progress sinks: thread-safe counters, a rich terminal bar (runs, points, bytes, ETA) and the active sink."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ProgressSink(Protocol):
    """What the export pipeline reports as it goes (called from worker threads)."""

    def on_plan(self, total_runs: int) -> None: ...

    def on_points(self, points: int, bytes_: int) -> None: ...

    def on_run_done(self, result: Any) -> None: ...


def status_of(result: Any) -> str:
    """`status` of a RunExportResult or of its JSON pointer."""
    return result["status"] if isinstance(result, dict) else getattr(result, "status", "complete")


@dataclass
class ProgressCounts:
    """A snapshot of the counters."""

    total_runs: int = 0
    runs_done: int = 0
    runs_failed: int = 0
    runs_skipped: int = 0
    points: int = 0
    bytes: int = 0

    @property
    def fraction(self) -> float:
        return self.runs_done / self.total_runs if self.total_runs else 1.0


class ProgressCounter:
    """A ProgressSink that only counts (thread-safe); the base of the other sinks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = ProgressCounts()

    def on_plan(self, total_runs: int) -> None:
        with self._lock:
            self._counts.total_runs += total_runs

    def on_points(self, points: int, bytes_: int) -> None:
        with self._lock:
            self._counts.points += points
            self._counts.bytes += bytes_

    def on_run_done(self, result: Any) -> None:
        status = status_of(result)
        with self._lock:
            self._counts.runs_done += 1
            self._counts.runs_failed += status == "failed"
            self._counts.runs_skipped += status == "skipped"

    def counts(self) -> ProgressCounts:
        with self._lock:
            return ProgressCounts(**vars(self._counts))


def human_bytes(size: float) -> str:
    """1536 → '1.5 KB'."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def human_duration(seconds: float) -> str:
    """3725 → '1 h 02 min', 190 → '3 min 10 s', 12.4 → '12 s'."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


class TerminalProgress(ProgressCounter):
    """A rich progress bar on stderr: runs done of total, points, bytes, failures, ETA."""

    def __init__(self, description: str = "exporting", stream: TextIO | None = None) -> None:
        super().__init__()
        console = Console(file=stream or sys.stderr)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("runs · {task.fields[points]:,} points · {task.fields[bytes]} · {task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task(description, total=None, points=0, bytes="0 B", failed=0)

    def __enter__(self) -> TerminalProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._refresh()
        self._progress.stop()

    def _refresh(self) -> None:
        counts = self.counts()
        self._progress.update(
            self._task,
            total=counts.total_runs or None,
            completed=counts.runs_done,
            points=counts.points,
            bytes=human_bytes(counts.bytes),
            failed=counts.runs_failed,
        )

    def on_plan(self, total_runs: int) -> None:
        super().on_plan(total_runs)
        self._refresh()

    def on_points(self, points: int, bytes_: int) -> None:
        super().on_points(points, bytes_)
        self._refresh()

    def on_run_done(self, result: Any) -> None:
        super().on_run_done(result)
        self._refresh()


class FanOut:
    """A ProgressSink forwarding every event to several sinks."""

    def __init__(self, *sinks: ProgressSink) -> None:
        self.sinks = [s for s in sinks if s is not None]

    def on_plan(self, total_runs: int) -> None:
        for sink in self.sinks:
            sink.on_plan(total_runs)

    def on_points(self, points: int, bytes_: int) -> None:
        for sink in self.sinks:
            sink.on_points(points, bytes_)

    def on_run_done(self, result: Any) -> None:
        for sink in self.sinks:
            sink.on_run_done(result)


class PointsOnly:
    """Forwards points and bytes only: whoever collects finished runs reports them (once, cached or not)."""

    def __init__(self, sink: ProgressSink | None) -> None:
        self.sink = sink

    def on_plan(self, total_runs: int) -> None:
        return None

    def on_points(self, points: int, bytes_: int) -> None:
        if self.sink is not None:
            self.sink.on_points(points, bytes_)

    def on_run_done(self, result: Any) -> None:
        return None


_active: ProgressSink | None = None
_active_lock = threading.Lock()


def active() -> ProgressSink | None:
    """The sink installed by the caller of a flow in this process (e.g. the CLI's bar), if any."""
    return _active


@contextmanager
def installed(sink: ProgressSink | None) -> Iterator[ProgressSink | None]:
    """Make `sink` the active sink of this process for the duration of the block."""
    global _active
    with _active_lock:
        previous, _active = _active, sink
    try:
        yield sink
    finally:
        with _active_lock:
            _active = previous


def wants_terminal_bar(no_progress: bool, stream: TextIO | None = None) -> bool:
    """A bar only when asked for and the output is a terminal."""
    stream = stream or sys.stderr
    return not no_progress and bool(getattr(stream, "isatty", lambda: False)())


@contextmanager
def terminal_bar(description: str, no_progress: bool = False) -> Iterator[TerminalProgress | None]:
    """A rich bar installed as the active sink for the block, when wanted and on a terminal; else None."""
    bar = TerminalProgress(description) if wants_terminal_bar(no_progress) else None
    with installed(bar):
        if bar is None:
            yield None
            return
        with bar:
            yield bar

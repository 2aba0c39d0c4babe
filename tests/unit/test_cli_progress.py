"""Progress sinks: counters from many threads, the rich bar's text, fan-out and the active sink."""

import io
import threading

from neptune_exporter import progress
from neptune_exporter.progress import FanOut, ProgressCounter, TerminalProgress, human_bytes


def test_counter_is_exact_under_concurrent_updates():
    counter = ProgressCounter()
    counter.on_plan(800)

    def worker(status: str) -> None:
        for _ in range(100):
            counter.on_points(10, 1000)
            counter.on_run_done({"status": status})

    threads = [threading.Thread(target=worker, args=(s,)) for s in ["complete"] * 6 + ["failed", "skipped"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = counter.counts()
    assert (counts.total_runs, counts.runs_done, counts.runs_failed, counts.runs_skipped) == (800, 800, 100, 100)
    assert (counts.points, counts.bytes) == (8000, 800_000)
    assert counts.fraction == 1.0


def test_terminal_bar_shows_runs_points_bytes_and_failures():
    stream = io.StringIO()
    with TerminalProgress(stream=stream) as bar:
        bar.on_plan(3)
        bar.on_points(1500, 2048)
        bar.on_run_done({"status": "complete"})
        bar.on_run_done({"status": "failed"})
    text = stream.getvalue()
    assert "2/3" in text
    assert "1,500 points" in text
    assert "2.0 KB" in text
    assert "1 failed" in text


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 1023, 1536, 5 * 1024**3)] == ["0 B", "1023 B", "1.5 KB", "5.0 GB"]


def test_fan_out_and_active_sink():
    first, second = ProgressCounter(), ProgressCounter()
    assert progress.active() is None
    with progress.installed(FanOut(first, second)) as sink:
        assert progress.active() is sink
        sink.on_points(5, 50)
    assert progress.active() is None
    assert first.counts().points == second.counts().points == 5


def test_bar_only_on_a_terminal_and_not_when_disabled():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert progress.wants_terminal_bar(False, Tty())
    assert not progress.wants_terminal_bar(True, Tty())
    assert not progress.wants_terminal_bar(False, io.StringIO())


def test_terminal_bar_is_installed_only_when_wanted(monkeypatch):
    with progress.terminal_bar("exporting", no_progress=True) as bar:
        assert bar is None and progress.active() is None
    monkeypatch.setattr(progress, "wants_terminal_bar", lambda no_progress: True)
    with progress.terminal_bar("exporting") as bar:
        assert isinstance(bar, TerminalProgress) and progress.active() is bar
    assert progress.active() is None

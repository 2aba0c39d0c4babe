"""Ctrl-C of the real CLI (SIGINT to its process group, as a terminal sends it) on its own local Prefect server:
during start-up and mid-export it ends within seconds with one line and exit 130, leaves no process and no
temporary part, reports the flow run Cancelled, and the rerun completes equal to a fresh export."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.storage.manifest import manifest_path
from neptune_exporter.storage.parquet import run_part_paths
from tests.e2e.conftest import cli_command, flow_runs, run_cli
from tests.e2e.test_export_cli import (  # noqa: F401  (the fake Neptune with 10 runs and the CLI's environment)
    PROJECT,
    RunGate,
    assert_same_as_a_fresh_export,
    complete_runs,
    env,
    fake,
    mid_export,
    run_id,
    run_ids_of,
    tail,
    wait_for,
)
from tests.processes import descendants, wait_all_gone

pytestmark = pytest.mark.e2e

ARGS = ["export", "-d", "out/data", "-f", "out/files", "--workers", "2", "--no-progress"]
STOP_BOUND_SECONDS = 10  # the behaviour promised: a stopped command ends within 10 s of Ctrl-C
STARTUP_LINE = "interrupted during start-up: no run started — rerun the same command to continue"


class HoldEverything:
    """Holds every request to the fake server (after logging it) until `release()`: a command waits in start-up."""

    def __init__(self, server: FakeNeptune) -> None:
        self.log_request, self.waiting = server.requests.add, 0
        self._lock, self._open = threading.Lock(), threading.Event()

    def add(self, record) -> None:
        self.log_request(record)
        with self._lock:
            self.waiting += 1
        try:
            self._open.wait(300)
        finally:
            with self._lock:
                self.waiting -= 1

    def release(self) -> None:
        self._open.set()


def start(tmp_path: Path, environment: dict[str, str], log_name: str) -> tuple[subprocess.Popen, Path]:
    """The export command in its own session (its own process group, as a terminal's foreground job)."""
    log = tmp_path / log_name
    small_parts = {**environment, "NEPTUNE_EXPORTER_PART_TARGET_BYTES": "4096"}  # rows hit the disk before a run ends
    with log.open("wb") as output:
        process = subprocess.Popen(
            cli_command(*ARGS), env=small_parts, cwd=tmp_path, start_new_session=True, stdout=output, stderr=output
        )
    return process, log


def ctrl_c(process: subprocess.Popen, release=lambda: None) -> tuple[float, set[int]]:
    """SIGINT to the command's process group, then `release()` (requests in flight may answer); the seconds until
    the command ended, and the processes it had started."""
    below = descendants(process.pid)
    started = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    release()
    process.wait(timeout=120)
    return time.monotonic() - started, below


def wait_until_loading(process: subprocess.Popen, library: str, log: Path) -> None:
    """Return as soon as the process has mapped `library` (an extension module the CLI's imports load half-way)."""
    deadline = time.monotonic() + 120
    while library not in Path(f"/proc/{process.pid}/maps").read_text():
        assert process.poll() is None and time.monotonic() < deadline, tail(log)
        time.sleep(0.002)


def test_ctrl_c_while_the_console_script_loads_the_cli_is_the_start_up_line(env, tmp_path):  # noqa: F811
    """Ctrl-C half-way through the CLI's imports (numpy is mapped; pyarrow and the commands are still to come): the
    start-up line, not a KeyboardInterrupt traceback from an import."""
    script = Path(sys.executable).with_name("neptune-exporter")  # the console script a user runs
    log = tmp_path / "loading.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(script), *ARGS], env=env, cwd=tmp_path, start_new_session=True, stdout=output, stderr=output
        )
    wait_until_loading(process, "_multiarray_umath", log)
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=STOP_BOUND_SECONDS) == 130, tail(log)
    assert log.read_text() == STARTUP_LINE + "\n", tail(log)
    assert not (tmp_path / "out/data").exists() or complete_runs(tmp_path / "out/data") == set()


def test_ctrl_c_in_start_up_and_mid_export_ends_in_one_line_then_the_rerun_completes(
    env,  # noqa: F811
    fake,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    data = tmp_path / "out/data"
    holding = HoldEverything(fake)
    monkeypatch.setattr(fake.requests, "add", holding.add)
    process, log = start(tmp_path, env, "startup.log")
    try:
        wait_for(process, lambda: holding.waiting > 0, log)  # the command checks its inputs: its request is held
        seconds, below = ctrl_c(process)
    finally:
        holding.release()
    assert process.returncode == 130, tail(log)
    assert seconds < STOP_BOUND_SECONDS and log.read_text() == STARTUP_LINE + "\n", (seconds, tail(log))
    assert wait_all_gone(below, process.pid) == {}
    assert not data.exists() or complete_runs(data) == set()

    monkeypatch.undo()
    gate = RunGate(fake, admit=3)
    monkeypatch.setattr(fake.requests, "add", gate.add)
    process, log = start(tmp_path, env, "mid-export.log")
    try:  # Ctrl-C once 3 runs are complete and both workers wait inside another run with rows on disk
        wait_for(process, lambda: mid_export(data, gate, run_ids_of), log)
        seconds, below = ctrl_c(process, release=gate.release)
    finally:
        gate.release()
    complete = complete_runs(data)  # the held runs stop at their next batch, or complete if their answer won
    line = (
        f"interrupted: {len(complete)} runs complete, {10 - len(complete)} to do — rerun the same command to continue"
    )
    assert process.returncode == 130, tail(log)
    assert seconds < STOP_BOUND_SECONDS and log.read_text() == line + "\n", (seconds, tail(log))
    assert len(complete) >= 3 and wait_all_gone(below, process.pid) == {}
    for run in {run_id(index) for index in range(10)} - complete:  # nothing half-written is left of the others
        assert not manifest_path(data, PROJECT, run).exists()
        assert run_part_paths(data, PROJECT, run, include_tmp=True) == [], run
    export_run = [(state, message) for flow, state, message in flow_runs(Path(env["PREFECT_HOME"])) if flow == "export"]
    assert export_run == [("Cancelled", line)]  # the server heard it before it stopped

    fake.requests.clear()
    monkeypatch.undo()
    result = run_cli(ARGS, env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"runs: {10 - len(complete)} exported, {len(complete)} unchanged, 0 failed" in result.stdout
    assert_same_as_a_fresh_export(fake, tmp_path / "out", tmp_path / "reference")

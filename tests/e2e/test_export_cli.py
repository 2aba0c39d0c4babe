"""The real CLI as a subprocess against the fake Neptune server (a thread of this test): export, summary,
bad input, and resume after SIGKILL (same rows, no duplicates, completed runs not fetched again)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from neptune_exporter.export import ExportOptions
from neptune_exporter.export_runner import run_export
from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.fake_neptune.datasets import generate_workspace
from neptune_exporter.settings import Settings
from neptune_exporter.storage.files import file_sha256
from neptune_exporter.storage.manifest import manifest_path, read_manifest
from neptune_exporter.storage.parquet import project_dir, read_run_batches, run_part_paths
from tests.e2e.conftest import cli_command, cli_env, flow_runs, run_cli
from tests.processes import sigkill_alone, wait_all_gone

pytestmark = pytest.mark.e2e

PROJECT = "workspace/sandbox"
DATA_ENDPOINTS = (
    "v3.attribute_definitions",
    "v3.attribute_values",
    "v3.float_series",
    "v3.series",
    "v3.signed_url",
    "storage.download",
)


def run_id(index: int) -> str:
    return f"run-{index:05d}"


def sys_id(index: int) -> str:
    return f"SANDBOX-{index + 1}"


@pytest.fixture(scope="module")
def fake():
    with FakeNeptune(generate_workspace(runs=10, points=200, files=1)) as server:
        yield server
    assert not server.server_errors, server.server_errors[0]


@pytest.fixture
def env(fake, tmp_path):
    fake.requests.clear()
    fake.faults.clear()
    return cli_env(fake.env(PROJECT), tmp_path / "prefect-home")


def data_requests(fake: FakeNeptune) -> int:
    return sum(fake.requests.count(endpoint) for endpoint in DATA_ENDPOINTS)


def complete_runs(data: Path) -> set[str]:
    """Run ids whose manifest on disk says complete."""
    folder = project_dir(data, PROJECT)
    manifests = [read_manifest(path) for path in folder.glob("*.manifest.json")] if folder.is_dir() else []
    return {m.run_id for m in manifests if m is not None and m.is_complete()}


def sorted_rows(data: Path, run: str) -> pa.Table:
    table = pa.Table.from_batches(list(read_run_batches(data, PROJECT, run)))
    order = pc.sort_indices(table, [("attribute_path", "ascending"), ("step", "ascending")])
    return table.take(order)


def tree(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder`: relative path → sha256 (folders: "dir")."""
    return {
        p.relative_to(folder).as_posix(): "dir" if p.is_dir() else file_sha256(p) for p in sorted(folder.rglob("*"))
    }


def test_export_then_summary_in_ephemeral_mode_and_a_failed_run_exits_1(env, fake, tmp_path):
    # the first run's series read is refused, and again for the first series asked alone (a shared request refused
    # is asked again series by series: only a series refused alone fails)
    fake.faults.update(endpoints="float_series", scripted=[400, 400])
    args = ["export", "--runs", "^run-0000[0-2]$", "-d", "out/data", "-f", "out/files", "--workers", "1"]
    result = run_cli(args, env, tmp_path)
    assert result.returncode == 1, result.stderr
    assert "runs: 2 exported, 0 unchanged, 1 failed" in result.stdout
    assert (
        f"failed: {PROJECT} {run_id(0)}: TerminalError: unexpected answer from the Neptune server (HTTP 400) "
        "(attribute metrics/m000) — fix: check the server version and the options" in result.stderr.splitlines()
    )
    assert "errors.jsonl" in result.stderr
    # the failure is said once, by the command: no Prefect ERROR record repeating it, no empty traceback
    assert not [line for line in result.stderr.splitlines() if "| ERROR" in line], result.stderr
    assert "NoneType: None" not in result.stderr and "RunsFailed(" not in result.stderr
    assert env["NEPTUNE_API_TOKEN"] not in result.stdout + result.stderr
    assert complete_runs(tmp_path / "out/data") == {run_id(1), run_id(2)}

    summary = run_cli(["summary", "-d", "out/data", "--json"], env, tmp_path)
    assert summary.returncode == 0, summary.stderr
    figures = json.loads(summary.stdout)
    assert [p["project_id"] for p in figures["projects"]] == [PROJECT]
    total = figures["total"]
    # the failed run holds its other attributes: its file and all but the refused metric (m000)
    assert (total["runs"], total["runs_complete"], total["runs_failed"], total["files"]) == (3, 2, 1, 3)
    per_run = 5 * 200 + 100 + 10  # 5 metrics, 1 string series, 1 histogram series per run
    assert total["points"] == 3 * per_run - 200
    table = run_cli(["summary", "-d", "out/data"], env, tmp_path)
    assert PROJECT in table.stdout and "float_series" in table.stdout and run_id(0) in table.stdout


def bad_inputs(tmp_path: Path) -> list[tuple[list[str], str]]:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    return [
        (["--api-token", "definitely-not-a-token"], "token"),
        (["-p", "workspace/no-such-project"], "workspace/no-such-project"),
        (["--runs", "run-(0"], "--runs"),
        (["--where", "params/p000 >> 1"], "--where"),
        (["-d", str(blocker / "data")], "--data-path"),
    ]


def test_bad_input_is_one_line_and_exit_2_before_any_download(env, fake, tmp_path):
    for args, named in bad_inputs(tmp_path):
        result = run_cli(["export", "-d", "out/data", "-f", "out/files", *args], env, tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (args, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0] and "fix:" in lines[0], lines
        assert env["NEPTUNE_API_TOKEN"] not in result.stderr and "definitely-not-a-token" not in result.stderr
    assert data_requests(fake) == 0
    assert not (tmp_path / "out/data" / project_dir(".", PROJECT).name).exists()


class RunGate:
    """Server-side gate: the first `admit` runs asked for are served in full; any other run's series request is
    held (after being logged, before its answer goes out) until `release()`. So an export with 2 workers stops
    with exactly `admit` runs complete and the others mid-run, whatever the machine's speed."""

    HELD_ENDPOINTS = ("v3.float_series", "v3.series")

    def __init__(self, fake: FakeNeptune, admit: int, hold_timeout: float = 300):
        self.log_request, self.admit, self.hold_timeout = fake.requests.add, admit, hold_timeout
        self.admitted: set[str] = set()
        self.held: dict[str, int] = {}  # sys id → its requests waiting now
        self._lock, self._open = threading.Lock(), threading.Event()

    def add(self, record) -> None:  # installed as fake.requests.add: runs in the server's handler thread
        self.log_request(record)
        with self._lock:
            for run in record.runs:
                if run not in self.admitted and len(self.admitted) < self.admit:
                    self.admitted.add(run)
            held = [r for r in record.runs if r not in self.admitted] if record.endpoint in self.HELD_ENDPOINTS else []
            if not held or self._open.is_set():
                return
            for run in held:
                self.held[run] = self.held.get(run, 0) + 1
        try:
            self._open.wait(self.hold_timeout)
        finally:
            with self._lock:
                for run in held:
                    self.held[run] -= 1

    def runs_held(self) -> set[str]:
        with self._lock:
            return {run for run, waiting in self.held.items() if waiting}

    def release(self, timeout: float = 30) -> None:
        """Let every held answer go (to a dead client) and wait until no handler is held any more."""
        self._open.set()
        deadline = time.monotonic() + timeout
        while self.runs_held():
            assert time.monotonic() < deadline, "held requests did not drain"
            time.sleep(0.01)


def run_ids_of(sys_ids: set[str]) -> set[str]:
    return {run_id(int(sid.rsplit("-", 1)[1]) - 1) for sid in sys_ids}


def wait_for(process: subprocess.Popen, condition, log: Path, timeout: float = 300) -> None:
    """Return once `condition()` holds, the command still running."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the command ended before the point it was to be stopped at:\n{tail(log)}"
        assert time.monotonic() < deadline, f"the command made no progress:\n{tail(log)}"
        time.sleep(0.05)


def kill_when(process: subprocess.Popen, condition, log: Path, timeout: float = 300) -> None:
    """SIGKILL the process group as soon as `condition()` holds."""
    wait_for(process, condition, log, timeout)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def kill_alone_when(process: subprocess.Popen, condition, log: Path, timeout: float = 300) -> list[str]:
    """SIGKILL the command alone (`kill -9 PID`: not its group, not its children) as soon as `condition()` holds;
    then every process it had started, and its whole process group, must end by themselves. Their command lines."""
    wait_for(process, condition, log, timeout)
    below = sigkill_alone(process.pid)
    process.wait()
    assert any("neptune_exporter.prefect_env" in command for command in below.values()), below  # its local server
    assert wait_all_gone(below, process.pid) == {}, "processes of the killed command still run"
    return list(below.values())


def mid_export(data: Path, gate: RunGate, run_ids=lambda held: held) -> bool:
    """3 runs complete, both workers held inside another run, and each of those has written some rows already
    (a held run's other attributes may still be on their way to disk: killing before that proves less)."""
    held = run_ids(gate.runs_held())
    return (
        len(complete_runs(data)) >= 3
        and len(held) == 2
        and all(run_part_paths(data, PROJECT, run, include_tmp=True) for run in held)
    )


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.is_file() else ""


def test_sigkill_mid_export_leaves_no_process_then_rerun_completes_with_the_same_rows(env, fake, tmp_path, monkeypatch):
    """On the command's own local Prefect server (no PREFECT_API_URL): the server ends with the killed command, and the
    rerun (a new local server on the same PREFECT_HOME, the killed flow run still Running there) is not held back."""
    data, killed_log = tmp_path / "out/data", tmp_path / "killed-export.log"
    gate = RunGate(fake, admit=3)
    monkeypatch.setattr(fake.requests, "add", gate.add)
    args = ["export", "-d", "out/data", "-f", "out/files", "--workers", "2", "--no-progress"]
    with killed_log.open("wb") as log:
        small_parts = {**env, "NEPTUNE_EXPORTER_PART_TARGET_BYTES": "4096"}  # rows hit the disk before a run ends
        process = subprocess.Popen(
            cli_command(*args),
            env=small_parts,
            cwd=tmp_path,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:  # killed once the 3 admitted runs are complete and both workers wait inside another run
            kill_alone_when(process, lambda: mid_export(data, gate, run_ids_of), killed_log)
        finally:
            gate.release()
    done_before, mid_run = complete_runs(data), run_ids_of(gate.held)
    assert done_before == run_ids_of(gate.admitted) and len(done_before) == 3, (done_before, tail(killed_log))
    assert len(mid_run) == 2 and not mid_run & done_before, mid_run
    assert all(run_part_paths(data, PROJECT, run, include_tmp=True) for run in mid_run)  # partial output on disk
    killed = [state for flow, state, _ in flow_runs(Path(env["PREFECT_HOME"])) if flow == "export"]
    assert killed == ["Running"]  # what the killed command left on its server: the rerun must not wait on it

    fake.faults.clear()
    fake.requests.clear()
    result = run_cli(args, env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert complete_runs(data) == {run_id(i) for i in range(10)}, result.stdout
    refetched = fake.requests.runs_fetched() & {sys_id(i) for i in range(10) if run_id(i) in done_before}
    assert refetched == set(), (done_before, result.stdout)
    assert f"{len(done_before)} unchanged" in result.stdout, (done_before, result.stdout)
    assert_same_as_a_fresh_export(fake, tmp_path / "out", tmp_path / "reference")


def assert_same_as_a_fresh_export(fake: FakeNeptune, out: Path, reference: Path) -> None:
    """Every part on disk is one a manifest lists (no leftover of a stopped attempt), each run's rows and the files
    folder equal those of a fresh export of the 10 runs into `reference`."""
    for index in range(10):
        on_disk = {p.name for p in run_part_paths(out / "data", PROJECT, run_id(index), include_tmp=True)}
        manifest = read_manifest(manifest_path(out / "data", PROJECT, run_id(index)))
        assert on_disk == {Path(part.path).name for part in manifest.parts}, (run_id(index), on_disk)
    options = ExportOptions(
        projects=(PROJECT,),
        data_path=str(reference / "data"),
        files_path=str(reference / "files"),
        api_token=fake.api_token,
    )
    assert all(r.status == "complete" for r in run_export(options, Settings.from_env()))
    for index in range(10):
        resumed, fresh = sorted_rows(out / "data", run_id(index)), sorted_rows(reference / "data", run_id(index))
        assert resumed.num_rows == fresh.num_rows > 0
        assert resumed.equals(fresh), run_id(index)
    assert not list((out / "data").rglob("*.tmp")) and not list((out / "files").rglob(".staging*"))
    assert tree(out / "files") == tree(reference / "files") != {}  # the files folder of a fresh export

"""`export --distribute` across two real `prefect worker start` processes of a process work pool, with the deployments
of deployments/prefect.yaml on a real Prefect server and the fake Neptune server: the chunks run on both workers at
once, the output equals a single-process export file for file and row for row, each run is fetched once; a worker
SIGKILLed mid-chunk costs a retry of that chunk only; a chunk that does not see the data path fails at once."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.server import stop_process
from neptune_exporter.export import ExportOptions
from neptune_exporter.export_runner import run_export
from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.fake_neptune.datasets import generate_workspace
from neptune_exporter.load import LoadOptions, run_load, run_validate
from neptune_exporter.loaders.wandb import wandb_run_id
from neptune_exporter.settings import Settings
from neptune_exporter.storage import fan_out
from neptune_exporter.storage.manifest import manifest_path, read_manifest
from neptune_exporter.storage.parquet import project_dir
from neptune_exporter.storage.wandb_log import find_offline_runs, run_log_path
from tests.e2e.conftest import REPO_ROOT, cli_env, run_cli
from tests.e2e.test_load_kill import mlflow_content, mlflow_runs, wandb_content
from tests.e2e.test_work_pool import POOL, prefect, read_log_until, without_neptune
from tests.integration.mlflow_server import start_mlflow_server, stop_mlflow_server
from tests.processes import descendants

pytestmark = pytest.mark.e2e

PROJECT = "workspace/sandbox"
RUNS = 40
RUN_IDS = [f"run-{i:05d}" for i in range(RUNS)]
CHUNK_RUNS = 10
LOST_AFTER_S = 30  # the parent calls a chunk lost after this long without a heartbeat
DISTRIBUTED_TIMEOUT_S = 900  # a distributed command on a loaded 2-core CI machine (2-4 min when it is idle)


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    log: Path

    def submitted(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Pool:
    api_url: str
    workers: list[Worker]
    root: Path
    worker_env: dict[str, str]

    def revive(self) -> None:
        """A worker an earlier test killed is started again (same name, a new log)."""
        for index, worker in enumerate(self.workers):
            if worker.process.poll() is not None:
                self.workers[index] = start_worker(worker.name, self.worker_env, self.root)
                read_log_until(self.workers[index].log, f"Worker {worker.name!r} started!")  # it polls from now on


def start_worker(name: str, env: dict[str, str], root: Path) -> Worker:
    """`prefect worker start` on the pool, taking at most 2 flow runs at a time; its output in `<root>/<name>-<n>.log`."""
    log = root / f"{name}-{len(list(root.glob(f'{name}-*.log')))}.log"
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--name", name, "--limit", "2"],
            env=env,
            cwd=root,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Worker(name, process, log)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeNeptune]:
    with FakeNeptune(generate_workspace(runs=RUNS, params=5, metrics=3, points=200, files=1)) as server:
        yield server
    assert not server.server_errors, server.server_errors[0]


@pytest.fixture(scope="module")
def pool(prefect_server, fake, tmp_path_factory) -> Iterator[Pool]:
    """The work pool and deployments of deployments/prefect.yaml, and two workers taking at most 2 flow runs each."""
    root = tmp_path_factory.mktemp("fan-out")
    client_env = without_neptune(prefect_server.client_env({"PYTHONWARNINGS": "ignore"}))
    prefect(["work-pool", "create", POOL, "--type", "process", "--overwrite"], client_env, root)
    prefect(["deploy", "--all", "--prefect-file", str(REPO_ROOT / "deployments" / "prefect.yaml")], client_env, root)
    worker_env = {
        **client_env,
        **fake.env(PROJECT),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    workers = [start_worker(name, worker_env, root) for name in ("worker-a", "worker-b")]
    try:
        yield Pool(prefect_server.api_url, workers, root, worker_env)
    finally:
        for worker in workers:
            stop_process(worker.process)
        prefect(["work-pool", "delete", POOL], client_env, root)  # the session's server as other modules expect it


@pytest.fixture(scope="module")
def reference(fake, tmp_path_factory) -> tuple[Path, Path, dict[str, int]]:
    """A single-process export of the project (the library's loop) and the requests it made per run."""
    root = tmp_path_factory.mktemp("single")
    options = ExportOptions(
        projects=(PROJECT,), api_token=fake.api_token, data_path=str(root / "data"), files_path=str(root / "files")
    )
    fake.requests.clear()
    results = run_export(options, Settings.from_env())
    assert sorted(r.run_id for r in results if r.status == "complete") == RUN_IDS
    return root / "data", root / "files", fake.requests.by_run()


def distributed_export(
    pool: Pool,
    fake: FakeNeptune,
    data: Path,
    files: Path,
    extra: dict | None = None,
    max_parallel: int = 4,
    more: tuple[str, ...] = (),
):
    """`neptune-exporter export --distribute` in a subprocess, as a user runs it against the workers' server."""
    env = cli_env(
        {
            **fake.env(PROJECT),
            "PREFECT_API_URL": pool.api_url,
            "NEPTUNE_EXPORTER_CHUNK_LOST_AFTER_S": str(LOST_AFTER_S),
            "NEPTUNE_EXPORTER_RETRY_BACKOFF_SECONDS": "0.5",
            **(extra or {}),
        },
        pool.root / "cli-prefect-home",
    )
    args = ["export", "-p", PROJECT, "-d", str(data), "-f", str(files), "--no-progress", *more]
    args += ["--distribute", "--work-pool", POOL, "--chunk-runs", str(CHUNK_RUNS), "--max-parallel", str(max_parallel)]
    return subprocess.Popen(
        [sys.executable, "-m", "neptune_exporter.cli", *args],
        env=env,
        cwd=pool.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


def flow_runs(api_url: str, flow_name: str) -> list[FlowRun]:
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])), limit=200)


def chunk_runs_of(api_url: str, data: Path) -> list[FlowRun]:
    return [run for run in flow_runs(api_url, "export-chunk") if run.parameters["options"]["data_path"] == str(data)]


def assert_same_export(data: Path, files: Path, ref_data: Path, ref_files: Path) -> None:
    """Same Parquet files with the same rows, same downloaded files with the same bytes."""
    ours, theirs = project_dir(data, PROJECT), project_dir(ref_data, PROJECT)
    parts = sorted(p.name for p in ours.glob("*.parquet"))
    assert parts == sorted(p.name for p in theirs.glob("*.parquet")) and len(parts) >= RUNS
    for name in parts:
        assert pq.read_table(ours / name).to_pylist() == pq.read_table(theirs / name).to_pylist(), name
    ours_files = {p.relative_to(files): p.read_bytes() for p in files.rglob("*") if p.is_file()}
    assert ours_files == {p.relative_to(ref_files): p.read_bytes() for p in ref_files.rglob("*") if p.is_file()}
    assert len(ours_files) == RUNS


def summary_runs(data: Path) -> dict:
    return json.loads((project_dir(data, PROJECT) / "export_summary.json").read_text())["runs"]


def test_a_distributed_export_runs_its_chunks_on_both_workers_and_equals_a_single_process_export(
    pool, fake, reference, tmp_path
):
    ref_data, ref_files, ref_requests = reference
    data, files = tmp_path / "data", tmp_path / "files"
    fake.requests.clear()
    # series requests take 20 s until a chunk runs on each worker at once (however slowly their processes start)
    fake.faults.update(latency_ms=20_000, endpoints=r"^v3\.float_series$")
    try:
        parent = distributed_export(pool, fake, data, files)
        at_once = wait_until_each_worker_runs_a_chunk(pool, data)
    finally:
        fake.faults.update(latency_ms=0, endpoints=None)
    code, out, err = finish(parent)
    assert code == 0, out + err
    assert f"runs: {RUNS} exported, 0 unchanged, 0 failed" in out

    (parent,) = [run for run in flow_runs(pool.api_url, "export") if run.parameters["paths"]["data_path"] == str(data)]
    assert parent.state.name == "Completed"
    chunks = chunk_runs_of(pool.api_url, data)
    assert len(chunks) == RUNS // CHUNK_RUNS and all(run.state.name == "Completed" for run in chunks)
    assert sorted(key for run in chunks for key in (p["run"]["run_id"] for p in run.parameters["plans"])) == RUN_IDS
    assert all(run.parent_task_run_id is not None for run in chunks)  # shown as subflows of the parent
    by_worker = {worker.name: [run for run in chunks if run_by(worker, run)] for worker in pool.workers}
    assert all(by_worker.values()) and sum(map(len, by_worker.values())) == len(chunks), by_worker
    a, b = ([run for run in chunks if run.id == chunk.id] for chunk in at_once)  # seen running at the same time
    assert a[0].start_time < b[0].end_time and b[0].start_time < a[0].end_time  # the API agrees: side by side

    assert_same_export(data, files, ref_data, ref_files)
    assert summary_runs(data) == {run_id: {"status": "complete", "action": "full"} for run_id in RUN_IDS}
    assert (project_dir(data, PROJECT) / "errors.jsonl").read_text() == ""
    assert fake.requests.by_run() == ref_requests  # every run fetched as often as by one process: once
    assert not (data / fan_out.FOLDER).exists()  # the journals are merged and gone


def test_a_chunk_that_does_not_see_the_data_path_fails_at_once_with_the_shared_storage_message(pool, tmp_path):
    """What a worker whose data path is another folder sees: not the marker the parent wrote there."""
    data = tmp_path / "data"
    fan_out.write_marker(fan_out.place(data, "export-neptune3"), "an export elsewhere")  # not the chunk's parent's
    options = ExportOptions(projects=(PROJECT,), data_path=str(data), files_path=str(tmp_path / "files")).to_json()
    plan = {"run": {"project_id": PROJECT, "run_id": RUN_IDS[0], "sys_id": "KEY-1"}, "action": "full", "reason": ""}
    shared = {
        "command": "export-neptune3",
        "token": "the-parents-token",
        "chunk": "c0001",
        "attempt": 1,
        "beat_seconds": 1,
    }
    with temporary_settings({PREFECT_API_URL: pool.api_url}):
        run = run_deployment(
            "export-chunk/neptune3",
            parameters={"plans": [plan], "options": options, "shared": shared},
            timeout=300,
            poll_interval=1,
        )
    assert run.state.type == StateType.FAILED
    assert run.state.message.startswith(f"StorageNotSharedError: the data path {data} is not shared storage: ")
    assert "fix: mount the same shared storage" in run.state.message
    assert not manifest_path(data, PROJECT, RUN_IDS[0]).exists() and not list(data.rglob("*.parquet"))


def test_a_worker_killed_mid_chunk_costs_a_retry_of_that_chunk_and_no_complete_run_is_fetched_again(
    pool, fake, reference, tmp_path
):
    ref_data, ref_files, ref_requests = reference
    data, files = tmp_path / "data", tmp_path / "files"
    fake.requests.clear()
    fake.faults.update(latency_ms=40)  # runs take long enough to kill a worker in the middle of a chunk
    try:
        parent = distributed_export(pool, fake, data, files)
        victim, half_done = wait_for_a_chunk_half_done(pool, data)
        killed = [run for run in chunk_runs_of(pool.api_url, data) if run_by(victim, run) and not run.state.is_final()]
        # the worker first, then its flow-run processes: as when its machine is lost, no one is left to report them
        for pid in [victim.process.pid, *descendants(victim.process.pid)]:
            os.kill(pid, signal.SIGKILL)
        complete_at_kill = {
            run_id
            for run_id in RUN_IDS
            if (m := read_manifest(manifest_path(data, PROJECT, run_id))) and m.is_complete()
        }
        # a second parent for the same data path while the first one waits out the lost chunk: it never interleaves
        second_code, second_out, second_err = finish(distributed_export(pool, fake, data, files))
        code, out, err = finish(parent)
    finally:
        fake.faults.update(latency_ms=0)
    assert code == 0, out + err
    assert f"runs: {RUNS} exported, 0 unchanged, 0 failed" in out and complete_at_kill
    assert second_code == 3 and f"{data} is in use: export (pid {parent.pid}" in second_err, second_out + second_err

    parents = [r for r in flow_runs(pool.api_url, "export") if r.parameters["paths"]["data_path"] == str(data)]
    assert sorted(run.state.name for run in parents) == ["Completed", "Skipped"]  # the second one found the lock
    assert "is in use" in next(run for run in parents if run.state.name == "Skipped").state.message
    chunks = chunk_runs_of(pool.api_url, data)
    crashed = [run for run in chunks if run.state.type == StateType.CRASHED]
    # the half-done chunk, and any other chunk its worker held (one it had claimed but not yet logged included), never
    # a chunk of the worker that lived
    (survivor,) = [worker for worker in pool.workers if worker is not victim]
    assert half_done.id in {run.id for run in crashed} and not any(run_by(survivor, run) for run in crashed)
    assert {run.id for run in killed} <= {run.id for run in crashed}
    # lost either way: running with a heartbeat that stood still, or claimed by the killed worker and never started
    lost = ("gave no sign of life for", "stayed pending for")
    assert all(any(why in run.state.message for why in lost) for run in crashed), [run.state for run in crashed]
    assert "gave no sign of life for" in half_done_state(crashed, half_done).message
    retried = [run for run in chunks if run.parameters["shared"]["attempt"] == 2]
    # every retry is of a crashed chunk, the half-done one included; a crashed chunk whose runs had all finished
    # before its worker died (its state was never reported) needs none: the re-plan finds its runs complete
    retried_chunks = {run.parameters["shared"]["chunk"] for run in retried}
    assert half_done.parameters["shared"]["chunk"] in retried_chunks
    assert retried_chunks <= {run.parameters["shared"]["chunk"] for run in crashed}
    assert all(run.state.name == "Completed" for run in retried) and len(chunks) == RUNS // CHUNK_RUNS + len(retried)
    retried_runs = {p["run"]["run_id"] for run in retried for p in run.parameters["plans"]}
    assert retried_runs and not retried_runs & complete_at_kill  # the retries fetch only runs not complete

    assert_same_export(data, files, ref_data, ref_files)
    assert summary_runs(data) == {run_id: {"status": "complete", "action": "full"} for run_id in RUN_IDS}
    requests = fake.requests.by_run()
    complete = {run.sys_id for run in fake.workspace.project(PROJECT).runs if run.custom_run_id in complete_at_kill}
    assert {sys_id: requests[sys_id] for sys_id in complete} == {sys_id: ref_requests[sys_id] for sys_id in complete}
    assert set(requests) == set(ref_requests)  # every run fetched, none of the complete ones again


def half_done_state(crashed: list[FlowRun], half_done: FlowRun):
    """The final state of the chunk seen running half done when its worker was killed."""
    return next(run.state for run in crashed if run.id == half_done.id)


def test_a_parent_killed_mid_way_is_rerun_and_dispatches_only_the_runs_not_complete(pool, fake, reference, tmp_path):
    ref_data, ref_files, ref_requests = reference
    data, files = tmp_path / "data", tmp_path / "files"
    fake.requests.clear()
    fake.faults.update(latency_ms=150)  # a chunk takes a few seconds, its runs one after the other
    try:
        parent = distributed_export(pool, fake, data, files, max_parallel=1, more=("--workers", "1"))
        token = wait_for_the_second_chunk_under_way(pool, data)
        fake.faults.update(latency_ms=3000)  # the running chunk goes on well after its parent is gone
        parent.kill()  # SIGKILL: no cleanup, its lock released by the kernel, its marker and journals left behind
        parent.communicate(timeout=60)
        complete_at_kill = complete_runs(data)
        assert 0 < len(complete_at_kill) < RUNS and fan_out.still_current(fan_out.place(data, "export-neptune3"), token)
        rerun = distributed_export(pool, fake, data, files, max_parallel=4)
        wait_until(
            lambda: not fan_out.still_current(fan_out.place(data, "export-neptune3"), token),
            "the rerun never wrote its marker",
        )
        fake.faults.update(latency_ms=0)  # the orphaned chunk ends its run in flight quickly, then starts no other
        code, out, err = finish(rerun)
    finally:
        fake.faults.update(latency_ms=0)
    assert code == 0, out + err
    line = re.search(r"runs: (\d+) exported, (\d+) unchanged, (\d+) failed", out)
    assert line, out
    exported, unchanged, failed = map(int, line.groups())
    assert failed == 0 and exported + unchanged == RUNS, out
    assert unchanged >= len(complete_at_kill)  # what the killed parent's chunks did is not done again

    rerun_chunks = [run for run in chunk_runs_of(pool.api_url, data) if run.parameters["shared"]["token"] != token]
    assert rerun_chunks and all(run.state.name == "Completed" for run in rerun_chunks)
    dispatched = {p["run"]["run_id"] for run in rerun_chunks for p in run.parameters["plans"]}
    assert len(dispatched) == exported and not dispatched & complete_at_kill
    orphans = [run for run in chunk_runs_of(pool.api_url, data) if run.parameters["shared"]["token"] == token]
    assert all(run.state.is_final() for run in orphans), [run.state for run in orphans]  # none left running
    # one was still running at the rerun: the new marker stopped it between two runs (the rerun waited for it)
    assert any("its parent replaced" in (run.state.message or "") for run in orphans), [r.state for r in orphans]

    assert_same_export(data, files, ref_data, ref_files)
    assert set(summary_runs(data)) == set(RUN_IDS) and complete_runs(data) == set(RUN_IDS)
    assert (project_dir(data, PROJECT) / "errors.jsonl").read_text() == ""
    requests = fake.requests.by_run()
    complete = {run.sys_id for run in fake.workspace.project(PROJECT).runs if run.custom_run_id in complete_at_kill}
    assert {sys_id: requests[sys_id] for sys_id in complete} == {sys_id: ref_requests[sys_id] for sys_id in complete}
    assert not (data / fan_out.FOLDER).exists()  # the rerun merged and cleared everything, the old journals too


def complete_runs(data: Path) -> set[str]:
    return {
        run_id for run_id in RUN_IDS if (m := read_manifest(manifest_path(data, PROJECT, run_id))) and m.is_complete()
    }


def wait_for_the_second_chunk_under_way(pool: Pool, data: Path) -> str:
    """Once one chunk completed and the next one journaled a run: the distribution's token."""

    def under_way() -> str | None:
        chunks = chunk_runs_of(pool.api_url, data)
        if not any(run.state.name == "Completed" for run in chunks):
            return None
        for run in chunks:
            shared = run.parameters["shared"]
            where = str(fan_out.place(data, shared["command"]))
            journal = fan_out.ChunkFiles(where, shared["token"], shared["chunk"], shared["attempt"]).journal
            if run.state.type == StateType.RUNNING and journal.exists() and journal.read_text().count("\n") >= 1:
                return shared["token"]
        return None

    return wait_until(under_way, "no second chunk got under way within 300 s")


def wait_until(found: Callable[[], Any], failure: str) -> Any:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if value := found():
            return value
        time.sleep(0.3)
    raise AssertionError(failure)


def run_by(worker: Worker, run: FlowRun) -> bool:
    """The flow run ran in a process of this worker (its own log line, not a submission the other worker aborted)."""
    return f"/runs/flow-run/{run.id}" in worker.submitted()


def wait_until_each_worker_runs_a_chunk(pool: Pool, data: Path) -> list[FlowRun]:
    """One running chunk per worker, seen running at the same moment."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        running = [run for run in chunk_runs_of(pool.api_url, data) if run.state.type == StateType.RUNNING]
        found = [next((run for run in running if run_by(worker, run)), None) for worker in pool.workers]
        if all(found):
            return [run for run in found if run is not None]
        time.sleep(0.5)
    raise AssertionError("the two workers never ran a chunk at the same time within 300 s")


def wait_for_a_chunk_half_done(pool: Pool, data: Path) -> tuple[Worker, FlowRun]:
    """A running chunk that has journaled at least one finished run (and not nearly all of them), and its worker."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for run in chunk_runs_of(pool.api_url, data):
            if run.state.type != StateType.RUNNING:
                continue
            shared = run.parameters["shared"]
            where = str(fan_out.place(data, shared["command"]))
            journal = fan_out.ChunkFiles(where, shared["token"], shared["chunk"], shared["attempt"]).journal
            lines = journal.read_text().count("\n") if journal.exists() else 0
            owner = [worker for worker in pool.workers if run_by(worker, run)]
            if 0 < lines < len(run.parameters["plans"]) - 2 and owner:
                return owner[0], run
        time.sleep(0.5)
    raise AssertionError("no chunk got half-way within 300 s")


# ----------------------------------------------------------------------------- load and validate --distribute

LOADED = [f"run-{i:05d}" for i in range(8)]  # a few runs keep the load short; chunks of 2 spread them on both workers
LOAD_CHUNK_RUNS = 2


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A real `mlflow server` of this module and its SQLite store (a difference is injected there)."""
    folder = tmp_path_factory.mktemp("mlflow")
    url, process = start_mlflow_server(folder)
    try:
        yield url, folder / "mlflow.db"
    finally:
        stop_mlflow_server(process)


def distributed_load_args(command: str, data: Path, files: Path, target: list[str], template: str) -> list[str]:
    """`neptune-exporter load|validate --distribute` of the first runs into `target` (its CLI options)."""
    args = [command, *target, "-d", str(data), "-f", str(files), "--runs", "^run-0000[0-7]$", "--workers", "2"]
    args += ["--experiment-name-template", template] if "mlflow" in target else []
    args += ["--distribute", "--work-pool", POOL, "--chunk-runs", str(LOAD_CHUNK_RUNS), "--max-parallel", "4"]
    return args + (["--no-progress"] if command == "load" else [])


def distributed_load_env(pool: Pool) -> dict[str, str]:
    return cli_env(
        {"PREFECT_API_URL": pool.api_url, "NEPTUNE_EXPORTER_CHUNK_LOST_AFTER_S": str(LOST_AFTER_S)},
        pool.root / "cli-prefect-home",
    )


def distributed_load_command(pool: Pool, command: str, data: Path, files: Path, tracking_uri: str, template: str):
    """`neptune-exporter load|validate --distribute` into MLflow, run to completion as a user runs it."""
    target = ["--target", "mlflow", "--mlflow-tracking-uri", tracking_uri]
    args = distributed_load_args(command, data, files, target, template)
    return run_cli(args, distributed_load_env(pool), pool.root, timeout=DISTRIBUTED_TIMEOUT_S)


def distributed_runs(pool: Pool, flow_name: str, data: Path, target: str) -> list[FlowRun]:
    return [
        run
        for run in flow_runs(pool.api_url, flow_name)
        if run.parameters["options"]["data_path"] == str(data) and run.parameters["options"]["target"] == target
    ]


def test_a_distributed_load_and_validate_equal_a_single_process_load_and_find_an_injected_difference(
    pool, reference, mlflow_store, tmp_path
):
    ref_data, ref_files, _ = reference
    data, files = tmp_path / "data", tmp_path / "files"
    shutil.copytree(ref_data, data)
    shutil.copytree(ref_files, files)
    url, store = mlflow_store
    pool.revive()  # the worker test_a_worker_killed... killed
    # a distributed load into W&B (offline) of the same data path at the same time: each command its own marker
    wandb_args = distributed_load_args("load", data, files, ["--target", "wandb", "--wandb-dir", "wb"], "")
    with subprocess.Popen(
        [sys.executable, "-m", "neptune_exporter.cli", *wandb_args],
        env=distributed_load_env(pool),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as wandb_load:
        result = distributed_load_command(pool, "load", data, files, url, "dist/{project}/{experiment}")
        wandb_output = wandb_load.communicate(timeout=DISTRIBUTED_TIMEOUT_S)[0]
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"runs: {len(LOADED)} loaded, 0 already complete, 0 failed → mlflow" in result.stdout
    assert f"{len(LOADED)} run(s) checked, no differences" in result.stdout, result.stdout
    assert wandb_load.returncode == 0, wandb_output
    assert f"runs: {len(LOADED)} loaded, 0 already complete, 0 failed → wandb" in wandb_output
    assert f"{len(LOADED)} run(s) checked, no differences" in wandb_output, wandb_output

    parents = {target: distributed_runs(pool, "load", data, target) for target in ("mlflow", "wandb")}
    assert [[run.state.name for run in runs] for runs in parents.values()] == [["Completed"], ["Completed"]]
    (mlflow_parent,), (wandb_parent,) = parents.values()
    assert mlflow_parent.start_time < wandb_parent.end_time and wandb_parent.start_time < mlflow_parent.end_time
    for flow_name in ("load-chunk", "validate-chunk"):
        for target in ("mlflow", "wandb"):
            chunks = distributed_runs(pool, flow_name, data, target)
            assert len(chunks) == len(LOADED) // LOAD_CHUNK_RUNS, (flow_name, target)
            assert all(run.state.name == "Completed" for run in chunks), (flow_name, target)
            assert (
                sorted(run_id for run in chunks for run_id in (r["run_id"] for r in run.parameters["runs"])) == LOADED
            )
        chunks = distributed_runs(pool, flow_name, data, "mlflow")
        assert all(any(run_by(worker, run) for run in chunks) for worker in pool.workers), flow_name  # both ran some
    assert not (data / fan_out.FOLDER).exists()  # the journals are merged and gone

    # the W&B runs equal those one process loads
    single_wandb = LoadOptions(
        target="wandb",
        data_path=str(data),
        files_path=str(files),
        runs_regex="^run-0000[0-7]$",
        wandb_dir=str(tmp_path / "single-wb"),
    )
    assert sorted(r.run_id for r in run_load(single_wandb, Settings.from_env()) if r.status == "loaded") == LOADED
    for run_id in LOADED:
        (ours,) = wandb_logs(tmp_path / "wb", run_id)
        (theirs,) = wandb_logs(tmp_path / "single-wb", run_id)
        assert wandb_content(ours) == wandb_content(theirs), run_id

    # the same runs loaded by one process: the MLflow store holds the same runs, params, tags, points and files
    single = LoadOptions(
        target="mlflow",
        data_path=str(data),
        files_path=str(files),
        runs_regex="^run-0000[0-7]$",
        mlflow_tracking_uri=url,
        experiment_name_template="single/{project}/{experiment}",
    )
    assert sorted(r.run_id for r in run_load(single, Settings.from_env()) if r.status == "loaded") == LOADED
    client = MlflowClient(url)
    for run_id in LOADED:
        (ours,) = mlflow_runs(client, "dist", run_id)
        (theirs,) = mlflow_runs(client, "single", run_id)
        assert mlflow_content(client, ours) == mlflow_content(client, theirs), run_id

    # the one validation report the distributed load wrote equals a single-process validation of the same runs
    written = json.loads((data.parent / "reports" / "validation_mlflow.json").read_text())
    expected = run_validate(
        replace(single, experiment_name_template="dist/{project}/{experiment}"), Settings.from_env()
    )
    expected.runs.sort(key=lambda run: (run.project_id, run.run_id))
    expected.created_at = written["created_at"]
    assert written == expected.to_json() and written["runs_checked"] == len(LOADED) and written["ok"]
    assert (data.parent / "reports" / "validation_mlflow.md").read_text() == expected.to_markdown()

    # one metric point deleted in MLflow: the distributed validate finds exactly it, exit 1
    (victim,) = mlflow_runs(client, "dist", LOADED[3])
    key = sorted(victim.data.metrics)[0]
    with sqlite3.connect(store) as db:
        deleted = db.execute(
            "DELETE FROM metrics WHERE run_uuid = ? AND key = ? AND step = (SELECT MAX(step) FROM metrics WHERE "
            "run_uuid = ? AND key = ?)",
            (victim.info.run_id, key, victim.info.run_id, key),
        ).rowcount
    assert deleted == 1
    result = distributed_load_command(pool, "validate", data, files, url, "dist/{project}/{experiment}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{len(LOADED)} run(s) checked" in result.stdout
    report = json.loads((data.parent / "reports" / "validation_mlflow.json").read_text())
    assert [run["run_id"] for run in report["runs"] if not run["ok"]] == [LOADED[3]]
    differences = next(run for run in report["runs"] if not run["ok"])["differences"]
    assert differences and all(key in difference["key"] for difference in differences), differences
    expected = run_validate(
        replace(single, experiment_name_template="dist/{project}/{experiment}"), Settings.from_env()
    )
    expected.runs.sort(key=lambda run: (run.project_id, run.run_id))
    expected.created_at = report["created_at"]
    assert report == expected.to_json()


def wandb_logs(wandb_dir: Path, run_id: str) -> list[Path]:
    """The offline `.wandb` logs of one exported run under `wandb_dir`."""
    folders = find_offline_runs(wandb_dir, wandb_run_id(PROJECT, run_id))
    return [log for folder in folders if (log := run_log_path(folder)) is not None]

"""`--processes`: runs exported in worker processes give exactly the thread export's rows and files (both sources,
the awkward workspace through the real clients); a killed worker fails only its runs, and the rerun completes them."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from neptune_exporter.export import ExportOptions
from neptune_exporter.export_runner import process_count, run_export
from neptune_exporter.fake_neptune import FakeNeptune, FaultConfig
from neptune_exporter.fake_neptune.datasets import awkward_workspace
from neptune_exporter.progress import ProgressCounter
from neptune_exporter.settings import Settings
from neptune_exporter.storage.exported_run import open_exported_run
from neptune_exporter.storage.manifest import read_manifest

SETTINGS = Settings(source_retry_timeout_s=5)
PROJECT = "workspace/awkward"


def options_for(fake: FakeNeptune, source: str, root: Path, processes: int) -> ExportOptions:
    return ExportOptions(
        source=source,
        projects=(PROJECT,),
        data_path=str(root / "data"),
        files_path=str(root / "files"),
        api_token=fake.api_token,
        workers=3,
        processes=processes,
    )


def exported_content(root: Path) -> dict[str, object]:
    """Every run's rows (sorted, as text) and every downloaded file's bytes hash, by run and relative path."""
    content: dict[str, object] = {}
    for manifest_file in sorted((root / "data").rglob("*.manifest.json")):
        manifest = read_manifest(manifest_file)
        assert manifest is not None and manifest.is_complete(), manifest_file
        project, run_id = manifest.source["project_id"], manifest.source["run_id"]
        run = open_exported_run(root / "data", root / "files", project, run_id)
        rows = sorted(tuple(str(v) for v in row.values()) for batch in run.batches() for row in batch.to_pylist())
        content[f"{project}/{run_id}"] = rows
    for path in sorted((root / "files").rglob("*")):
        if path.is_file():
            content[f"file {path.relative_to(root / 'files')}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return content


@pytest.mark.parametrize("source", ["neptune3", "neptune2"])
def test_worker_processes_export_exactly_the_rows_and_files_of_the_threads(awkward_fake, tmp_path, source, monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the 2.x client's OAuth, to the fake's plain http
    threads_root, processes_root = tmp_path / "threads", tmp_path / "processes"
    threads_progress, processes_progress = ProgressCounter(), ProgressCounter()
    in_threads = run_export(options_for(awkward_fake, source, threads_root, 0), SETTINGS, threads_progress)
    in_processes = run_export(options_for(awkward_fake, source, processes_root, 2), SETTINGS, processes_progress)

    assert {r.run_id: r.status for r in in_processes} == {r.run_id: r.status for r in in_threads}
    assert {r.status for r in in_threads} == {"complete"}
    assert sorted((r.run_id, r.rows, r.points, r.files) for r in in_processes) == sorted(
        (r.run_id, r.rows, r.points, r.files) for r in in_threads
    )
    threads_content, processes_content = exported_content(threads_root), exported_content(processes_root)
    assert len([key for key in threads_content if not key.startswith("file ")]) == len(in_threads)
    assert any(key.startswith("file ") for key in threads_content)
    assert processes_content == threads_content
    # progress came back from the workers as the threads report it: every batch once, every run done once
    assert processes_progress.counts() == threads_progress.counts()
    assert threads_progress.counts().points > 0 and threads_progress.counts().runs_done == len(in_threads)
    assert not multiprocessing.active_children()  # the workers ended with the export


def test_by_default_worker_processes_only_for_a_remote_server(awkward_fake, tmp_path):
    local = options_for(awkward_fake, "neptune3", tmp_path, 0)
    assert process_count(replace(local, processes=None)) == 0  # the fake on 127.0.0.1 needs the cores itself
    remote_token = "eyJhcGlfYWRkcmVzcyI6Imh0dHBzOi8vbmVwdHVuZS5leGFtcGxlLmNvbSIsImFwaV9rZXkiOiJ4In0="
    remote = replace(local, processes=None, api_token=remote_token)  # {"api_address": "https://neptune.example.com"}
    assert process_count(remote) == max(0, (os.cpu_count() or 1) - 1)
    assert process_count(replace(remote, processes=3)) == 3


class KillWorkerOnFirstPoints(ProgressCounter):
    """Progress sink that SIGKILLs the export's worker process when the first points arrive."""

    def __init__(self) -> None:
        super().__init__()
        self.killed: list[int] = []
        self._lock = threading.Lock()

    def on_points(self, points: int, bytes_: int) -> None:
        with self._lock:
            if not self.killed:
                (worker,) = multiprocessing.active_children()
                os.kill(worker.pid, signal.SIGKILL)
                self.killed.append(worker.pid)
        super().on_points(points, bytes_)


def test_a_killed_worker_fails_its_runs_with_the_fix_and_the_rerun_completes_them(tmp_path):
    slow = FaultConfig(latency_ms=30)  # runs are in flight when the worker dies
    with FakeNeptune(awkward_workspace(), faults=slow) as fake:
        options = replace(options_for(fake, "neptune3", tmp_path / "killed", 1), workers=2)
        sink = KillWorkerOnFirstPoints()
        first = run_export(options, SETTINGS, sink)
        assert sink.killed
        failed = [r for r in first if r.status == "failed"]
        assert 1 <= len(failed) <= 2  # the runs in flight in the killed worker, no others
        for result in failed:
            (error,) = result.errors
            assert error["error_type"] == "WorkerProcessDiedError"
            assert "exit code -9" in error["message"] and "rerun the export" in error["remedy"]
        assert all(r.status == "complete" for r in first if r not in failed)  # a new worker took the others

        again = run_export(options, SETTINGS)
        assert {r.run_id: r.status for r in again if r.status != "skipped"} == dict.fromkeys(
            (r.run_id for r in failed), "complete"
        )
        reference = run_export(replace(options_for(fake, "neptune3", tmp_path / "reference", 0), workers=2), SETTINGS)
    assert {r.status for r in reference} == {"complete"}
    assert exported_content(tmp_path / "killed") == exported_content(tmp_path / "reference")


def test_the_export_flow_with_worker_processes_shows_one_task_per_run(
    prefect_harness, awkward_fake, tmp_path, monkeypatch
):
    """Under Prefect the tasks stay in the flow's process (one per run, named by it) while workers do the runs."""
    from flows.export import export, flow_parameters
    from tests.prefect_reading import subflow_runs, task_runs

    for name, value in awkward_fake.env(PROJECT).items():
        monkeypatch.setenv(name, value)
    options = replace(options_for(awkward_fake, "neptune3", tmp_path, 2), api_token=None)
    parameters = flow_parameters(options)
    assert parameters["processes"] == 2
    state = export(**parameters, return_state=True)
    summary = state.result()
    assert (summary["runs_complete"], summary["runs_failed"]) == (7, 0)
    chunks = [run.id for run in subflow_runs(state.state_details.flow_run_id)]
    runs = [run for run in task_runs(chunks) if run.task_key.startswith("export_run")]
    assert sorted(run.name for run in runs) == sorted(
        f"export {PROJECT}/{run_id}" for run_id in summary_run_ids(tmp_path)
    )
    assert {run.state.name for run in runs} == {"Completed"}
    assert not multiprocessing.active_children()  # the flow closed its workers
    assert exported_content(tmp_path) == exported_content_of_threads(awkward_fake, tmp_path / "threads")


def summary_run_ids(root: Path) -> list[str]:
    return [read_manifest(path).source["run_id"] for path in sorted((root / "data").rglob("*.manifest.json"))]


def exported_content_of_threads(fake: FakeNeptune, root: Path) -> dict[str, object]:
    assert {r.status for r in run_export(options_for(fake, "neptune3", root, 0), SETTINGS)} == {"complete"}
    return exported_content(root)

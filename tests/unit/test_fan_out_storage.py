"""storage/fan_out.py: the distribute parameter, the shared-storage marker, chunk journals and heartbeats, the split."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from neptune_exporter.errors import InvalidOptionError, StorageNotSharedError, failure_message, failure_record
from neptune_exporter.storage import fan_out
from neptune_exporter.storage.fan_out import ChunkFiles, Distribution
from neptune_exporter.storage.incremental import _project_folders
from neptune_exporter.storage.manifest import Manifest, write_manifest


def plan(project: str, run: str, action: str = "full") -> dict:
    return {"run": {"project_id": project, "run_id": run, "sys_id": run.upper()}, "action": action, "reason": ""}


def test_distribution_parameter_round_trips_and_rejects_bad_values():
    distribution = Distribution.from_json({"work_pool": "pool-a", "chunk_runs": 25})
    assert distribution == Distribution("pool-a", 25, 4)
    assert Distribution.from_json(distribution.to_json()) == distribution
    with pytest.raises(InvalidOptionError, match="needs the work pool"):
        Distribution.from_json({"chunk_runs": 5})
    with pytest.raises(InvalidOptionError, match="both must be at least 1"):
        Distribution.from_json({"work_pool": "p", "max_parallel": 0})
    with pytest.raises(InvalidOptionError, match="unknown key"):
        Distribution.from_json({"work_pool": "p", "pool": "q"})


def test_a_chunk_sees_its_parents_marker_and_no_other(tmp_path):
    where = fan_out.place(tmp_path, "export-neptune3")
    token = fan_out.write_marker(where, "export flow run 'brave-fox'")
    fan_out.check_marker(where, token)  # the same storage: passes
    with pytest.raises(StorageNotSharedError) as other:
        fan_out.check_marker(where, "another-token")
    assert (
        f"the data path {tmp_path} is not shared storage: this worker ({socket.gethostname()}) sees the marker"
        in str(other.value)
    )
    assert "export flow run 'brave-fox'" in str(other.value) and "mount the same shared storage" in other.value.remedy
    with pytest.raises(StorageNotSharedError, match="sees no marker there"):
        fan_out.check_marker(fan_out.place(tmp_path / "elsewhere", "export-neptune3"), token)
    assert _project_folders(tmp_path) == []  # the marker's folder is never taken for a project


def test_a_new_distribution_clears_the_last_ones_files_and_clear_keeps_a_newer_ones(tmp_path):
    where = fan_out.place(tmp_path, "export-neptune3")
    first = fan_out.write_marker(where, "first")
    ChunkFiles(str(where), first, "c0001", 1).append({"project_id": "ws/p", "run_id": "a"})
    second = fan_out.write_marker(where, "second")
    assert fan_out.finished_results(where, first, "c0001") == {}
    fan_out.clear(where, first)  # not the current distribution: nothing goes
    assert fan_out.still_current(where, second)
    fan_out.clear(where, second)
    assert not (tmp_path / fan_out.FOLDER).exists()


def test_the_journal_keeps_finished_runs_of_every_attempt_and_drops_a_line_cut_short(tmp_path):
    where = fan_out.place(tmp_path, "export-neptune3")
    token = fan_out.write_marker(where, "me")
    first, second = ChunkFiles(str(where), token, "c0001", 1), ChunkFiles(str(where), token, "c0001", 2)
    first.append({"project_id": "ws/p", "run_id": "a", "status": "complete"})
    with open(first.journal, "a") as handle:
        handle.write('{"project_id": "ws/p", "run_id": "b", "sta')  # the process died mid-line
    second.append({"project_id": "ws/p", "run_id": "b", "status": "failed"})
    ChunkFiles(str(where), token, "c0002", 1).append({"project_id": "ws/p", "run_id": "c"})
    found = fan_out.finished_results(where, token, "c0001")
    assert {key: result["status"] for key, result in found.items()} == {"ws/p/a": "complete", "ws/p/b": "failed"}


def test_the_heartbeat_changes_while_the_block_runs_and_a_given_up_attempt_knows_it(tmp_path):
    where = fan_out.place(tmp_path, "load-mlflow")
    files = ChunkFiles(str(where), fan_out.write_marker(where, "me"), "c0001", 1)
    assert files.read_beat() is None
    with files.beating(0.01):
        first = files.read_beat()
        while files.read_beat() == first:
            pass
    assert '"beat"' in (first or "") and not files.given_up()
    files.give_up("lost")
    assert files.given_up()


def test_distributed_commands_on_one_data_path_each_keep_their_own_marker_and_files(tmp_path):
    load, validate = fan_out.place(tmp_path, "load-mlflow"), fan_out.place(tmp_path, "validate-mlflow")
    loading = fan_out.write_marker(load, "load flow run 'calm-owl'")
    ChunkFiles(str(load), loading, "c0001", 1).append({"project_id": "ws/p", "run_id": "a", "status": "loaded"})
    validating = fan_out.write_marker(validate, "validate flow run 'keen-elk'")  # started while the load runs
    ChunkFiles(str(validate), validating, "c0001", 1).append({"project_id": "ws/p", "run_id": "a", "status": "ok"})
    assert fan_out.still_current(load, loading) and fan_out.still_current(validate, validating)
    assert not ChunkFiles(str(load), loading, "c0001", 1).given_up()
    assert fan_out.finished_results(load, loading, "c0001")["ws/p/a"]["status"] == "loaded"
    fan_out.clear(validate, validating)  # the validation is merged: the load's files stay
    assert not validate.exists() and fan_out.finished_results(load, loading, "c0001")["ws/p/a"]["status"] == "loaded"
    fan_out.clear(load, loading)
    assert not (tmp_path / fan_out.FOLDER).exists()
    with pytest.raises(ValueError, match="not a command name"):
        fan_out.place(tmp_path, "../export")


def test_plans_split_by_project_then_by_runs_in_even_chunks_of_at_most_chunk_runs():
    plans = [plan("ws/a", f"a{i}") for i in range(7)] + [plan("ws/b", f"b{i}") for i in range(2)]
    chunks = fan_out.split_plans(plans, 3)
    assert [[p["run"]["run_id"] for p in chunk] for chunk in chunks] == [
        ["a0", "a3", "a6"],
        ["a1", "a4"],
        ["a2", "a5"],
        ["b0", "b1"],
    ]


def test_known_expected_points_balance_the_chunks():
    plans = [plan("ws/a", name) for name in ("big", "s1", "s2", "s3")]
    chunks = fan_out.split_plans(plans, 3, [300.0, 100.0, 100.0, 100.0])
    assert sorted([p["run"]["run_id"] for p in chunk] for chunk in chunks) == [["big"], ["s1", "s2", "s3"]]


def test_expected_points_come_from_an_earlier_manifest_and_unknown_ones_weigh_the_mean(tmp_path: Path):
    attributes = {"m/loss": {"type": "float_series", "count": 30}, "p/lr": {"type": "float", "count": 1}}
    write_manifest(tmp_path, Manifest("complete", {"project_id": "ws/a", "run_id": "old"}, attributes=attributes))
    weights = fan_out.plan_weights([plan("ws/a", "old", "incremental"), plan("ws/a", "new")], tmp_path)
    assert weights == [30.0, 30.0]
    assert fan_out.plan_weights([plan("ws/a", "new")], tmp_path) == [1.0]


def test_a_failure_line_gives_back_its_record():
    record = {"error_type": "StorageNotSharedError", "message": "the data path /d is not shared", "remedy": "mount it"}
    assert failure_record(failure_message(record)) == record
    assert failure_record("something odd: happened") == {
        "error_type": "Error",
        "message": "something odd: happened",
        "remedy": None,
    }


def test_a_new_distribution_waits_for_the_chunks_of_a_killed_parent_and_they_start_no_further_run(tmp_path):
    where = fan_out.place(tmp_path, "export-neptune2")
    first = fan_out.write_marker(where, "a parent killed later")
    orphan = ChunkFiles(str(where), first, "c0001", 1)
    stale = ChunkFiles(str(where), first, "c0002", 1)
    with orphan.beating(60), stale.beating(60):
        os.utime(stale.beat, (0, 0))  # its worker is gone as well: it stopped beating long ago
        said, slept = [], []

        def sleep(seconds: float) -> None:
            assert orphan.given_up() and not stale.beat.stat().st_mtime  # the new marker stops it between two runs
            slept.append(seconds)
            orphan.beat.unlink()  # the orphan finishes the run it was doing and stops

        second = fan_out.write_marker(where, "the rerun", alive_for=120, on_wait=said.append, sleep=sleep)
    assert slept == [fan_out.POLL_SECONDS] and said == [
        "waiting for 1 chunk(s) of an earlier distribution to stop: c0001-1"
    ]
    assert fan_out.still_current(where, second) and not (where / first).exists()

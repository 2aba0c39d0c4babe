"""Load exports into a real MLflow server and read everything back through MlflowClient, value by value."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from neptune_exporter.errors import OutputPathError, TargetUnavailableError
from neptune_exporter.load import LoadOptions, run_load, run_validate
from neptune_exporter.loaders.base import run_key
from neptune_exporter.loaders.mlflow import MlflowLoader
from neptune_exporter.loaders.mlflow.mapping import METRICS_PER_BATCH
from neptune_exporter.loaders.mlflow.writers import MetricBatcher
from neptune_exporter.rows import parameter_rows, series_rows
from neptune_exporter.settings import RetryPolicy, Settings
from neptune_exporter.validation.mlflow import MlflowValidator
from tests.integration.mlflow_server import free_port, mlflow_server  # noqa: F401  (session fixture)
from tests.load_exports import (
    AWKWARD_PROJECT,
    COLLIDING,
    CREATED,
    LONG_KEY,
    LONG_TEXT,
    MODIFIED,
    T0_MS,
    export_awkward,
    write_export,
    write_rich_export,
)

pytestmark = pytest.mark.integration
SETTINGS = Settings(retry=RetryPolicy(attempts=2, backoff_seconds=0.1))
SETTINGS_RETRIES_TO_WAIT_ON = Settings(retry=RetryPolicy(attempts=3, backoff_seconds=0.5))
MAX_FLOAT = 1.7976931348623157e308


def options(root: Path, url: str, **kwargs) -> LoadOptions:
    return LoadOptions(
        target="mlflow",
        data_path=str(root / "data"),
        files_path=str(root / "files"),
        mlflow_tracking_uri=url,
        **{"workers": 2, **kwargs},
    )


def active_runs(client: MlflowClient, project: str, run_id: str) -> list:
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    query = f"tags.`neptune.run_key` = '{run_key(project, run_id)}'"
    return list(client.search_runs(experiments, query, run_view_type=ViewType.ACTIVE_ONLY))


def artifact_text(client: MlflowClient, run_id: str, path: str) -> str:
    with tempfile.TemporaryDirectory() as folder:
        return Path(client.download_artifacts(run_id, path, folder)).read_text(encoding="utf-8")


def artifact_bytes(client: MlflowClient, run_id: str, path: str) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        return Path(client.download_artifacts(run_id, path, folder)).read_bytes()


@pytest.fixture(scope="module")
def loaded(mlflow_server, tmp_path_factory):  # noqa: F811
    """Two runs of one project (a fork child without experiment) loaded once for the read-back tests."""
    root = tmp_path_factory.mktemp("rich")
    project = "ws/rich"
    write_rich_export(root / "data", root / "files", project, "run-1", part_target_bytes=1024)
    write_rich_export(root / "data", root / "files", project, "run-2", fork_parent="run-1", experiment=None)
    results = run_load(options(root, mlflow_server), SETTINGS)
    return root, project, results, MlflowClient(mlflow_server)


def test_every_run_is_loaded_once_into_its_experiment(loaded):
    root, project, results, client = loaded
    assert sorted((r.run_id, r.status, r.points, r.files) for r in results) == [
        ("run-1", "loaded", 2503, 9),  # + neptune/original_points/metrics/loss.jsonl (its ±inf)
        ("run-2", "loaded", 2503, 9),
    ]
    (parent,) = active_runs(client, project, "run-1")
    (child,) = active_runs(client, project, "run-2")
    assert client.get_experiment(parent.info.experiment_id).name == "ws/rich/exp-a"
    assert client.get_experiment(child.info.experiment_id).name == "ws/rich"
    assert parent.info.run_name == "run-1"
    assert parent.info.start_time == int(CREATED.timestamp() * 1000)
    assert parent.info.end_time == int(MODIFIED.timestamp() * 1000)
    assert parent.info.status == "FINISHED"


def test_params_tags_and_long_values_read_back(loaded):
    _, project, _, client = loaded
    run = client.get_run(active_runs(client, project, "run-1")[0].info.run_id)
    params, tags = run.data.params, run.data.tags
    assert params["params/lr"] == "0.001" and params["params/nan"] == "nan" and params["params/inf"] == "inf"
    assert params["params/epochs"] == "12" and params["params/flag"] == "True" and params["params/name"] == "résumé ✓"
    assert params["params/when"] == "2024-02-03T04:05:06.789+00:00"
    assert params["params/set"] == '["a", "b", "c"]'
    long_param = params["params/long"]
    assert len(long_param) <= 6000 and long_param.startswith(LONG_TEXT[:5000])
    assert "neptune/long_values/params/long.txt" in long_param
    assert artifact_text(client, run.info.run_id, "neptune/long_values/params/long.txt") == LONG_TEXT
    key_map = json.loads(artifact_text(client, run.info.run_id, "neptune/key_map.json"))
    renamed = key_map["attributes"]
    assert set(renamed) >= {LONG_KEY, "weird//key..x:y"} and len(renamed[LONG_KEY]) <= 250
    assert params[renamed[LONG_KEY]] == "7" and params[renamed["weird//key..x:y"]] == "w"
    colliding = [renamed.get(k, k) for k in COLLIDING]
    assert len(set(colliding)) == 2 and sorted(params[k] for k in colliding) == ["1", "2"]
    assert tags["baseline"] == "" and tags["with space"] == ""
    assert key_map["tags"]["mlflow.note"] == "neptune.tag.mlflow.note" and tags["neptune.tag.mlflow.note"] == ""
    assert tags["neptune.project"] == project and tags["neptune.run_id"] == "run-1"
    assert tags["neptune.load_state"] == "complete" and tags["neptune.step_multiplier"] == "100"
    assert len(tags["neptune.export_checksum"]) == 64


def test_metrics_read_back_point_by_point(loaded):
    _, project, _, client = loaded
    run_id = active_runs(client, project, "run-1")[0].info.run_id
    history = sorted(client.get_metric_history(run_id, "metrics/loss"), key=lambda m: m.step)
    expected = np.linspace(1.0, 0.0, 2500)
    assert [m.step for m in history] == [i * 100 for i in range(2500)]
    assert [m.timestamp for m in history] == [T0_MS + i * 10 for i in range(2500)]
    assert math.isnan(history[3].value) and history[4].value == MAX_FLOAT and history[5].value == -MAX_FLOAT
    assert all(history[i].value == expected[i] for i in range(2500) if i not in (3, 4, 5))
    frac = sorted(client.get_metric_history(run_id, "metrics/frac"), key=lambda m: m.step)
    assert [(m.step, m.value, m.timestamp) for m in frac] == [
        (50, 1.0, T0_MS),
        (125, 2.0, T0_MS + 1),
        (200, 3.0, T0_MS + 2),
    ]


def test_series_and_files_read_back_as_artifacts(loaded):
    root, project, _, client = loaded
    run_id = active_runs(client, project, "run-1")[0].info.run_id
    lines = [json.loads(line) for line in artifact_text(client, run_id, "logs/stdout/series.jsonl").splitlines()]
    assert lines == [
        {"step": "1", "timestamp": "2024-03-01T12:00:00.123+00:00", "value": "hello"},
        {"step": "2", "timestamp": "2024-03-01T12:00:00.128+00:00", "value": "wörld\nnext"},
    ]
    histograms = [json.loads(line) for line in artifact_text(client, run_id, "hist/w/histograms.jsonl").splitlines()]
    assert [(h["step"], h["edges"], h["values"]) for h in histograms] == [
        ("0", [0.0, 1.0, 2.0], [3.0, 4.0]),
        ("1", [0.0, 1.0], [5.0]),
    ]
    assert artifact_bytes(client, run_id, "images/pred/step_100/pred_1.png") == b"png-one"
    assert artifact_bytes(client, run_id, "images/pred/step_200/pred_2.png") == b"png-two-bytes"
    assert artifact_bytes(client, run_id, "files/model/model.bin") == b"\x00weights" * 100
    assert artifact_bytes(client, run_id, "files/source/sub/b.txt") == b"bee"
    assert artifact_bytes(client, run_id, "files/source/a.py") == b"print('a')\n"


def test_fork_child_is_linked_to_its_loaded_parent(loaded):
    _, project, _, client = loaded
    parent = active_runs(client, project, "run-1")[0].info.run_id
    child = client.get_run(active_runs(client, project, "run-2")[0].info.run_id)
    assert child.data.tags["neptune.fork_parent"] == "run-1"
    assert child.data.tags["mlflow.parentRunId"] == parent
    assert child.data.tags["neptune.fork_parent_mlflow_run_id"] == parent


def test_loading_twice_changes_nothing_and_validation_is_clean(loaded, mlflow_server):  # noqa: F811
    root, project, _, client = loaded
    before = {r: active_runs(client, project, r)[0].info.run_id for r in ("run-1", "run-2")}
    again = run_load(options(root, mlflow_server), SETTINGS)
    assert sorted((r.run_id, r.status, r.target_run_id) for r in again) == sorted(
        ("run-" + k[-1], "skipped", v) for k, v in before.items()
    )
    assert {r: [x.info.run_id for x in active_runs(client, project, r)] for r in before} == {
        r: [v] for r, v in before.items()
    }
    assert len(client.get_metric_history(before["run-1"], "metrics/loss")) == 2500
    report = run_validate(options(root, mlflow_server), SETTINGS)
    assert report.ok, report.to_markdown()
    assert [run.checked for run in report.runs][0] == {
        "params": 14,
        "tags": 9,
        "metrics": 2,
        "points": 2503,
        "artifacts": 10,
    }


def test_validation_reads_metric_history_page_by_page(loaded, mlflow_server):  # noqa: F811
    root, project, _, client = loaded
    target = active_runs(client, project, "run-1")[0].info.run_id
    validator = MlflowValidator(mlflow_server, history_page_size=300)
    pages = list(validator.metric_history(target, "metrics/loss"))
    assert [len(steps) for steps, _, _ in pages] == [300] * 8 + [100]  # 2,500 points, never more than a page held
    assert sorted(np.concatenate([steps for steps, _, _ in pages]).tolist()) == [i * 100 for i in range(2500)]
    report = validator.validate(root / "data", root / "files", project, "run-1")
    assert report.ok, report.to_json()
    assert report.checked["points"] == 2503
    paged = run_validate(
        options(root, mlflow_server), Settings(series_batch_rows=700)
    )  # the validator takes it from settings
    assert paged.ok and sum(run.checked["points"] for run in paged.runs) == 2 * 2503


def test_validation_lists_every_difference(mlflow_server, tmp_path):  # noqa: F811
    from mlflow.entities import Metric

    project = "ws/tamper"
    write_rich_export(tmp_path / "data", tmp_path / "files", project, "r", points=50)
    run_load(options(tmp_path, mlflow_server), SETTINGS)
    client = MlflowClient(mlflow_server)
    target = active_runs(client, project, "r")[0].info.run_id
    client.log_batch(target, metrics=[Metric("metrics/loss", 9.0, T0_MS, 999_900)])
    (tmp_path / "extra.txt").write_text("x")
    client.log_artifact(target, str(tmp_path / "extra.txt"), "files/model")
    experiment = client.get_run(target).info.experiment_id
    client.create_run(experiment, tags={"neptune.run_key": run_key(project, "r"), "neptune.load_state": "loading"})
    report = run_validate(options(tmp_path, mlflow_server), SETTINGS)
    problems = {(d.kind, d.key, d.problem) for d in report.differences}
    assert problems == {
        ("metric", "metrics/loss", "count"),
        ("artifact", "files/model/extra.txt", "unexpected"),
        ("run", "r", "copies"),
    }
    (points,) = [d for d in report.differences if d.kind == "metric"]
    assert points.expected == {"count": 50, "missing_in_target": []}
    assert points.actual == {"count": 51, "unexpected_in_target": [{"step": 999_900, "timestamp": T0_MS, "value": 9.0}]}
    json_path, md_path = report.write(tmp_path / "report")
    assert json.loads(json_path.read_text())["differences"] == 3 and "files/model/extra.txt" in md_path.read_text()


def test_changed_export_is_reloaded_and_old_run_deleted(mlflow_server, tmp_path):  # noqa: F811
    project = "ws/changed"
    batches = [parameter_rows(project, "r", [("p", "int", 1)])]
    write_export(tmp_path / "data", tmp_path / "files", project, "r", batches)
    first = run_load(options(tmp_path, mlflow_server), SETTINGS)[0]
    more = [series_rows(project, "r", "m", "float_series", [1, 2], [0.5, 0.25], [T0_MS, T0_MS + 1])]
    write_export(tmp_path / "data", tmp_path / "files", project, "r", more)  # a new part + manifest: new checksum
    second = run_load(options(tmp_path, mlflow_server), SETTINGS)[0]
    client = MlflowClient(mlflow_server)
    assert second.status == "loaded" and second.target_run_id != first.target_run_id
    assert [r.info.run_id for r in active_runs(client, project, "r")] == [second.target_run_id]
    assert client.get_run(first.target_run_id).info.lifecycle_stage == "deleted"
    assert run_validate(options(tmp_path, mlflow_server), SETTINGS).ok


def test_peer_format_export_without_manifest_loads(mlflow_server, tmp_path):  # noqa: F811
    from tests.unit.fixtures.peer_export import PREDICTIONS, PROJECT, RUN, write_peer_files, write_peer_run

    write_peer_run(tmp_path / "data")  # the peer tool's layout: parts only, no manifest
    write_peer_files(tmp_path / "files")  # in the peer's place: <files>/<sanitized project>/<file_value.path>
    result = run_load(options(tmp_path, mlflow_server), SETTINGS)[0]
    client = MlflowClient(mlflow_server)
    loaded = client.get_run(result.target_run_id)
    assert result.status == "loaded" and client.get_experiment(loaded.info.experiment_id).name == f"{PROJECT}/baseline"
    assert loaded.info.run_name == RUN and loaded.info.start_time == int(
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp() * 1000
    )
    assert loaded.data.params["params/lr"] == "0.01" and loaded.data.tags["neptune.step_multiplier"] == "10"
    assert loaded.data.tags["x"] == "" and loaded.data.tags["neptune.fork_parent"] == "exp-6"
    assert "mlflow.parentRunId" not in loaded.data.tags  # the parent was not exported, so there is nothing to link
    history = sorted(client.get_metric_history(result.target_run_id, "metrics/acc"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(5, 0.0), (15, 0.1), (25, 0.2), (35, 0.3), (45, 0.4)]
    assert artifact_bytes(client, result.target_run_id, "model/ckpt/ckpt.bin") == b"peer checkpoint"
    for step, path, data in PREDICTIONS:  # file series steps scaled like the metrics (x10)
        assert artifact_bytes(client, result.target_run_id, f"images/pred/step_{step * 10}/{Path(path).name}") == data
    assert run_validate(options(tmp_path, mlflow_server), SETTINGS).ok
    assert run_load(options(tmp_path, mlflow_server), SETTINGS)[0].status == "skipped"


def test_user_step_multiplier_that_is_not_exact_fails_before_writing(mlflow_server, tmp_path):  # noqa: F811
    project = "ws/multiplier"
    write_export(
        tmp_path / "data",
        tmp_path / "files",
        project,
        "r",
        [series_rows(project, "r", "m", "float_series", [0.25], [1.0], [T0_MS])],
    )
    result = run_load(options(tmp_path, mlflow_server, step_multiplier=10), SETTINGS)[0]
    assert result.status == "failed" and result.error["error_type"] == "InvalidOptionError"
    assert "0.25" in result.error["message"]
    assert active_runs(MlflowClient(mlflow_server), project, "r") == []


def test_unreachable_server_and_missing_folder_are_one_clear_error(tmp_path):
    write_export(
        tmp_path / "data", tmp_path / "files", "ws/bad", "r", [parameter_rows("ws/bad", "r", [("p", "int", 1)])]
    )
    with pytest.raises(TargetUnavailableError, match="not reachable.*fix: start the server"):
        run_load(options(tmp_path, f"http://127.0.0.1:{free_port()}"), SETTINGS)
    with pytest.raises(OutputPathError, match="does not exist"):
        MlflowLoader("sqlite:///" + str(tmp_path / "no" / "such" / "mlflow.db")).check_target()


def test_missing_export_folder_fails_before_loading(mlflow_server, tmp_path):  # noqa: F811
    with pytest.raises(OutputPathError, match=r"export folder .* does not exist.*fix: pass the --data-path"):
        run_load(options(tmp_path / "nowhere", mlflow_server), SETTINGS)


def test_corrupted_part_fails_the_run_and_leaves_nothing_marked_complete(mlflow_server, tmp_path):  # noqa: F811
    project = "ws/corrupt"
    manifest = write_rich_export(tmp_path / "data", tmp_path / "files", project, "r", points=10)
    part = tmp_path / "data" / manifest.parts[0].path
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    result = run_load(options(tmp_path, mlflow_server), SETTINGS)[0]
    assert result.status == "failed" and result.error["error_type"] == "DamagedExportError"  # a CorruptPartError
    assert manifest.parts[0].path in result.error["message"] and "truncated" in result.error["message"]
    client = MlflowClient(mlflow_server)
    assert active_runs(client, project, "r") == []  # refused before anything was written
    report = run_validate(options(tmp_path, mlflow_server), SETTINGS)
    assert not report.ok and report.runs[0].error["error_type"] == "DamagedExportError"


LOADER_SCRIPT = """
import sys
from neptune_exporter.load import LoadOptions, run_load
from neptune_exporter.settings import Settings
options = LoadOptions(target="mlflow", data_path=sys.argv[1], files_path=sys.argv[2], mlflow_tracking_uri=sys.argv[3], workers=1)
run_load(options, Settings())
"""


def test_sigkill_mid_load_then_rerun_ends_complete_without_duplicates(mlflow_server, tmp_path):  # noqa: F811
    project, points = "ws/killed", 10_000
    steps = np.arange(points, dtype=np.float64)
    batches = [series_rows(project, "big", f"m/{i}", "float_series", steps, steps * i, T0_MS + steps) for i in range(2)]
    write_export(tmp_path / "data", tmp_path / "files", project, "big", batches)
    client = MlflowClient(mlflow_server)
    args = [sys.executable, "-c", LOADER_SCRIPT, str(tmp_path / "data"), str(tmp_path / "files"), mlflow_server]
    process = subprocess.Popen(args, cwd=Path(__file__).resolve().parents[2], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _has_points(client, project):
            time.sleep(0.2)
        assert process.poll() is None, "the loader finished before it could be killed; make the run bigger"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    (partial,) = active_runs(client, project, "big")
    assert partial.data.tags["neptune.load_state"] == "loading"
    result = run_load(options(tmp_path, mlflow_server), SETTINGS)[0]
    assert result.status == "loaded" and result.points == 2 * points
    (complete,) = active_runs(client, project, "big")
    assert complete.info.run_id == result.target_run_id and complete.data.tags["neptune.load_state"] == "complete"
    assert client.get_run(partial.info.run_id).info.lifecycle_stage == "deleted"
    assert len(client.get_metric_history(result.target_run_id, "m/1")) == points
    assert run_validate(options(tmp_path, mlflow_server), SETTINGS).ok


def _has_points(client: MlflowClient, project: str) -> bool:
    runs = active_runs(client, project, "big")
    return bool(runs) and bool(client.get_run(runs[0].info.run_id).data.metrics)


def test_fake_neptune_awkward_workspace_exports_then_loads_exactly(awkward_fake, mlflow_server, tmp_path):  # noqa: F811
    project = AWKWARD_PROJECT
    exported = export_awkward(awkward_fake, tmp_path)
    assert {r.status for r in exported} == {"complete"} and len(exported) == 8
    results = {r.run_id: r for r in run_load(options(tmp_path, mlflow_server, projects=(project,)), SETTINGS)}
    assert {k: r.status for k, r in results.items()} == {r.run_id: "loaded" for r in exported}
    client = MlflowClient(mlflow_server)
    basic = client.get_run(results["run-basic"].target_run_id)
    assert client.get_experiment(basic.info.experiment_id).name == "workspace/awkward/exp-alpha"
    assert (
        basic.data.params["params/string_set"] == '["a", "b/c", "ü"]' and basic.data.params["params/empty_string"] == ""
    )
    assert basic.data.params["unicode/ścieżka/λ"] == "1.5" and basic.data.tags["neptune.step_multiplier"] == "100"
    steps = sorted((m.step, m.value) for m in client.get_metric_history(basic.info.run_id, "metrics/float_steps"))
    assert steps == [(10, 1.0), (29, 2.0), (100, 3.0), (150, 4.0)]
    wide = client.get_run(results["run-wide"].target_run_id).data.params
    assert len([k for k in wide if k.startswith("wide/")]) == 10_000 and wide["wide/p09999"] == "4999.5"
    child = client.get_run(results["run-child"].target_run_id)
    assert child.data.tags["mlflow.parentRunId"] == results["run-parent"].target_run_id
    report = run_validate(options(tmp_path, mlflow_server, projects=(project,)), SETTINGS)
    assert report.ok, report.to_markdown()
    assert sum(run.checked["points"] for run in report.runs) > 100


def test_a_locked_sqlite_store_is_one_retry_line_per_attempt_and_no_traceback(tmp_path, caplog, capfd):
    """A sqlite:/// store whose database another process holds (a write lock, released once the load has retried):
    the failed write is retried with one line naming the run and the attempt; MLflow's own traceback stays quiet."""
    project, store = "ws/locked", tmp_path / "mlflow.db"
    steps = np.arange(100, dtype=np.float64)
    rows = series_rows(project, "r", "m", "float_series", steps, steps, T0_MS + steps)
    write_export(tmp_path / "data", tmp_path / "files", project, "r", [rows])
    MlflowClient(f"sqlite:///{store}").search_experiments()  # the store's tables exist
    holder = sqlite3.connect(store, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # readers go on, writers wait, then fail after SQLite's busy timeout (5 s)
    release = ReleaseOnRetry(holder)
    logging.getLogger("neptune_exporter.retry").addHandler(release)
    try:
        with caplog.at_level(logging.INFO):
            (result,) = run_load(options(tmp_path, f"sqlite:///{store}"), SETTINGS_RETRIES_TO_WAIT_ON)
    finally:
        logging.getLogger("neptune_exporter.retry").removeHandler(release)
        holder.close()
    assert result.status == "loaded" and result.points == 100
    retries = [record.getMessage() for record in caplog.records if record.name == "neptune_exporter.retry"]
    assert len(retries) == 1 and "\n" not in retries[0], retries
    assert retries[0].startswith(f"loading {project}/r: MLflow failed to "), retries
    assert "(sqlite3.OperationalError) database is locked — fix: " in retries[0] and "[SQL:" not in retries[0]
    assert "; attempt 2 of 3 in " in retries[0]
    assert not [record for record in caplog.records if record.exc_info]
    assert "Traceback" not in capfd.readouterr().err


class ReleaseOnRetry(logging.Handler):
    """Commits the lock holder's transaction when the retry policy logs its first retry."""

    def __init__(self, holder: sqlite3.Connection) -> None:
        super().__init__()
        self.holder = holder

    def emit(self, record: logging.LogRecord) -> None:
        if self.holder.in_transaction:
            self.holder.execute("COMMIT")


def test_four_writers_into_sqlite_never_lock_each_other_out_and_no_run_is_redone(tmp_path, caplog):
    """`load --workers 4` into a sqlite:/// store: one writer at a time inside the process (SQLite has one write
    lock), so no write waits out SQLite's busy timeout, nothing is retried and no run is deleted and loaded again."""
    project, store, runs = "ws/sqlite", tmp_path / "mlflow.db", [f"r{i}" for i in range(8)]
    steps = np.arange(2_000, dtype=np.float64)
    for run in runs:
        series = [
            series_rows(project, run, f"m/{metric}", "float_series", steps, steps * metric, T0_MS + steps)
            for metric in range(4)
        ]
        write_export(tmp_path / "data", tmp_path / "files", project, run, series)
    with caplog.at_level(logging.INFO):
        results = run_load(options(tmp_path, f"sqlite:///{store}", workers=4), SETTINGS)
    assert sorted((r.run_id, r.status, r.points) for r in results) == [(run, "loaded", 4 * 2_000) for run in runs]
    retried = [record.getMessage() for record in caplog.records if record.name == "neptune_exporter.retry"]
    assert retried == []
    with sqlite3.connect(store) as db:
        stages = db.execute("SELECT lifecycle_stage, COUNT(*) FROM runs GROUP BY lifecycle_stage").fetchall()
    assert stages == [("active", len(runs))]  # no run deleted and loaded again
    report = run_validate(options(tmp_path, f"sqlite:///{store}", workers=4), SETTINGS)
    assert report.ok and len(report.runs) == len(runs), report.to_markdown()


def test_bulk_points_into_sqlite_are_the_rows_mlflows_log_batch_writes(awkward_fake, tmp_path, monkeypatch):
    """A sqlite:/// load writes metric points in bulk (`sqlite_metrics.SqliteMetricWriter`), not through MLflow's
    `log_batch`: the awkward workspace (NaN, ±inf, steps 0.1/0.29, times before 1970, forks) loaded both ways holds
    the same `metrics` and `latest_metrics` rows, run for run, and validates clean."""
    exported = export_awkward(awkward_fake, tmp_path)
    assert exported and all(result.status == "complete" for result in exported)
    bulk, batched = tmp_path / "bulk.db", tmp_path / "batched.db"
    assert all(r.status == "loaded" for r in run_load(options(tmp_path, f"sqlite:///{bulk}"), SETTINGS))
    monkeypatch.setattr(
        MlflowLoader,
        "_metric_writer",
        lambda self, run_id: MetricBatcher(self.client, run_id, METRICS_PER_BATCH, self._pacing),
    )
    assert all(r.status == "loaded" for r in run_load(options(tmp_path, f"sqlite:///{batched}"), SETTINGS))
    monkeypatch.undo()
    for table, at_least in (("metrics", 100), ("latest_metrics", 5)):
        ours, mlflows = stored_points(bulk, table), stored_points(batched, table)
        assert ours == mlflows, table
        assert sum(len(rows) for rows in ours.values()) > at_least, table
    assert any(row[1] == MAX_FLOAT for rows in stored_points(bulk, "metrics").values() for row in rows)
    assert any(row[4] for rows in stored_points(bulk, "metrics").values() for row in rows)  # a NaN point
    report = run_validate(options(tmp_path, f"sqlite:///{bulk}"), SETTINGS)
    assert report.ok and len(report.runs) == len(exported), report.to_markdown()


def stored_points(store: Path, table: str) -> dict[str, list[tuple]]:
    """Rows of MLflow's `metrics` or `latest_metrics` table by the run's name (key, value, timestamp, step, is_nan)."""
    with sqlite3.connect(store) as db:
        rows = db.execute(
            f"SELECT runs.name, m.key, m.value, m.timestamp, m.step, m.is_nan FROM {table} m "
            "JOIN runs ON runs.run_uuid = m.run_uuid WHERE runs.lifecycle_stage = 'active' "
            "ORDER BY runs.name, m.key, m.step, m.timestamp, m.value"
        ).fetchall()
    by_run: dict[str, list[tuple]] = {}
    for name, *row in rows:
        by_run.setdefault(name, []).append(tuple(row))
    return by_run

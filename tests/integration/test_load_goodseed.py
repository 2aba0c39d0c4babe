"""GoodSeed loads into its real local storage (SQLite per run under --goodseed-home), read back through GoodSeed's
own read API value by value; validation reports no differences, and a loader bug injected here is reported."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import goodseed
import numpy as np
import pytest
from goodseed.config import get_run_db_path
from goodseed.storage import read_configs, read_metrics, read_run_meta, read_string_series

from neptune_exporter.load import LoadOptions, run_load, run_validate
from neptune_exporter.loaders.goodseed import writer as goodseed_writer
from neptune_exporter.rows import parameter_rows, series_rows
from neptune_exporter.settings import RetryPolicy, Settings
from tests.load_exports import (
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
PROJECT = "ws/rich"


def options(root: Path, **kwargs) -> LoadOptions:
    values = {"workers": 2, "goodseed_home": str(root / "gs"), **kwargs}
    return LoadOptions(target="goodseed", data_path=str(root / "data"), files_path=str(root / "files"), **values)


def db(root: Path, run_id: str, project: str = PROJECT) -> Path:
    return get_run_db_path(project, run_id, root / "gs")


def points_of(path: Path, key: str) -> list[tuple[float, float, int]]:
    """(step, value, epoch ms) of one metric, read back by GoodSeed."""
    return [
        (p["step"], p["value"], round(datetime.fromisoformat(p["logged_at"]).timestamp() * 1000))
        for p in read_metrics(path, key)
    ]


def texts_of(path: Path, key: str) -> list[tuple[float, str, int]]:
    return [
        (p["step"], p["value"], round(datetime.fromisoformat(p["logged_at"]).timestamp() * 1000))
        for p in read_string_series(path, key)["points"]
    ]


def databases(root: Path) -> dict[Path, tuple[int, int]]:
    """Every run database under the home with its modification time and size (a reader's `-shm` index aside)."""
    return {
        p: (p.stat().st_mtime_ns, p.stat().st_size) for p in (root / "gs").rglob("*.sqlite*") if "-shm" not in p.name
    }


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Two runs of one project (the second a fork without experiment), loaded once."""
    root = tmp_path_factory.mktemp("goodseed")
    write_rich_export(root / "data", root / "files", PROJECT, "run-1", part_target_bytes=1024)
    write_rich_export(root / "data", root / "files", PROJECT, "run/2 ü", fork_parent="run-1", experiment=None)
    results = {r.run_id: r for r in run_load(options(root), SETTINGS)}
    return root, results


def test_every_run_is_a_goodseed_run_goodseed_itself_lists(loaded, monkeypatch):
    root, results = loaded
    assert {k: (r.status, r.error) for k, r in results.items()} == {
        "run-1": ("loaded", None),
        "run/2 ü": ("loaded", None),
    }
    odd = results["run/2 ü"].target_run_id
    assert results["run-1"].target_run_id == "run-1" and odd.startswith("run_2-") and len(odd) == len("run_2-") + 12
    monkeypatch.setenv("GOODSEED_HOME", str(root / "gs"))
    assert sorted(r["run_id"] for r in goodseed.list_runs("ws", "rich", storage="local")) == sorted(["run-1", odd])
    meta = read_run_meta(db(root, "run-1"))
    assert (meta["run_id"], meta["project"], meta["status"], meta["name"]) == ("run-1", PROJECT, "finished", "exp-a")
    assert meta["created_at"] == CREATED.isoformat() and meta["modified_at"] == MODIFIED.isoformat()
    assert "name" not in read_run_meta(db(root, odd))  # no experiment: GoodSeed shows the run id
    assert not list((root / "gs").rglob("*-loading*"))


def test_params_tags_and_provenance_read_back_exactly(loaded):
    root, results = loaded
    configs = read_configs(db(root, "run-1"))
    assert configs["params/lr"] == 0.001 and math.isnan(configs["params/nan"]) and configs["params/inf"] == math.inf
    assert configs["params/epochs"] == 12 and configs["params/name"] == "résumé ✓" and configs["params/flag"] is True
    assert configs["params/when"] == datetime(2024, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
    assert configs["params/set"] == {"a", "b", "c"} and configs["params/long"] == LONG_TEXT  # never cut
    assert configs[LONG_KEY] == 7 and configs[COLLIDING[0]] == 1 and configs[COLLIDING[1]] == 2
    assert configs["weird//key..x:y"] == "w"  # GoodSeed keys are TEXT: kept as they are
    assert configs["sys/tags"] == {"baseline", "mlflow.note", "with space"}  # GoodSeed's own tags field
    assert configs["sys/creation_time"] == CREATED and configs["sys/id"] == "run-1"
    assert configs["sys/state"] == "finished" and configs["sys/name"] == "exp-a"
    assert configs["neptune.project"] == PROJECT and configs["neptune.run_id"] == "run-1"
    assert configs["neptune.load_state"] == "complete" and configs["neptune.export_checksum"]
    assert configs["neptune.step_multiplier"] == 1 and json.loads(configs["neptune.key_map"]) == {}
    not_loaded = json.loads(configs["neptune.not_loaded"])
    assert sorted(not_loaded) == ["files/model", "files/source", "images/pred"]
    assert not_loaded["images/pred"].startswith("file_series: GoodSeed has no file storage")
    child = read_configs(db(root, results["run/2 ü"].target_run_id))
    assert child["neptune.fork_parent"] == "run-1" and child["neptune.fork_step"] == 1.0
    assert child["neptune.run_id"] == "run/2 ü"


def test_series_read_back_point_by_point_with_exact_steps_and_times(loaded):
    root, results = loaded
    path = db(root, "run-1")
    loss = points_of(path, "metrics/loss")
    assert len(loss) == 2499 and results["run-1"].points == 2500 + 3 + 2 + 2
    assert loss[0] == (0.0, 1.0, T0_MS) and loss[3] == (4.0, math.inf, T0_MS + 40) and loss[4][1] == -math.inf
    assert loss[-1] == (2499.0, 0.0, T0_MS + 24990)
    assert texts_of(path, "neptune.nan/metrics/loss") == [(3.0, "NaN", T0_MS + 30)]  # REAL NOT NULL holds no NaN
    assert points_of(path, "metrics/frac") == [(0.5, 1.0, T0_MS), (1.25, 2.0, T0_MS + 1), (2.0, 3.0, T0_MS + 2)]
    assert texts_of(path, "logs/stdout") == [(1.0, "hello", T0_MS), (2.0, "wörld\nnext", T0_MS + 5)]
    histograms = [(s, json.loads(v), t) for s, v, t in texts_of(path, "hist/w")]
    assert histograms == [
        (0.0, {"type": "linear", "edges": [0.0, 1.0, 2.0], "values": [3.0, 4.0]}, T0_MS),
        (1.0, {"type": "linear", "edges": [0.0, 1.0], "values": [5.0]}, T0_MS + 7),
    ]
    assert not read_metrics(path, "images/pred") and not read_string_series(path, "files/model")["points"]


def test_loading_twice_adds_nothing_and_validation_is_clean(loaded):
    root, _ = loaded
    before = databases(root)
    again = run_load(options(root), SETTINGS)
    assert sorted(r.status for r in again) == ["skipped", "skipped"]
    assert databases(root) == before  # not written: same files, times and sizes; nothing waits in a WAL
    assert all(wal.stat().st_size == 0 for wal in (root / "gs").rglob("*.sqlite-wal"))
    report = run_validate(options(root), SETTINGS)
    assert report.ok, report.to_markdown()
    checked = {run.run_id: run.checked for run in report.runs}
    assert checked["run-1"]["points"] == 2507 and checked["run-1"]["not_loaded"] == 3


def test_reserved_keys_move_and_fractional_steps_or_a_multiplier_stay_exact(tmp_path):
    attributes = [("sys/id", "string", "SYS-9"), ("sys/state", "string", "Inactive"), ("neptune.run_id", "int", 5)]
    batches = [
        parameter_rows(PROJECT, "r", attributes),
        series_rows(PROJECT, "r", "m/f", "float_series", [0.1, 0.29, 123456789.123456], [1.0, -0.0, 3.0], [0, 1, 2]),
        series_rows(PROJECT, "r", "m/big", "float_series", [999_999_999_999, 1], [1.0, 2.0], [T0_MS, T0_MS]),
    ]
    write_export(tmp_path / "data", tmp_path / "files", PROJECT, "r", batches)
    assert run_load(options(tmp_path), SETTINGS)[0].status == "loaded"
    configs = read_configs(db(tmp_path, "r"))
    assert configs["sys/id"] == "r" and configs["neptune.original/sys/id"] == "SYS-9"
    assert configs["neptune.original/sys/state"] == "Inactive" and configs["neptune.original/neptune.run_id"] == 5
    assert json.loads(configs["neptune.key_map"]) == {k: f"neptune.original/{k}" for k, _, _ in attributes}
    assert [p[0] for p in points_of(db(tmp_path, "r"), "m/f")] == [0.1, 0.29, 123456789.123456]
    assert [p[0] for p in points_of(db(tmp_path, "r"), "m/big")] == [1.0, 999_999_999_999.0]
    assert run_validate(options(tmp_path), SETTINGS).ok
    scaled = options(tmp_path, goodseed_home=str(tmp_path / "gs100"), step_multiplier=100)
    result = run_load(scaled, SETTINGS)[0]
    assert result.status == "failed" and "m/f" in result.error["message"]  # 123456789.123456 × 100 is not whole
    scaled = options(tmp_path, goodseed_home=str(tmp_path / "gs6"), step_multiplier=10**6)
    result = run_load(scaled, SETTINGS)[0]  # 999,999,999,999 × 10**6 has no exact float64: that series fails alone
    assert result.status == "failed" and result.error["attribute"] == "m/big", result.error
    assert "step 999999999999 × 1000000 of m/big has no exact REAL (float64) value" in result.error["message"]
    path = get_run_db_path(PROJECT, "r", tmp_path / "gs6")
    assert [p["step"] for p in read_metrics(path, "m/f")] == [100_000.0, 290_000.0, 123456789123456.0]
    assert not read_metrics(path, "m/big") and read_configs(path)["neptune.step_multiplier"] == 10**6
    report = run_validate(scaled, SETTINGS)
    assert [(d.kind, d.key, d.problem, d.actual) for d in report.differences] == [
        ("series", "m/big", "inexact step", "999999999999")
    ]


def test_changed_export_is_swapped_in_whole(tmp_path):
    write_export(tmp_path / "data", tmp_path / "files", PROJECT, "r", [parameter_rows(PROJECT, "r", [("p", "int", 1)])])
    assert run_load(options(tmp_path), SETTINGS)[0].status == "loaded"
    write_export(tmp_path / "data", tmp_path / "files", PROJECT, "r", [parameter_rows(PROJECT, "r", [("q", "int", 2)])])
    assert run_load(options(tmp_path), SETTINGS)[0].status == "loaded"
    configs = read_configs(db(tmp_path, "r"))
    assert configs["q"] == 2 and "p" not in configs
    assert [
        p.name for p in db(tmp_path, "r").parent.glob("*.sqlite*") if "-shm" not in p.name and "-wal" not in p.name
    ] == ["r.sqlite"]
    assert run_validate(options(tmp_path), SETTINGS).ok


def test_a_goodseed_run_not_loaded_from_this_neptune_run_is_never_replaced(tmp_path):
    write_export(tmp_path / "data", tmp_path / "files", PROJECT, "r", [parameter_rows(PROJECT, "r", [("p", "int", 1)])])
    (nothing,) = run_validate(options(tmp_path), SETTINGS).differences  # validated before any load
    assert (nothing.kind, nothing.problem, nothing.expected) == ("run", "missing", "a complete GoodSeed run")
    own = goodseed.Run(
        project=PROJECT, run_id="r", goodseed_home=str(tmp_path / "gs"), storage="local", git_ref=False,
        capture_hardware_metrics=False, capture_stdout=False, capture_stderr=False, capture_traceback=False,
    )  # fmt: skip
    own["mine"] = 1
    own.close()
    result = run_load(options(tmp_path), SETTINGS)[0]
    assert result.status == "failed" and "a run not loaded from Neptune" in result.error["message"]
    assert read_configs(db(tmp_path, "r"))["mine"] == 1
    assert [d.problem for d in run_validate(options(tmp_path), SETTINGS).differences] == ["missing"]


def test_two_neptune_runs_a_template_sends_to_one_goodseed_run_load_once_and_fail_once(tmp_path):
    for project in ("ws1/p", "ws2/p"):
        rows = [parameter_rows(project, "r", [("from", "string", project)])]
        write_export(tmp_path / "data", tmp_path / "files", project, "r", rows)
    results = run_load(options(tmp_path, goodseed_project_template="{name}"), SETTINGS)
    assert sorted(r.status for r in results) == ["failed", "loaded"]
    (failed,) = [r for r in results if r.status == "failed"]
    (loaded,) = [r for r in results if r.status == "loaded"]
    assert f"already holds Neptune run r of {loaded.project_id}" in failed.error["message"]
    assert "{project}" in failed.error["remedy"]
    assert read_configs(db(tmp_path, "r", "p"))["from"] == loaded.project_id


# ----------------------------------------------------------------------------- bugs injected into the loader


def load_with_bug(root: Path):
    for run in ("a", "b"):
        write_rich_export(root / "data", root / "files", PROJECT, run, points=20)
    write_export(
        root / "data", root / "files", PROJECT, "c", [parameter_rows(PROJECT, "c", [("params/epochs", "int", 3)])]
    )
    assert {r.status for r in run_load(options(root), SETTINGS)} == {"loaded"}
    return {(d.run_id, d.kind, d.key, d.problem) for d in run_validate(options(root), SETTINGS).differences}


def test_steps_scaled_ten_times_too_much_are_reported(tmp_path, monkeypatch):
    correct = goodseed_writer.real_steps
    monkeypatch.setattr(
        goodseed_writer, "real_steps", lambda steps, m: (correct(steps, m)[0] * 10, correct(steps, m)[1])
    )
    found = load_with_bug(tmp_path)
    for run in ("a", "b"):
        assert {(run, "metric", "metrics/loss", "points"), (run, "metric", "metrics/frac", "points")} <= found
        assert (run, "text-series", "logs/stdout", "value") in found and (
            run,
            "text-series",
            "hist/w",
            "value",
        ) in found
    assert not any(run == "c" for run, *_ in found)


def test_one_key_renamed_and_a_string_cut_are_reported(tmp_path, monkeypatch):
    correct = goodseed_writer.goodseed_key
    monkeypatch.setattr(goodseed_writer, "goodseed_key", lambda path: "moved" if path == "params/lr" else correct(path))
    serialize = goodseed.utils.serialize_value
    monkeypatch.setattr(
        goodseed.utils, "serialize_value", lambda v: serialize(v[:100] if isinstance(v, str) and len(v) > 6000 else v)
    )
    found = load_with_bug(tmp_path)
    for run in ("a", "b"):
        assert {(run, "param", "params/lr", "missing"), (run, "param", "moved", "unexpected")} <= found
        assert (run, "key", "params/lr", "unexpected") in found and (run, "param", "params/long", "value") in found
    assert not any(run == "c" for run, *_ in found)


# ----------------------------------------------------------------------------- killed load, peer export, fakes

LOADER_SCRIPT = """
import sys
from neptune_exporter.load import LoadOptions, run_load
from neptune_exporter.settings import Settings
options = LoadOptions(target="goodseed", data_path=sys.argv[1], files_path=sys.argv[2], goodseed_home=sys.argv[3])
run_load(options, Settings())
"""


def test_sigkill_mid_load_then_rerun_gives_the_run_once_with_every_point(tmp_path):
    project, points = "ws/killed", 100_000
    steps = np.arange(points, dtype=np.float64)
    batches = [series_rows(project, "big", f"m/{i}", "float_series", steps, steps * i, T0_MS + steps) for i in range(2)]
    write_export(tmp_path / "data", tmp_path / "files", project, "big", batches)
    home, final = tmp_path / "gs", get_run_db_path(project, "big", tmp_path / "gs")
    loading = final.with_name(final.name + "-loading")
    args = [sys.executable, "-c", LOADER_SCRIPT, str(tmp_path / "data"), str(tmp_path / "files"), str(home)]
    process = subprocess.Popen(args, cwd=Path(__file__).resolve().parents[2], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (loading.exists() and read_metrics_count(loading) > 0):
            time.sleep(0.05)
        assert process.poll() is None, "the loader finished before it could be killed; make the run bigger"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert loading.exists() and not final.exists()  # GoodSeed lists no half-loaded run
    result = run_load(options(tmp_path, goodseed_home=str(home)), SETTINGS)[0]
    assert (result.status, result.points) == ("loaded", 2 * points)
    assert sorted(p.name for p in final.parent.iterdir()) == ["big.sqlite"]  # the partial one discarded
    assert len(read_metrics(final, "m/1")) == points and read_metrics(final, "m/1")[-1]["value"] == points - 1
    assert run_validate(options(tmp_path, goodseed_home=str(home)), SETTINGS).ok


def read_metrics_count(path: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT COUNT(*) FROM metric_points").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_peer_format_export_without_manifest_loads(tmp_path):
    from tests.unit.fixtures.peer_export import PROJECT as PEER_PROJECT
    from tests.unit.fixtures.peer_export import RUN, write_peer_files, write_peer_run

    write_peer_run(tmp_path / "data")  # the peer tool's layout: parts only, no manifest
    write_peer_files(tmp_path / "files")
    result = run_load(options(tmp_path), SETTINGS)[0]
    assert result.status == "loaded", result.error
    path = db(tmp_path, result.target_run_id, PEER_PROJECT)
    configs = read_configs(path)
    assert (
        configs["params/lr"] == 0.01 and configs["neptune.run_id"] == RUN and configs["neptune.fork_parent"] == "exp-6"
    )
    assert [(p["step"], p["value"]) for p in read_metrics(path, "metrics/acc")] == [
        (0.5, 0.0), (1.5, 0.1), (2.5, 0.2), (3.5, 0.3), (4.5, 0.4)
    ]  # fmt: skip
    assert set(json.loads(configs["neptune.not_loaded"])) == {"model/ckpt", "images/pred"}
    assert run_validate(options(tmp_path), SETTINGS).ok
    assert run_load(options(tmp_path), SETTINGS)[0].status == "skipped"


def test_fake_neptune_awkward_workspace_exports_then_loads_exactly(awkward_fake, tmp_path):
    project = "workspace/awkward"
    exported = export_awkward(awkward_fake, tmp_path, project)
    assert {r.status for r in exported} == {"complete"} and len(exported) == 8
    results = {r.run_id: r for r in run_load(options(tmp_path, projects=(project,)), SETTINGS)}
    assert {k: r.status for k, r in results.items()} == {r.run_id: "loaded" for r in exported}
    basic = db(tmp_path, results["run-basic"].target_run_id, project)
    configs = read_configs(basic)
    assert configs["params/string_set"] == {"a", "b/c", "ü"} and configs["params/empty_string"] == ""
    assert configs["unicode/ścieżka/λ"] == 1.5 and configs["params/big_int"] == 2**31 - 1
    assert configs["params/string"] == 'héllo wörld ✓ "quoted" \\ back' and math.isnan(configs["params/nan"])
    assert [(p[0], p[1]) for p in points_of(basic, "metrics/float_steps")] == [
        (0.1, 1.0),
        (0.29, 2.0),
        (1.0, 3.0),
        (1.5, 4.0),
    ]
    nonfinite = [p[1] for p in points_of(basic, "metrics/nonfinite")]
    assert nonfinite == [1.0, math.inf, -math.inf, 0.0, 2.5]  # -0.0: SQLite's REAL keeps no sign of zero
    assert [p[1] for p in texts_of(basic, "neptune.nan/metrics/nonfinite")] == ["NaN"]
    assert [p[1] for p in texts_of(basic, "logs/stdout")] == ["start", "ünïcödé line", "", "tab\there", "end"]
    assert [json.loads(p[1])["values"] for p in texts_of(basic, "hist/weights")] == [
        [3.0, 4.0],
        [0.0, 10.0, 2.0],
        [7.0],
    ]
    not_loaded = json.loads(configs["neptune.not_loaded"])  # 3.x has no file sets: those come from 2.x exports
    assert sorted(not_loaded) == ["files/big", "files/empty", "files/model", "images/samples"]
    wide = read_configs(db(tmp_path, results["run-wide"].target_run_id, project))
    assert len([k for k in wide if k.startswith("wide/")]) == 10_000 and wide["wide/p09999"] == 4999.5
    child = read_configs(db(tmp_path, results["run-child"].target_run_id, project))
    assert child["neptune.fork_parent"] == "run-parent"
    report = run_validate(options(tmp_path, projects=(project,)), SETTINGS)
    assert report.ok, report.to_markdown()
    assert sum(run.checked["points"] for run in report.runs) > 100


def test_fake_neptune_generated_workspace_exports_then_loads_exactly(fake_factory, tmp_path):
    from neptune_exporter.fake_neptune.datasets import generate_workspace

    fake = fake_factory(
        generate_workspace(runs=3, params=8, metrics=3, points=500, string_points=20, histogram_points=5)
    )
    exported = export_awkward(fake, tmp_path, "workspace/sandbox")
    assert [r.status for r in exported] == ["complete"] * 3
    results = run_load(options(tmp_path), SETTINGS)
    assert [r.status for r in results] == ["loaded"] * 3 and {r.points for r in results} == {3 * 500 + 20 + 5}
    report = run_validate(options(tmp_path), SETTINGS)
    assert report.ok, report.to_markdown()
    assert [run.checked["points"] for run in report.runs] == [3 * 500 + 20 + 5] * 3


def test_fake_neptune_limits_project_loads_exactly(awkward_fake, tmp_path):
    """Steps at the column's edges, 2.x-rewritten paths, points before 1970, ±inf and -0.0 (issue 14's limits)."""
    project = "workspace/limits"
    exported = export_awkward(awkward_fake, tmp_path, project)
    failing = {"run-step-over", "run-step-1e15"}  # their steps are beyond the export's step column: never loaded
    assert {r.run_id for r in exported if r.status != "complete"} == failing
    limits = options(tmp_path, projects=(project,), runs_regex="^run-(?!step-over$|step-1e15$)")
    results = {r.run_id: r for r in run_load(limits, SETTINGS)}
    assert {r.status for r in results.values()} == {"loaded"} and len(results) == len(exported) - 2

    def metric(run: str, key: str) -> list[tuple[float, float, int]]:
        return points_of(db(tmp_path, run, project), key)

    assert [p[0] for p in metric("run-large-step", "metrics/large")] == [0.0, 999_999_999_999.0]
    assert [p[0] for p in metric("run-micro-steps", "metrics/micro")] == [0.000001, 1e7]
    assert [p[0] for p in metric("run-milli-steps", "metrics/milli")] == [0.001, 1e10]
    assert [p[0] for p in metric("run-fine-step", "metrics/fine")] == [123456789.123456]
    assert [p[2] for p in metric("run-target-limits", "metrics/pre1970")] == [-86_400_000, -1, 0, 1_000]
    odd = read_configs(db(tmp_path, "run-odd-paths", project))
    assert (odd["a//b"], odd["a/b"], odd["trailing/"], odd["/leading"]) == (1.5, 9.0, "t", 3)  # kept as they are
    assert [p[1] for p in metric("run-odd-paths", "/slead")] == [-1.0, -2.0]
    assert [p[1] for p in texts_of(db(tmp_path, "run-odd-paths", project), "strail/")] == ["first", "second"]
    report = run_validate(limits, SETTINGS)
    assert report.ok, report.to_markdown()

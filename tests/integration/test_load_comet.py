"""Comet loads into real offline archives (comet_ml's OfflineExperiment), read back value by value from the zip."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from neptune_exporter.errors import InvalidOptionError, OutputPathError, UnsupportedError
from neptune_exporter.load import LoadOptions, run_load, run_validate
from neptune_exporter.loaders.comet import CometLoader, experiment_key
from neptune_exporter.loaders.comet import writer as comet_writer
from neptune_exporter.rows import series_rows
from neptune_exporter.settings import Settings
from neptune_exporter.validation.comet import CometValidator
from tests.load_exports import AWKWARD_PROJECT, LONG_TEXT, T0_MS, export_awkward, rich_batches, write_export, write_file

pytestmark = pytest.mark.integration

PROJECT, RUN = "team/vision", "RUN-1"
BIG = os.urandom(3 * 1024 * 1024)


@pytest.fixture(autouse=True)
def offline_comet(monkeypatch):
    """Comet never goes online in these tests."""
    for name in ("COMET_API_KEY", "COMET_WORKSPACE", "COMET_URL_OVERRIDE", "COMET_PROJECT_NAME"):
        monkeypatch.delenv(name, raising=False)


def export_run(root: Path, run_id: str = RUN, points: int = 300, late: bool = False) -> tuple[Path, Path]:
    """Every type (tests/load_exports.py) plus a 0-byte and a 3 MB file (and a `metrics/late` point when `late`)."""
    data, files = root / "data", root / "files"
    empty = write_file(files, PROJECT, run_id, "empty.bin", b"")
    big = write_file(files, PROJECT, run_id, "big.bin", BIG)
    extra = (("files/empty", "file", empty), ("files/big", "file", big))
    batches, records = rich_batches(PROJECT, run_id, files, points, extra_params=extra)
    if late:
        batches.append(series_rows(PROJECT, run_id, "metrics/late", "float_series", [7], [0.5], [T0_MS + 70]))
    write_export(data, files, PROJECT, run_id, batches, records)
    return data, files


def options(root: Path, data: Path, files: Path, **kwargs) -> LoadOptions:
    return LoadOptions(
        target="comet", data_path=str(data), files_path=str(files), comet_dir=str(root / "comet"), **kwargs
    )


def loader_for(opts: LoadOptions) -> CometLoader:
    loader = CometLoader.from_options(opts)
    loader.check_target()
    return loader


def read_archive(path: Path) -> dict:
    """The archive as plain JSON and bytes: experiment.json, messages by type, files by message."""
    with zipfile.ZipFile(path) as archive:
        messages = [json.loads(line) for line in archive.read("messages.json").splitlines()]
        uploads = [
            (m["payload"], archive.read(m["payload"]["file_path"])) for m in messages if m["type"] == "file_upload"
        ]
        return {
            "meta": json.loads(archive.read("experiment.json")),
            "params": {
                m["payload"]["param"]["paramName"]: m["payload"]["param"]["paramValue"]
                for m in messages
                if m["type"] == "parameter_msg" and m["payload"]["param"]["source"] == "manual"
            },
            "others": {m["payload"]["key"]: m["payload"]["value"] for m in messages if m["type"] == "log_other"},
            "metrics": [m["payload"] for m in messages if m["type"] == "metric_msg"],
            "uploads": uploads,
        }


def test_every_type_is_read_back_value_by_value(tmp_path):
    data, files = export_run(tmp_path)
    opts = options(tmp_path, data, files)
    result = loader_for(opts).load_run(data, files, PROJECT, RUN)
    assert (result.status, result.error, result.points, result.files) == ("loaded", None, 307, 7)
    key = experiment_key(PROJECT, RUN)
    archive = tmp_path / "comet" / f"{key}.zip"
    assert sorted(p.name for p in (tmp_path / "comet").iterdir()) == [".staging", f"{key}.zip"]
    assert not list((tmp_path / "comet" / ".staging").iterdir())  # the run's staging folder is gone
    got = read_archive(archive)

    assert got["meta"]["offline_id"] == key and got["meta"]["project_name"] == "vision"
    assert sorted(got["meta"]["tags"]) == ["baseline", "mlflow.note", "with space"]
    params, others = got["params"], got["others"]
    assert params["params/lr"] == 0.001 and params["params/nan"] == "NaN" and params["params/inf"] == "Infinity"
    assert params["params/epochs"] == 12 and params["params/flag"] is True and params["params/name"] == "résumé ✓"
    assert params["params/when"] == "2024-02-03T04:05:06.789+00:00" and params["params/set"] == '["a", "b", "c"]'
    assert params["params/long"].startswith(LONG_TEXT[:500])
    assert len(params["params/long"]) <= 1000 and "neptune/long_values/params/long.txt" in params["params/long"]
    assert others["sys/tags"] == '["baseline", "mlflow.note", "with space"]' and others["Name"] == RUN
    assert others["neptune.project"] == PROJECT and others["neptune.run_id"] == RUN
    assert others["neptune.step_multiplier"] == 100 and others["neptune.load_state"] == "complete"
    assert others["neptune.export_checksum"] and others["neptune.experiment"] == "exp-a"

    loss = {
        (m["metric"]["step"], m["local_timestamp"]): m["metric"]["metricValue"]
        for m in got["metrics"]
        if m["metric"]["metricName"] == "metrics/loss"
    }
    assert len(loss) == 300 and loss[(0, T0_MS)] == 1.0 and loss[(300, T0_MS + 30)] == "NaN"
    assert loss[(400, T0_MS + 40)] == "Infinity" and loss[(500, T0_MS + 50)] == "-Infinity"
    frac = sorted(
        (m["metric"]["step"], m["metric"]["metricValue"])
        for m in got["metrics"]
        if m["metric"]["metricName"] == "metrics/frac"
    )
    assert frac == [(50, 1.0), (125, 2.0), (200, 3.0)]  # steps 0.5, 1.25, 2 × 100, exactly

    by_kind: dict[str, list] = {}
    for payload, content in got["uploads"]:
        by_kind.setdefault(payload["upload_type"], []).append((payload, content))
    texts = sorted(
        (p["additional_params"]["step"], p["metadata"]["step"], c.decode()) for p, c in by_kind["text-sample"]
    )
    assert texts == [(100, "1", "hello"), (200, "2", "wörld\nnext")]
    assert {p["metadata"]["timestamp"] for p, _ in by_kind["text-sample"]} == {T0_MS, T0_MS + 5}
    histograms = {p["additional_params"]["step"]: json.loads(c) for p, c in by_kind["histogram3d"]}
    assert {step: sum(n for _, n in h["index_values"]) for step, h in histograms.items()} == {0: 7, 100: 5}
    assets = {p["additional_params"]["fileName"]: (p["additional_params"]["step"], c) for p, c in by_kind["asset"]}
    assert assets["files/empty/empty.bin"] == (None, b"") and assets["files/big/big.bin"] == (None, BIG)
    assert assets["files/model/model.bin"] == (None, b"\x00weights" * 100)
    assert (
        assets["files/source/source/a.py"][1] == b"print('a')\n"
        and assets["files/source/source/sub/b.txt"][1] == b"bee"
    )
    assert assets["images/pred/step_1/pred_1.png"] == (100, b"png-one")
    assert assets["images/pred/step_2/pred_2.png"] == (200, b"png-two-bytes")
    assert assets["neptune/long_values/params/long.txt"] == (None, LONG_TEXT.encode())
    exact = [json.loads(line) for line in assets["neptune/histograms/hist/w.jsonl"][1].splitlines()]
    assert [(h["step"], h["edges"], h["values"], h["timestamp"]) for h in exact] == [
        ("0", [0.0, 1.0, 2.0], [3.0, 4.0], T0_MS),
        ("1", [0.0, 1.0], [5.0], T0_MS + 7),
    ]
    key_map = json.loads(assets["neptune/key_map.json"][1])["attributes"]
    assert set(key_map) == {"params/" + "k" * 300, "weird//key..x:y"} and all(len(v) <= 100 for v in key_map.values())
    assert params[key_map["weird//key..x:y"]] == "w" and params[key_map["params/" + "k" * 300]] == 7
    assert params["cfg/a#b"] == 1 and params["cfg/a%b"] == 2  # Comet keeps any character: no collision

    report = CometValidator.from_options(opts).validate(data, files, PROJECT, RUN)
    assert report.ok, report.to_json()
    assert report.checked == {"params": 13, "others": 8, "metrics": 2, "points": 307, "artifacts": 7}


def test_validation_catches_injected_mapping_bugs(tmp_path, monkeypatch):
    data, files = export_run(tmp_path)
    bugs = {
        "datetime text": ("comet_value", lambda t, v: "2024" if str(t) == "datetime" else real_value(t, v)),
        "steps off by one": ("integer_steps", lambda steps, m, *a: real_steps(steps, m, *a) + 1),
        "histogram counts": ("histogram_counts", lambda v: None),
    }
    real_value, real_steps = comet_writer.comet_value, comet_writer.integer_steps
    kinds = {}
    for name, (attribute, broken) in bugs.items():
        opts = options(tmp_path / name.replace(" ", "-"), data, files)
        with monkeypatch.context() as patch:
            patch.setattr(comet_writer, attribute, broken)
            assert loader_for(opts).load_run(data, files, PROJECT, RUN).status == "loaded"
        report = CometValidator.from_options(opts).validate(data, files, PROJECT, RUN)
        kinds[name] = sorted({(d.kind, d.key) for d in report.differences})
    assert kinds["datetime text"] == [("other", "sys/creation_time"), ("param", "params/when")]
    assert ("metric", "metrics/loss") in kinds["steps off by one"] and ("text", "logs/stdout") in kinds[
        "steps off by one"
    ]
    assert ("artifact", "images/pred/step_1/pred_1.png") in kinds["steps off by one"]
    assert kinds["histogram counts"] == [("histogram-3d", "hist/w")]


def test_loading_twice_adds_nothing_a_changed_export_is_reloaded_and_the_old_archive_kept(tmp_path):
    data, files = export_run(tmp_path, points=50)
    opts = options(tmp_path, data, files)
    loader = loader_for(opts)
    assert loader.load_run(data, files, PROJECT, RUN).status == "loaded"
    archive = tmp_path / "comet" / f"{experiment_key(PROJECT, RUN)}.zip"
    before = (archive.stat().st_mtime_ns, archive.read_bytes())
    again = loader.load_run(data, files, PROJECT, RUN)
    assert (again.status, again.points, again.files) == ("skipped", 0, 0)
    assert (archive.stat().st_mtime_ns, archive.read_bytes()) == before

    data, files = export_run(tmp_path / "v2", points=50, late=True)  # the run exported again, changed
    loader = loader_for(options(tmp_path, data, files))
    assert loader.load_run(data, files, PROJECT, RUN).status == "loaded"
    (kept,) = (tmp_path / "comet" / "superseded").iterdir()
    assert kept.read_bytes() == before[1]  # the older complete archive is kept, never deleted
    late = [m for m in read_archive(archive)["metrics"] if m["metric"]["metricName"] == "metrics/late"]
    assert [(m["metric"]["step"], m["metric"]["metricValue"]) for m in late] == [(700, 0.5)]
    assert CometValidator.from_options(options(tmp_path, data, files)).validate(data, files, PROJECT, RUN).ok


def test_an_incomplete_archive_is_redone_and_reported_missing_until_then(tmp_path):
    data, files = export_run(tmp_path, points=20)
    opts = options(tmp_path, data, files)
    key = experiment_key(PROJECT, RUN)
    (tmp_path / "comet").mkdir()
    archive = tmp_path / "comet" / f"{key}.zip"
    with zipfile.ZipFile(archive, "w") as torn:  # what comet_ml leaves when killed before end(): no experiment.json
        torn.writestr(
            "messages.json", '{"type":"log_other","payload":{"key":"neptune.load_state","value":"loading"}}\n'
        )
    report = CometValidator.from_options(opts).validate(data, files, PROJECT, RUN)
    assert [(d.kind, d.problem) for d in report.differences] == [("run", "missing")]
    assert loader_for(opts).load_run(data, files, PROJECT, RUN).status == "loaded"
    assert read_archive(archive)["others"]["neptune.load_state"] == "complete"
    assert CometValidator.from_options(opts).validate(data, files, PROJECT, RUN).ok


def test_sigkill_mid_load_then_rerun_gives_each_run_once(tmp_path):
    runs = ["RUN-A", "RUN-B", "RUN-C"]
    for run in runs:
        data, files = export_run(tmp_path, run, points=40_000 if run == "RUN-B" else 30)
    opts = options(tmp_path, data, files, workers=1)
    script = (
        "from neptune_exporter.load import LoadOptions, run_load; from neptune_exporter.settings import Settings\n"
        f"run_load(LoadOptions(**{opts.to_json()!r}), Settings())\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    staging = tmp_path / "comet" / ".staging" / experiment_key(PROJECT, "RUN-B")
    deadline = time.monotonic() + 120
    while not staging.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    archives = {run: (tmp_path / "comet" / f"{experiment_key(PROJECT, run)}.zip").exists() for run in runs}
    assert not archives["RUN-B"] and staging.exists() and child.returncode == -signal.SIGKILL  # killed mid RUN-B

    results = {r.run_id: r.status for r in run_load(opts, Settings())}
    assert results == {run: "skipped" if archives[run] else "loaded" for run in runs}
    assert sorted(p.name for p in (tmp_path / "comet").iterdir() if p.name != ".staging") == sorted(
        f"{experiment_key(PROJECT, run)}.zip" for run in runs
    )
    assert not list((tmp_path / "comet" / ".staging").iterdir())
    steps = [
        m["metric"]["step"]
        for m in read_archive(tmp_path / "comet" / f"{experiment_key(PROJECT, 'RUN-B')}.zip")["metrics"]
        if m["metric"]["metricName"] == "metrics/loss"
    ]
    assert len(steps) == len(set(steps)) == 40_000
    report = run_validate(opts, Settings())
    assert report.ok and len(report.runs) == 3, report.to_markdown()


def test_registry_loads_runs_concurrently_and_peer_exports_load(tmp_path):
    from tests.unit.fixtures import peer_export as peer

    for i in range(3):
        data, files = export_run(tmp_path, f"RUN-{i}", points=100)
    opts = options(tmp_path, data, files, workers=3)
    assert sorted(r.status for r in run_load(opts, Settings())) == ["loaded"] * 3
    report = run_validate(opts, Settings())
    assert report.ok and all(r.checked["points"] == 107 for r in report.runs), report.to_markdown()

    peer.write_peer_run(tmp_path / "peer" / "data")
    peer.write_peer_files(tmp_path / "peer" / "files")
    peer_opts = options(tmp_path / "peer", tmp_path / "peer" / "data", tmp_path / "peer" / "files")
    (result,) = run_load(peer_opts, Settings())
    assert (result.status, result.files) == ("loaded", 3)
    assets = {
        p["additional_params"]["fileName"]: content
        for p, content in read_archive(tmp_path / "peer" / "comet" / f"{experiment_key(peer.PROJECT, peer.RUN)}.zip")[
            "uploads"
        ]
        if p["upload_type"] == "asset"
    }
    assert assets["model/ckpt/ckpt.bin"] == peer.CHECKPOINT[1]
    for step, path, content in peer.PREDICTIONS:
        assert assets[f"images/pred/step_{step}/{Path(path).name}"] == content
    assert run_validate(peer_opts, Settings()).ok


def test_bad_template_unwritable_folder_and_missing_extra_are_refused_before_any_work(tmp_path, monkeypatch):
    data, files = tmp_path / "data", tmp_path / "files"
    with pytest.raises(InvalidOptionError, match="--comet-project-template"):
        CometLoader.from_options(options(tmp_path, data, files, comet_project_template="{nope}"))
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(OutputPathError, match="--comet-dir"):
        loader_for(LoadOptions(target="comet", comet_dir=str(blocked / "comet")))
    monkeypatch.setitem(sys.modules, "comet_ml", None)  # `import comet_ml` now fails, as without the extra
    with pytest.raises(UnsupportedError, match=r"neptune-exporter\[comet\]"):
        loader_for(options(tmp_path, data, files))


def test_fake_neptune_awkward_workspace_exports_then_loads_exactly(awkward_fake, tmp_path):
    project = AWKWARD_PROJECT
    exported = export_awkward(awkward_fake, tmp_path)
    assert {r.status for r in exported} == {"complete"}
    opts = options(tmp_path, tmp_path / "data", tmp_path / "files", projects=(project,), workers=2)
    results = {r.run_id: r for r in run_load(opts, Settings())}
    assert {k: r.status for k, r in results.items()} == {r.run_id: "loaded" for r in exported}
    basic = read_archive(tmp_path / "comet" / f"{results['run-basic'].target_run_id}.zip")
    assert basic["meta"]["project_name"] == "awkward" and basic["others"]["Name"] == "run-basic"
    assert basic["params"]["params/string_set"] == '["a", "b/c", "ü"]' and basic["params"]["unicode/ścieżka/λ"] == 1.5
    assert basic["others"]["neptune.step_multiplier"] == 100
    floats = sorted(
        (m["metric"]["step"], m["metric"]["metricValue"])
        for m in basic["metrics"]
        if m["metric"]["metricName"] == "metrics/float_steps"
    )
    assert floats == [(10, 1.0), (29, 2.0), (100, 3.0), (150, 4.0)]
    report = run_validate(opts, Settings())
    assert report.ok, report.to_markdown()
    assert sum(run.checked["points"] for run in report.runs) > 100


def test_comet_upload_of_an_archive_delivers_metrics_params_and_assets(tmp_path):
    """`comet upload` (comet_ml's own command) sends one of our archives to a local stand-in of Comet's endpoints."""
    from neptune_exporter.fake_comet import FakeComet

    data, files = export_run(tmp_path, points=50)
    opts = options(tmp_path, data, files)
    assert loader_for(opts).load_run(data, files, PROJECT, RUN).status == "loaded"
    key = experiment_key(PROJECT, RUN)
    archive = tmp_path / "comet" / f"{key}.zip"
    with FakeComet() as fake:
        env = {**os.environ, **fake.env(), "COMET_CONFIG": str(tmp_path / "no.comet.config"), "HOME": str(tmp_path)}
        done = subprocess.run(
            [str(Path(sys.executable).parent / "comet"), "upload", str(archive)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert set(fake.experiments) == {key} and fake.state.unknown == [("GET", "/clientlib/isAlive/ver")]
        arrived = fake.experiments[key]
    assert (arrived.project, sorted(arrived.tags)) == ("vision", ["baseline", "mlflow.note", "with space"])
    local = read_archive(archive)
    assert arrived.params == local["params"] and arrived.params["params/when"] == "2024-02-03T04:05:06.789+00:00"
    assert {k: v for k, v in arrived.others.items() if k.startswith("neptune.")} == {
        k: v for k, v in local["others"].items() if k.startswith("neptune.")
    }
    assert arrived.others["neptune.load_state"] == "complete"
    sent = sorted(
        (m["metric"]["metricName"], m["metric"]["step"], m["local_timestamp"], str(m["metric"]["metricValue"]))
        for m in local["metrics"]
    )
    assert sorted((m["name"], m["step"], m["timestamp"], str(m["value"])) for m in arrived.metrics) == sent
    loss = sorted((m["step"], m["timestamp"], m["value"]) for m in arrived.metrics if m["name"] == "metrics/loss")
    assert len(loss) == 50 and loss[0] == (0, T0_MS, 1.0) and loss[3][2] == "NaN"
    assets = {a["file_name"]: a for a in arrived.assets}
    assert assets["files/big/big.bin"]["data"] == BIG and assets["files/empty/empty.bin"]["data"] == b""
    assert (assets["images/pred/step_2/pred_2.png"]["step"], assets["images/pred/step_2/pred_2.png"]["data"]) == (
        200,
        b"png-two-bytes",
    )
    texts = sorted((a["step"], a["metadata"]["step"], a["data"]) for a in arrived.assets if a["type"] == "text-sample")
    assert texts == [(100, "1", b"hello"), (200, "2", "wörld\nnext".encode())]
    assert sorted(a["step"] for a in arrived.assets if a["type"] == "histogram3d") == [0, 100]
    assert arrived.times["startTimestamp"] and arrived.times["endTimestamp"]


def test_online_load_writes_every_point_skips_when_complete_and_redoes_a_partial_experiment(tmp_path, monkeypatch):
    """COMET_API_KEY set: comet_ml.Experiment writes straight to (a stand-in of) Comet; `comet_ml.API` finds it."""
    from neptune_exporter.fake_comet import FakeComet

    data, files = export_run(tmp_path, points=50)
    offline = options(tmp_path / "offline", data, files)
    assert loader_for(offline).load_run(data, files, PROJECT, RUN).status == "loaded"
    local = read_archive(tmp_path / "offline" / "comet" / f"{experiment_key(PROJECT, RUN)}.zip")
    key = experiment_key(PROJECT, RUN)
    with FakeComet() as fake:
        for name, value in {**fake.env(), "HOME": str(tmp_path)}.items():
            monkeypatch.setenv(name, value)
        loader = loader_for(options(tmp_path, data, files))
        assert loader.target.online
        first = loader.load_run(data, files, PROJECT, RUN)
        assert (first.status, first.points, first.files) == ("loaded", 57, 7)
        arrived = fake.experiments[key]
        assert (arrived.project, sorted(arrived.tags)) == ("vision", ["baseline", "mlflow.note", "with space"])
        assert arrived.params == local["params"]
        provenance = {k: v for k, v in local["others"].items() if k.startswith(("neptune.", "sys/"))}
        assert {k: v for k, v in arrived.others.items() if k.startswith(("neptune.", "sys/"))} == provenance
        sent = sorted((m["metric"]["metricName"], m["metric"]["step"], m["local_timestamp"]) for m in local["metrics"])
        assert sorted((m["name"], m["step"], m["timestamp"]) for m in arrived.metrics) == sent
        assets = {a["file_name"]: a["data"] for a in arrived.assets if a["type"] == "asset"}
        assert assets["files/big/big.bin"] == BIG and assets["files/empty/empty.bin"] == b""

        assert loader.load_run(data, files, PROJECT, RUN).status == "skipped"  # complete for this export
        arrived.others["neptune.load_state"] = "loading"  # as a load killed half-way leaves it
        assert loader.load_run(data, files, PROJECT, RUN).status == "loaded"
        assert fake.state.deleted == [key] and fake.experiments[key].others["neptune.load_state"] == "complete"
        assert len(fake.experiments[key].metrics) == len(arrived.metrics)  # redone once, nothing twice
        fake.experiments[key].others["neptune.export_checksum"] = "an-older-export"
        refused = loader.load_run(data, files, PROJECT, RUN)  # a complete experiment is never deleted
        assert refused.status == "failed" and refused.error["error_type"] == "TargetError"
        assert f"archive or delete experiment {key} in Comet" in refused.error["remedy"] and key in fake.experiments

"""Offline W&B loads of exports with every type, read back value by value from the `.wandb` log."""

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

import numpy as np
import pytest

from neptune_exporter.errors import InvalidOptionError, OutputPathError, TargetError
from neptune_exporter.fake_wandb import FakeWandb
from neptune_exporter.loaders.wandb import WandbLoader, WandbTarget, artifact_name, wandb_run_id
from neptune_exporter.model import project_files_dir
from neptune_exporter.rows import parameter_rows, series_rows
from neptune_exporter.storage.parquet import RunWriter, run_part_paths
from neptune_exporter.storage.wandb_log import find_offline_runs, iter_history, read_run_log, run_log_path
from neptune_exporter.validation.wandb import WandbValidator
from neptune_exporter.validation.wandb_compare import md5_base64
from tests.load_exports import AWKWARD_PROJECT, export_awkward

pytestmark = pytest.mark.integration

PROJECT, RUN = "team/vision", "RUN-7"
T0 = 1_700_000_000_000


@pytest.fixture(autouse=True)
def offline_wandb(monkeypatch):
    """W&B never goes online in these tests."""
    for name in ("WANDB_API_KEY", "WANDB_ENTITY", "WANDB_BASE_URL", "WANDB_DIR", "WANDB_DATA_DIR", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # unreachable on purpose


def local_files(files: Path) -> Path:
    """Where the export's "f/..." file paths live: `<files>/<project-dir>/f`."""
    return project_files_dir(files, PROJECT) / "f"


def write_export(
    root: Path, run_id: str = RUN, steps: int = 0, fork: tuple[str, float] | None = None
) -> tuple[Path, Path]:
    """An export with every attribute type, awkward keys, fractional/out-of-order steps, NaN/inf and files."""
    data, files = root / "data", root / "files"
    stored = local_files(files)  # file_value.path "f/..." is relative to <files>/<project-dir>/
    stored.mkdir(parents=True, exist_ok=True)
    (stored / "model.bin").write_bytes(bytes(range(256)) * 4)
    (stored / "frame.png").write_bytes(b"\x89PNG" + b"1" * 50)
    (stored / "set").mkdir(exist_ok=True)
    (stored / "set" / "a.txt").write_text("inside a set")
    with RunWriter(data, PROJECT, run_id, 10**9) as writer:
        writer.write(
            parameter_rows(
                PROJECT,
                run_id,
                [
                    ("sys/name", "string", "baseline"),
                    ("sys/tags", "string_set", {"gpu", "x" * 80}),
                    ("params/lr", "float", 0.001),
                    ("params/nan", "float", float("nan")),
                    ("params/epochs", "int", 12),
                    ("params/ok", "bool", False),
                    ("params/started", "datetime", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
                    ("params/what is #1?", "string", "awkward"),
                    ("_step", "int", 99),
                    ("model", "file", "f/model.bin"),
                    ("dataset", "file_set", "f/set"),
                ],
            )
        )
        # attributes one after another in the part; steps interleave across attributes
        writer.write(
            series_rows(
                PROJECT,
                run_id,
                "train/loss",
                "float_series",
                [0, 1, 2, 3],
                [1.0, float("nan"), float("inf"), -float("inf")],
                [T0, T0 + 10, T0 + 20, T0 + 30],
            )
        )
        writer.write(
            series_rows(
                PROJECT,
                run_id,
                "train/acc",
                "float_series",
                [2.5, 0.5, 1],
                [0.25, 0.05, 0.1],
                [T0 + 25, T0 + 5, T0 + 9],
            )
        )
        writer.write(
            series_rows(
                PROJECT,
                run_id,
                "eval/hist",
                "histogram_series",
                [1, 3],
                [
                    {"type": "linear", "edges": [0.0, 0.5, 1.0], "values": [2.0, 5.0]},
                    {"type": "linear", "edges": [-1.0, 0.0, 1.0, 2.0], "values": [1.0, 0.0, 7.0]},
                ],
                [T0 + 11, T0 + 31],
            )
        )
        writer.write(
            series_rows(
                PROJECT,
                run_id,
                "logs/stdout",
                "string_series",
                [0, 2.5, 1],
                ["start", "tab\there", "middle"],
                [T0, T0 + 26, T0 + 12],
            )
        )
        writer.write(
            series_rows(
                PROJECT, run_id, "frames", "file_series", [1, 2.5], ["f/frame.png", "f/frame.png"], [T0 + 12, T0 + 27]
            )
        )
        if fork:
            writer.write(
                parameter_rows(
                    PROJECT, run_id, [("sys/forking/parent", "string", fork[0]), ("sys/forking/step", "float", fork[1])]
                )
            )
        if steps:
            values = np.arange(steps, dtype=np.float64)
            writer.write(
                series_rows(
                    PROJECT, run_id, "big/a", "float_series", np.arange(steps) + 10, values, T0 + np.arange(steps)
                )
            )
            writer.write(
                series_rows(
                    PROJECT, run_id, "big/b", "float_series", np.arange(steps) + 10, -values, T0 + np.arange(steps)
                )
            )
    return data, files


def make_loader(wandb_dir: Path, **kwargs) -> WandbLoader:
    loader = WandbLoader(WandbTarget.from_env(wandb_dir, None, None), **kwargs)
    loader.check_target()
    return loader


def validator(loader: WandbLoader) -> WandbValidator:
    """The independent validator of the loader's target (same folder, entity and project template)."""
    target = loader.target
    return WandbValidator(
        target.wandb_dir,
        loader.step_multiplier,
        target.entity,
        target.project_template,
        target.api_key,
        target.base_url,
    )


def the_log(wandb_dir: Path, run_id: str = RUN) -> Path:
    folders = find_offline_runs(wandb_dir, wandb_run_id(PROJECT, run_id))
    assert len(folders) == 1
    return run_log_path(folders[0])


def test_every_type_is_read_back_value_by_value(tmp_path):
    data, files = write_export(tmp_path)
    loader = make_loader(tmp_path / "wb", spill_chunk_rows=3)  # forces several spill files
    result = loader.load_run(data, files, PROJECT, RUN)
    assert (result.status, result.error) == ("loaded", None)
    log_path = the_log(tmp_path / "wb")
    log = read_run_log(log_path)
    assert (log.name, log.group, log.project, log.finished) == (RUN, "baseline", "vision", True)
    assert sorted(log.tags) == ["gpu", "x" * 64]
    config = log.config
    assert config["params/lr"] == 0.001 and config["params/nan"] == "NaN" and config["params/epochs"] == 12
    assert config["params/ok"] is False and config["params/started"] == "2024-05-01T12:30:00+00:00"
    assert config["sys/tags"] == sorted(["gpu", "x" * 80])
    key_map = config["neptune.key_map"]
    assert set(key_map) == {"params/what is #1?", "_step"}
    assert config[key_map["params/what is #1?"]] == "awkward" and config[key_map["_step"]] == 99
    assert config["neptune.step_multiplier"] == 10 and config["neptune.load_state"] == "complete"
    assert log.summary["neptune.load_state"] == "complete"

    rows = list(iter_history(log_path))
    assert [r["_step"] for r in rows] == [0, 5, 10, 20, 25, 30]  # one row per step, increasing, x10
    by_step = {r["_step"]: r for r in rows}
    assert by_step[0]["train/loss"] == 1.0 and by_step[0]["_timestamp"] * 1000 == pytest.approx(T0, abs=0.5)
    assert by_step[5]["train/acc"] == 0.05 and "train/loss" not in by_step[5]
    assert math.isnan(by_step[10]["train/loss"]) and by_step[10]["train/acc"] == 0.1
    assert round(by_step[10]["_timestamp"] * 1000) == T0 + 9  # earliest point of the step
    assert by_step[10]["eval/hist"] == {"_type": "histogram", "values": [2, 5], "bins": [0, 0.5, 1]}
    assert by_step[20]["train/loss"] == math.inf and by_step[25]["train/acc"] == 0.25
    assert by_step[30]["train/loss"] == -math.inf and by_step[30]["eval/hist"]["bins"] == [-1, 0, 1, 2]

    artifacts = {a.metadata["neptune_attribute"]: a for a in log.artifacts}
    target = wandb_run_id(PROJECT, RUN)
    assert {a.name for a in log.artifacts} == {
        artifact_name(target, k) for k in ["model", "dataset", "frames", "logs/stdout"]
    }
    entries = {k: {e.path: e.digest for e in a.entries} for k, a in artifacts.items()}
    assert entries["model"] == {"model.bin": md5_base64(local_files(files) / "model.bin")}
    assert entries["dataset"] == {"set/a.txt": md5_base64(local_files(files) / "set" / "a.txt")}
    assert entries["frames"] == {
        f"step_{s}/frame.png": md5_base64(local_files(files) / "frame.png") for s in ("1", "2.5")
    }
    strings = {e.path: Path(e.local_path) for e in artifacts["logs/stdout"].entries}
    assert strings["values.txt"].read_text() == "start\nmiddle\ntab\there\n"
    table = json.loads(strings["values-0000.table.json"].read_text())
    assert table["columns"] == ["step", "value", "timestamp"]
    assert [row[:2] for row in table["data"]] == [["0", "start"], ["1", "middle"], ["2.5", "tab\there"]]
    assert table["data"][1][2] == datetime.fromtimestamp((T0 + 12) / 1000, UTC).isoformat()

    report = validator(loader).validate(data, files, PROJECT, RUN)
    assert report.ok, report.to_json()
    assert report.checked["points"] == 9 and report.checked["rows"] == 6


def test_loading_twice_changes_nothing_and_a_changed_export_is_reloaded(tmp_path):
    data, files = write_export(tmp_path)
    loader = make_loader(tmp_path / "wb")
    assert loader.load_run(data, files, PROJECT, RUN).status == "loaded"
    first = the_log(tmp_path / "wb")
    stamp = first.stat().st_mtime_ns
    assert loader.load_run(data, files, PROJECT, RUN).status == "skipped"
    assert the_log(tmp_path / "wb") == first and first.stat().st_mtime_ns == stamp
    with RunWriter(data, PROJECT, RUN, 10**9) as writer:  # an incremental export adds a part
        writer.write(series_rows(PROJECT, RUN, "train/loss", "float_series", [4], [0.5], [T0 + 40]))
    assert loader.load_run(data, files, PROJECT, RUN).status == "loaded"
    rows = list(iter_history(the_log(tmp_path / "wb")))
    assert rows[-1]["_step"] == 40 and rows[-1]["train/loss"] == 0.5
    assert validator(loader).validate(data, files, PROJECT, RUN).ok


def test_validation_reports_a_tampered_history(tmp_path):
    data, files = write_export(tmp_path)
    loader = make_loader(tmp_path / "wb")
    loader.load_run(data, files, PROJECT, RUN)
    with RunWriter(data, PROJECT, RUN, 10**9) as writer:
        writer.write(series_rows(PROJECT, RUN, "train/acc", "float_series", [9], [1.0], [T0 + 90]))
    differences = [d.to_json() for d in validator(loader).validate(data, files, PROJECT, RUN).differences]
    assert differences and differences[0]["problem"] == "missing" and differences[0]["kind"] == "run"


def test_sigkill_mid_load_then_rerun_ends_complete_without_duplicates(tmp_path):
    steps = 6_000
    data, files = write_export(tmp_path, steps=steps)
    wandb_dir = tmp_path / "wb"
    script = (
        "import sys; from neptune_exporter.loaders.wandb import WandbLoader, WandbTarget\n"
        f"loader = WandbLoader(WandbTarget.from_env({str(wandb_dir)!r}, None, None)); loader.check_target()\n"
        f"loader.load_run({str(data)!r}, {str(files)!r}, {PROJECT!r}, {RUN!r})\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}  # its own wandb-core, killed with it
    env["PYTHONPATH"] = str(Path.cwd())
    child = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        logs = list(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))
        if logs and logs[0].stat().st_size > 60_000:
            break
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)  # the loader and its wandb-core service
    child.wait()
    partial = read_run_log(the_log(wandb_dir))
    assert not partial.finished and partial.summary.get("neptune.load_state") != "complete"

    loader = make_loader(wandb_dir)
    assert loader.load_run(data, files, PROJECT, RUN).status == "loaded"
    rows = list(iter_history(the_log(wandb_dir)))
    row_steps = [r["_step"] for r in rows]
    assert len(row_steps) == len(set(row_steps)) == 6 + steps
    assert validator(loader).validate(data, files, PROJECT, RUN).ok
    assert loader.load_run(data, files, PROJECT, RUN).status == "skipped"


def test_corrupted_part_fails_the_run_with_one_clear_message(tmp_path):
    data, files = write_export(tmp_path)
    part = run_part_paths(data, PROJECT, RUN)[0]
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    result = make_loader(tmp_path / "wb").load_run(data, files, PROJECT, RUN)
    assert result.status == "failed"
    assert result.error["error_type"] == "CorruptPartError" and "export the run again" in result.error["remedy"]
    assert not find_offline_runs(tmp_path / "wb", wandb_run_id(PROJECT, RUN))


def test_unwritable_wandb_dir_and_missing_entity_are_refused_before_any_work(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(OutputPathError, match="--wandb-dir"):
        make_loader(blocked / "wb")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    with pytest.raises(InvalidOptionError, match="--entity"):
        make_loader(tmp_path / "wb")


def test_wandb_sync_of_the_offline_output_delivers_every_point(tmp_path):
    data, files = write_export(tmp_path, steps=300)
    wandb_dir = tmp_path / "wb"
    loader = WandbLoader(WandbTarget.from_env(wandb_dir, "team", None))
    loader.check_target()
    assert loader.load_run(data, files, PROJECT, RUN).status == "loaded"
    log_path = the_log(wandb_dir)
    local_rows = list(iter_history(log_path))
    local = read_run_log(log_path)
    with FakeWandb() as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
        env.update(
            fake.env(),
            WANDB_SILENT="true",
            WANDB_CONFIG_DIR=str(tmp_path / "cfg"),
            PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        )
        command = loader.target.sync_command()
        done = subprocess.run(command, shell=True, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        run = fake.runs[("team", "vision", wandb_run_id(PROJECT, RUN))]
        arrived = run.rows()
        assert len(arrived) == len(local_rows) == 6 + 300
        for sent, got in zip(local_rows, arrived, strict=True):
            assert json.dumps(_user_keys(sent), sort_keys=True) == json.dumps(_user_keys(got), sort_keys=True)
        assert (run.display_name, run.group, sorted(run.tags), run.exit_code) == (
            RUN,
            "baseline",
            sorted(local.tags),
            0,
        )
        assert {k: v for k, v in run.config.items() if k != "_wandb"} == {
            k: v for k, v in local.config.items() if k != "_wandb"
        }
        assert run.summary["neptune.load_state"] == "complete"
        uploaded = {a.name: a.uploaded for a in fake.artifacts.values() if a.state == "COMMITTED"}
        assert uploaded == {a.name: {e.path: e.digest for e in a.entries} for a in local.artifacts}
        summary = fake.summary()
        assert [(r["path"], r["rows"], r["exit_code"]) for r in summary["runs"]] == [
            (f"team/vision/{wandb_run_id(PROJECT, RUN)}", 306, 0)
        ]


def _user_keys(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "_runtime"}


@pytest.fixture
def online(monkeypatch, tmp_path):
    """W&B online against the local stand-in."""
    with FakeWandb() as fake:
        for name, value in fake.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "cfg"))
        yield fake


def test_online_load_delivers_every_point_skips_when_complete_and_resumes_a_partial_run(tmp_path, online):
    data, files = write_export(tmp_path, steps=40)
    loader = WandbLoader(WandbTarget.from_env(tmp_path / "wb", "team", None))
    loader.check_target()
    assert loader.target.online
    assert loader.load_run(data, files, PROJECT, RUN).status == "loaded"
    run = online.runs[("team", "vision", wandb_run_id(PROJECT, RUN))]
    rows = run.rows()
    assert [r["_step"] for r in rows] == [0, 5, 10, 20, 25, 30] + [100 + 10 * i for i in range(40)]
    assert rows[-1]["big/a"] == 39.0 and rows[-1]["big/b"] == -39.0
    assert rows[2]["eval/hist"] == {"_type": "histogram", "values": [2, 5], "bins": [0, 0.5, 1]}
    assert run.summary["neptune.load_state"] == "complete" and run.config["params/epochs"] == 12
    assert validator(loader).validate(data, files, PROJECT, RUN).ok

    assert loader.load_run(data, files, PROJECT, RUN).status == "skipped"
    assert len(run.rows()) == len(rows)

    for offset in sorted(run.history)[-10:]:  # a crash lost the last rows and the completion marker
        del run.history[offset]
    run.summary.pop("neptune.load_state")
    assert loader.load_run(data, files, PROJECT, RUN).status == "loaded"
    assert [r["_step"] for r in run.rows()] == [r["_step"] for r in rows]
    assert validator(loader).validate(data, files, PROJECT, RUN).ok


def test_load_and_validate_through_the_target_registry(tmp_path):
    from neptune_exporter.load import LoadOptions, run_load, run_validate
    from neptune_exporter.settings import Settings

    for i in range(3):
        data, files = write_export(tmp_path, run_id=f"RUN-{i}", steps=50)
    options = LoadOptions(
        target="wandb", data_path=str(data), files_path=str(files), workers=3, wandb_dir=str(tmp_path / "wb")
    )
    assert sorted(r.status for r in run_load(options, Settings())) == ["loaded"] * 3
    report = run_validate(options, Settings())
    assert report.ok and len(report.runs) == 3 and all(r.checked["points"] == 109 for r in report.runs)
    assert sorted(r.status for r in run_load(options, Settings())) == ["skipped"] * 3


def test_peer_format_export_loads_with_its_files(tmp_path):
    """Parts without a manifest and files where the peer tool puts them (`<files>/<sanitized project>/<path>`)."""
    from neptune_exporter.load import LoadOptions, run_load, run_validate
    from neptune_exporter.settings import Settings
    from tests.unit.fixtures import peer_export as peer

    peer.write_peer_run(tmp_path / "data")
    peer.write_peer_files(tmp_path / "files")
    options = LoadOptions(
        target="wandb",
        data_path=str(tmp_path / "data"),
        files_path=str(tmp_path / "files"),
        wandb_dir=str(tmp_path / "wb"),
    )
    (result,) = run_load(options, Settings())
    assert (result.status, result.files) == ("loaded", 3)
    folder = find_offline_runs(tmp_path / "wb", wandb_run_id(peer.PROJECT, peer.RUN))[0]
    artifacts = {a.metadata["neptune_attribute"]: a for a in read_run_log(run_log_path(folder)).artifacts}
    staged = {
        name: {e.path: Path(e.local_path).read_bytes() for e in artifacts[name].entries}
        for name in ("model/ckpt", "images/pred")
    }
    assert staged["model/ckpt"] == {"ckpt.bin": peer.CHECKPOINT[1]}
    assert staged["images/pred"] == {f"step_{step}/{Path(path).name}": data for step, path, data in peer.PREDICTIONS}
    assert run_validate(options, Settings()).ok


def test_reader_stops_at_a_torn_tail_and_refuses_a_damaged_middle(tmp_path):
    data, files = write_export(tmp_path, steps=2000)
    make_loader(tmp_path / "wb").load_run(data, files, PROJECT, RUN)
    log_path = the_log(tmp_path / "wb")
    whole = log_path.read_bytes()
    assert len(whole) > 3 * 32768
    torn = tmp_path / "torn.wandb"
    torn.write_bytes(whole[: len(whole) - 5000])
    rows = list(iter_history(torn))
    assert 0 < len(rows) < 2006 and [r["_step"] for r in rows] == sorted(r["_step"] for r in rows)
    damaged = bytearray(whole)
    damaged[40_000] ^= 0xFF
    (tmp_path / "bad.wandb").write_bytes(bytes(damaged))
    with pytest.raises(TargetError, match="corrupt"):
        list(iter_history(tmp_path / "bad.wandb"))


def test_online_fork_points_at_the_loaded_parent_step(tmp_path, online):
    data, files = write_export(tmp_path)
    data, files = write_export(tmp_path, run_id="RUN-8", fork=(RUN, 2.5))
    loader = WandbLoader(WandbTarget.from_env(tmp_path / "wb", "team", None))
    loader.check_target()
    assert loader.load_run(data, files, PROJECT, RUN).status == "loaded"
    assert loader.load_run(data, files, PROJECT, "RUN-8").status == "loaded"
    child = online.runs[("team", "vision", wandb_run_id(PROJECT, "RUN-8"))]
    assert child.config["neptune.fork_parent"] == RUN and child.config["neptune.fork_step"] == 2.5
    assert child.fork_from == f"{wandb_run_id(PROJECT, RUN)}?_step=25"


def test_negative_steps_are_shifted_not_dropped_and_oversized_histograms_fail_clearly(tmp_path):
    data, files = tmp_path / "data", tmp_path / "files"
    with RunWriter(data, PROJECT, "NEG", 10**9) as writer:
        writer.write(
            series_rows(PROJECT, "NEG", "m", "float_series", [-2, -1.5, 3], [1.0, 2.0, 3.0], [T0, T0 + 1, T0 + 2])
        )
    loader = make_loader(tmp_path / "wb")
    assert loader.load_run(data, files, PROJECT, "NEG").status == "loaded"
    log_path = the_log(tmp_path / "wb", "NEG")
    assert [(r["_step"], r["m"]) for r in iter_history(log_path)] == [(0, 1.0), (5, 2.0), (50, 3.0)]
    assert read_run_log(log_path).config["neptune.step_offset"] == 20
    assert validator(loader).validate(data, files, PROJECT, "NEG").ok

    with RunWriter(data, PROJECT, "WIDE", 10**9) as writer:
        wide = {"type": "linear", "edges": [float(i) for i in range(601)], "values": [1.0] * 600}
        writer.write(series_rows(PROJECT, "WIDE", "h", "histogram_series", [0], [wide], [T0]))
    result = loader.load_run(data, files, PROJECT, "WIDE")
    assert result.status == "failed" and result.error["attribute"] == "h" and "512" in result.error["remedy"]


def test_fake_neptune_awkward_workspace_exports_then_loads_exactly(awkward_fake, tmp_path):
    from neptune_exporter.load import LoadOptions, run_load, run_validate
    from neptune_exporter.settings import Settings

    project = AWKWARD_PROJECT
    exported = export_awkward(awkward_fake, tmp_path)
    assert {r.status for r in exported} == {"complete"}
    options = LoadOptions(
        target="wandb",
        data_path=str(tmp_path / "data"),
        files_path=str(tmp_path / "files"),
        projects=(project,),
        workers=2,
        wandb_dir=str(tmp_path / "wb"),
    )
    results = {r.run_id: r for r in run_load(options, Settings())}
    assert {k: r.status for k, r in results.items()} == {r.run_id: "loaded" for r in exported}
    basic = read_run_log(run_log_path(find_offline_runs(tmp_path / "wb", results["run-basic"].target_run_id)[0]))
    assert (basic.project, basic.group, basic.name) == ("awkward", "exp-alpha", "run-basic")
    assert basic.config["params/string_set"] == ["a", "b/c", "ü"] and basic.config["unicode/ścieżka/λ"] == 1.5
    assert basic.config["neptune.step_multiplier"] == 100
    rows = [r for r in iter_history(basic.path) if "metrics/float_steps" in r]
    assert [(r["_step"], r["metrics/float_steps"]) for r in rows] == [(10, 1.0), (29, 2.0), (100, 3.0), (150, 4.0)]
    report = run_validate(options, Settings())
    assert report.ok, report.to_markdown()
    assert sum(run.checked["points"] for run in report.runs) > 100


def test_the_quick_completeness_check_agrees_with_the_full_log_read(tmp_path, monkeypatch):
    from neptune_exporter.loaders.wandb import CHECKSUM, LOAD_STATE, offline_log_complete, wandb_run_id
    from neptune_exporter.storage import wandb_log
    from neptune_exporter.storage.wandb_log import read_run_log, read_summary_keys

    monkeypatch.setattr(wandb_log, "SUMMARY_TAIL_BYTES", 32768)  # the tail-first read, on a log of many blocks
    data, files = write_export(tmp_path, steps=2000)
    loader = make_loader(tmp_path / "wb")
    assert loader.load_run(data, files, PROJECT, RUN).status == "loaded"
    log = read_run_log(the_log(tmp_path / "wb"))
    assert the_log(tmp_path / "wb").stat().st_size > 3 * 32768
    finished, summary = read_summary_keys(the_log(tmp_path / "wb"), (LOAD_STATE, CHECKSUM))
    assert finished and log.finished and summary == {key: log.summary[key] for key in (LOAD_STATE, CHECKSUM)}
    target = wandb_run_id(PROJECT, RUN)
    assert offline_log_complete(tmp_path / "wb", target, summary[CHECKSUM])
    assert not offline_log_complete(tmp_path / "wb", target, "another-export")

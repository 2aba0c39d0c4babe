"""ZenML loads into the real local store (SQLite + local artifact store under --zenml-dir), read back through
`zenml.client.Client` value by value; validation, idempotence, SIGKILL then rerun, peer and awkward exports, bad input."""

from __future__ import annotations

import builtins
import hashlib
import logging
import math
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import click
import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from neptune_exporter.cli import app
from neptune_exporter.load import LoadOptions, run_load, run_validate
from neptune_exporter.loaders import base as loader_base
from neptune_exporter.loaders.zenml import content as zenml_content
from neptune_exporter.loaders.zenml import loader as zenml_loader
from neptune_exporter.loaders.zenml import names as zenml_names
from neptune_exporter.rows import parameter_rows, series_rows
from neptune_exporter.settings import Settings
from neptune_exporter.storage.manifest import read_manifest
from neptune_exporter.storage.zenml_store import zenml_client
from tests.load_exports import (
    AWKWARD_PROJECT,
    COLLIDING,
    LONG_KEY,
    LONG_TEXT,
    T0_MS,
    export_awkward,
    rich_batches,
    write_export,
    write_rich_export,
)

pytestmark = pytest.mark.integration

PROJECT, CHANGED, BUGS, KILL = "team/zen", "team/changed", "team/bugs", "team/kill"  # a model each: one store
HUGE = "h" * 70_000  # over ZenML's 65,535 characters of metadata: kept whole in an artifact
HUGE_SET = {f"member-{i:05d}" for i in range(6_000)}
SETTINGS = Settings()


def options(root: Path, zen: Path, **overrides) -> LoadOptions:
    values = {
        "target": "zenml",
        "data_path": str(root / "data"),
        "files_path": str(root / "files"),
        "zenml_dir": str(zen),
        "workers": 2,
    }
    return LoadOptions(**{**values, **overrides})


def numeric_version(run_id: str) -> str:
    return f"run-{run_id}-{hashlib.blake2b(run_id.encode(), digest_size=4).hexdigest()}"


def write_runs(root: Path, project: str = PROJECT) -> None:
    """RUN-1 (every type, long values), RUN-2 forked from it, and `123` (a name ZenML refuses as a version)."""
    extra = (("params/huge", "string", HUGE), ("params/huge_set", "string_set", HUGE_SET))
    batches, files = rich_batches(project, "RUN-1", root / "files", points=300, extra_params=extra)
    write_export(root / "data", root / "files", project, "RUN-1", batches, files)
    write_rich_export(root / "data", root / "files", project, "RUN-2", points=300, fork_parent="RUN-1")
    write_export(root / "data", root / "files", project, "123", [parameter_rows(project, "123", [("p", "int", 1)])])


def versions_of(zen: Path, model: str = PROJECT) -> dict:
    """The model's versions by name, with their metadata, read through the ZenML client."""
    with zenml_client(zen) as client:
        (found,) = client.list_models(name=f"equals:{model}").items
        return {v.name: v for v in client.list_model_versions(found.id, size=100, hydrate=True).items}


def artifacts_of(zen: Path, version) -> dict:
    """The version's artifacts by the Neptune attribute they hold (as its `neptune.artifacts` metadata says)."""
    with zenml_client(zen) as client:
        linked = client.list_artifact_versions(model_version_id=version.id, size=1000, hydrate=True).items
    facts = version.run_metadata["neptune.artifacts"]
    return {facts[a.artifact.name]["attribute"]: a for a in linked}


def all_artifact_versions(zen: Path, model: str) -> int:
    """Artifact versions of the model's runs, linked or not (their names start with the model's)."""
    with zenml_client(zen) as client:
        return client.list_artifact_versions(name=f"startswith:{model}/", size=1).total


@pytest.fixture(scope="module")
def zen(tmp_path_factory) -> Path:
    """One local store for the module (creating one takes 8-15 s): each test loads projects of its own."""
    return tmp_path_factory.mktemp("zenml-store")


@pytest.fixture(scope="module")
def loaded(zen, tmp_path_factory):
    root = tmp_path_factory.mktemp("zenml")
    write_runs(root)
    results = {r.run_id: r for r in run_load(options(root, zen), SETTINGS)}
    return root, results


def test_every_run_is_one_model_version_of_its_project_model(loaded, zen):
    root, results = loaded
    assert {k: r.status for k, r in results.items()} == {"RUN-1": "loaded", "RUN-2": "loaded", "123": "loaded"}
    versions = versions_of(zen)
    assert set(versions) == {"RUN-1", "RUN-2", numeric_version("123")}
    assert {str(v.id) for v in versions.values()} == {r.target_run_id for r in results.values()}
    assert results["RUN-1"].points == 300 + 3 + 2 + 2 and results["RUN-1"].files == 4
    assert not Path(click.get_app_dir("zenml")).exists()  # nothing in the user's own ZenML config
    assert (zen / "local_stores" / "default_zen_store" / "zenml.db").is_file()
    assert "analytics_opt_in: false" in (zen / "config.yaml").read_text()
    from zenml.logger import CustomFormatter  # ZenML's import left no handler of its own and print alone

    assert not any(isinstance(h.formatter, CustomFormatter) for h in logging.getLogger().handlers)
    assert not hasattr(builtins, "_zenml_original_print")


def test_values_and_provenance_read_back_as_metadata(loaded, zen):
    root, _ = loaded
    versions = versions_of(zen)
    metadata = versions["RUN-1"].run_metadata  # one entry per namespace, the rest of each path a key in it
    params = metadata["params"]
    assert params["lr"] == 0.001 and params["epochs"] == 12 and params["flag"] is True
    assert math.isnan(params["nan"]) and params["inf"] == math.inf
    assert params["name"] == "résumé ✓" and params["long"] == LONG_TEXT
    assert params["when"] == "2024-02-03T04:05:06.789+00:00" and params["set"] == ["a", "b", "c"]
    assert params[LONG_KEY.partition("/")[2]] == 7  # 300 characters: fine inside a namespace
    assert metadata["sys"]["tags"] == ["baseline", "mlflow.note", "with space"]
    assert metadata["cfg"] == {COLLIDING[0][4:]: 1, COLLIDING[1][4:]: 2} and metadata["weird"] == {"/key..x:y": "w"}
    assert metadata["neptune.key_map"] == {}  # no top-level key needed a new name
    assert (
        params["huge"].startswith("h" * 1000) and "[truncated: 70000 chars, whole value in artifact" in (params["huge"])
    )
    manifest = read_manifest(next((root / "data").rglob("*RUN-1*.manifest.json")))
    provenance = {k: v for k, v in metadata.items() if k.startswith("neptune.")}
    assert len(provenance.pop("neptune.artifacts")) == 9  # one fact per artifact (test_series_files... reads them)
    assert {k: v for k, v in provenance.items() if k != "neptune.key_map"} == {
        "neptune.project": PROJECT,
        "neptune.run_id": "RUN-1",
        "neptune.run_key": loader_base.run_key(PROJECT, "RUN-1"),
        "neptune.export_checksum": manifest.checksum,
        "neptune.load_state": "complete",
        "neptune.experiment": "exp-a",
    }
    forked = versions["RUN-2"].run_metadata
    assert forked["neptune.fork_parent"] == "RUN-1" and forked["neptune.fork_step"] == 1.0
    assert versions[numeric_version("123")].run_metadata["neptune.run_id"] == "123"


def test_series_files_and_long_values_read_back_as_artifacts(loaded, zen):
    root, _ = loaded
    version = versions_of(zen)["RUN-1"]
    artifacts = artifacts_of(zen, version)
    assert {a.version for a in artifacts.values()} == {"RUN-1"}
    assert artifacts["metrics/loss"].artifact.name == f"{PROJECT}/metrics/loss"
    loss = pq.read_table(Path(artifacts["metrics/loss"].uri)).to_pydict()
    assert loss["step"] == [Decimal(s).quantize(Decimal("0.000001")) for s in range(300)]
    assert loss["value"][:3] == np.linspace(1.0, 0.0, 300)[:3].tolist() and math.isnan(loss["value"][3])
    assert loss["value"][4:6] == [math.inf, -math.inf]
    assert [int(t.timestamp() * 1000) for t in loss["timestamp"][:2]] == [T0_MS, T0_MS + 10]
    frac = pq.read_table(Path(artifacts["metrics/frac"].uri)).to_pydict()
    assert [str(s.normalize()) for s in frac["step"]] == ["0.5", "1.25", "2"] and frac["value"] == [1.0, 2.0, 3.0]
    assert pq.read_table(Path(artifacts["logs/stdout"].uri)).column("value").to_pylist() == ["hello", "wörld\nnext"]
    histograms = pq.read_table(Path(artifacts["hist/w"].uri)).column("value").to_pylist()
    assert histograms[1] == {"type": "linear", "edges": [0.0, 1.0], "values": [5.0]}
    assert (Path(artifacts["files/model"].uri) / "model.bin").read_bytes() == b"\x00weights" * 100
    assert (Path(artifacts["files/source"].uri) / "source" / "sub" / "b.txt").read_bytes() == b"bee"
    pred = Path(artifacts["images/pred"].uri)
    assert (pred / "step_1" / "pred_1.png").read_bytes() == b"png-one"
    assert (pred / "step_2" / "pred_2.png").read_bytes() == b"png-two-bytes"
    assert (Path(artifacts["params/huge"].uri) / "value.txt").read_text() == HUGE
    assert (Path(artifacts["params/huge_set"].uri) / "value.json").read_text().startswith('["member-00000", ')
    assert version.run_metadata["neptune.artifacts"][artifacts["metrics/loss"].artifact.name] == {
        "attribute": "metrics/loss",
        "type": "float_series",
        "count": 300,
    }


def test_validation_reads_everything_back_with_no_difference(loaded, zen):
    root, _ = loaded
    report = run_validate(options(root, zen), SETTINGS)
    assert report.ok, report.to_markdown()
    checked = {run.run_id: run.checked for run in report.runs}
    assert checked["RUN-1"]["points"] == 300 + 3 + 2 + 2 and checked["RUN-1"]["artifacts"] == 7
    assert checked["RUN-1"]["metrics"] == 4


def test_loading_twice_adds_nothing(loaded, zen):
    root, _ = loaded
    before = (versions_of(zen), all_artifact_versions(zen, PROJECT))
    again = run_load(options(root, zen), SETTINGS)
    assert sorted(r.status for r in again) == ["skipped"] * 3
    after = (versions_of(zen), all_artifact_versions(zen, PROJECT))
    assert {n: v.id for n, v in after[0].items()} == {n: v.id for n, v in before[0].items()} and after[1] == before[1]


def test_entries_split_over_several_calls_read_back_whole(tmp_path, monkeypatch, zen):
    """A namespace's values and the artifacts' facts over the entry limit go in several `log_metadata` calls under
    one key (the limit lowered to 300 characters here): ZenML merges them back, and validation finds nothing lost."""
    project = "team/split"
    params = [(f"params/p{i:03d}", "int", i) for i in range(60)]
    series = [
        series_rows(project, "r", f"m/s{i:02d}", "float_series", [0.0, 1.5], [1.0, 2.0], [T0_MS] * 2) for i in range(12)
    ]
    write_export(tmp_path / "data", tmp_path / "files", project, "r", [parameter_rows(project, "r", params), *series])
    monkeypatch.setattr(zenml_content, "ENTRY_LIMIT", 300)
    calls = []
    monkeypatch.setattr(zenml_loader.ZenmlLoader, "_log", spy(zenml_loader.ZenmlLoader._log, calls))
    (result,) = run_load(options(tmp_path, zen), SETTINGS)
    assert result.status == "loaded" and result.points == 24
    assert len(calls) > 4  # provenance, several chunks, `complete`
    (version,) = versions_of(zen, project).values()
    assert version.run_metadata["params"] == {f"p{i:03d}": i for i in range(60)}
    assert {
        a: (f["type"], f["count"])
        for a, f in ((f["attribute"], f) for f in version.run_metadata["neptune.artifacts"].values())
    } == {f"m/s{i:02d}": ("float_series", 2) for i in range(12)}
    assert run_validate(options(tmp_path, zen, projects=(project,)), SETTINGS).ok


def spy(method, calls: list):
    def logged(self, version_id, metadata):
        calls.append(sorted(metadata))
        return method(self, version_id, metadata)

    return logged


def test_a_changed_export_replaces_its_version(tmp_path, zen):
    write_export(tmp_path / "data", tmp_path / "files", CHANGED, "r", [parameter_rows(CHANGED, "r", [("p", "int", 1)])])
    (first,) = run_load(options(tmp_path, zen), SETTINGS)
    steps = [0.0, 1.0]
    write_export(
        tmp_path / "data",
        tmp_path / "files",
        CHANGED,
        "r",
        [
            parameter_rows(CHANGED, "r", [("p", "int", 2)]),
            series_rows(CHANGED, "r", "m", "float_series", steps, steps, [T0_MS, T0_MS]),
        ],
    )
    (second,) = run_load(options(tmp_path, zen), SETTINGS)
    assert (first.status, second.status) == ("loaded", "loaded") and first.target_run_id != second.target_run_id
    (version,) = versions_of(zen, CHANGED).values()
    assert version.run_metadata["p"] == 2 and set(artifacts_of(zen, version)) == {"m"}
    assert run_validate(options(tmp_path, zen), SETTINGS).ok


def test_a_mapping_bug_in_the_loader_is_reported_by_validation(tmp_path, monkeypatch, zen):
    """Bugs injected into the loader only: string values cut to 6 characters, one namespace renamed, a series' first
    point dropped; validation (its own rules) reports each, for the affected run only."""
    write_rich_export(tmp_path / "data", tmp_path / "files", BUGS, "a", points=20)
    write_export(tmp_path / "data", tmp_path / "files", BUGS, "c", [parameter_rows(BUGS, "c", [("x", "int", 1)])])
    correct_value, correct_key, correct_part = (
        zenml_content.metadata_value,
        zenml_names.ZenmlKeyMap.target_key,
        zenml_content.RunContent._series_part,
    )
    monkeypatch.setattr(
        zenml_content,
        "metadata_value",
        lambda kind, value: correct_value(kind, value)[:6] if kind == "string" else correct_value(kind, value),
    )
    monkeypatch.setattr(
        zenml_names.ZenmlKeyMap,
        "target_key",
        lambda self, key: "config" if key == "cfg" else correct_key(self, key),
    )
    monkeypatch.setattr(
        zenml_content.RunContent,
        "_series_part",
        lambda self, path, kind, rows: correct_part(
            self, path, kind, rows.slice(1) if path == "metrics/loss" else rows
        ),
    )
    assert sorted(r.status for r in run_load(options(tmp_path, zen), SETTINGS)) == ["loaded", "loaded"]
    report = run_validate(options(tmp_path, zen), SETTINGS)
    assert {(d.run_id, d.kind, d.key, d.problem) for d in report.differences} == {
        ("a", "metadata", "params/name", "value"),
        ("a", "metadata", "params/long", "value"),
        ("a", "key", "cfg", "renamed"),
        ("a", "metadata", "neptune.key_map", "value"),
        ("a", "metadata", "cfg/a#b", "missing"),
        ("a", "metadata", "cfg/a%b", "missing"),
        ("a", "metadata", "config/a#b", "unexpected"),
        ("a", "metadata", "config/a%b", "unexpected"),
        ("a", "series", "metrics/loss", "points"),
        ("a", "artifact", "metrics/loss:count", "value"),
    }
    name = next(d for d in report.differences if d.key == "params/name")
    assert (name.expected, name.actual) == ('"résumé ✓"', '"résumé"')
    assert [r.run_id for r in report.failed_runs] == ["a"]


def test_sigkill_mid_load_then_rerun_loads_each_run_once(tmp_path, zen):
    """Killed while it registers the run's artifacts (30 of 100 there), the load leaves a `loading` version; a rerun
    removes it with every artifact version it left, linked or not, and loads the run once."""
    series = [
        series_rows(KILL, "big", f"m/{i:03d}", "float_series", [0.0, 1.5], [float(i), 2.0], [T0_MS, T0_MS + 1])
        for i in range(100)
    ]
    write_export(tmp_path / "data", tmp_path / "files", KILL, "big", series)
    script = (
        "from neptune_exporter.load import LoadOptions, run_load\nfrom neptune_exporter.settings import Settings\n"
        f"run_load(LoadOptions(**{options(tmp_path, zen).to_json()!r}), Settings())\n"
    )
    assert all_artifact_versions(zen, KILL) == 0  # the store exists before the child opens it (and it is polled)
    child = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and all_artifact_versions(zen, KILL) < 30:
            assert child.poll() is None, "the load finished before it could be killed; make the run bigger"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    (partial,) = versions_of(zen, KILL).values()
    assert partial.run_metadata["neptune.load_state"] == "loading" and all_artifact_versions(zen, KILL) < 100
    (result,) = run_load(options(tmp_path, zen), SETTINGS)
    assert result.status == "loaded" and result.points == 200
    (complete,) = versions_of(zen, KILL).values()
    assert complete.run_metadata["neptune.load_state"] == "complete" and str(complete.id) == result.target_run_id
    assert len(artifacts_of(zen, complete)) == 100 == all_artifact_versions(zen, KILL)
    assert run_validate(options(tmp_path, zen), SETTINGS).ok
    assert run_load(options(tmp_path, zen), SETTINGS)[0].status == "skipped"


def test_peer_format_export_loads_with_its_files(tmp_path, zen):
    from tests.unit.fixtures import peer_export as peer

    peer.write_peer_run(tmp_path / "data")
    peer.write_peer_files(tmp_path / "files")
    (result,) = run_load(options(tmp_path, zen), SETTINGS)
    assert result.status == "loaded" and result.points == 5 and result.files == 3
    (version,) = versions_of(zen, peer.PROJECT).values()
    assert version.name == peer.RUN and version.run_metadata["params"] == {"lr": 0.01}
    assert version.run_metadata["neptune.fork_parent"] == "exp-6" and version.run_metadata["sys"]["tags"] == ["x", "y"]
    artifacts = artifacts_of(zen, version)
    assert (Path(artifacts["model/ckpt"].uri) / "ckpt.bin").read_bytes() == peer.CHECKPOINT[1]
    for step, path, data in peer.PREDICTIONS:
        assert (Path(artifacts["images/pred"].uri) / f"step_{step}" / Path(path).name).read_bytes() == data
    steps = pq.read_table(Path(artifacts["metrics/acc"].uri)).column("step").to_pylist()
    assert [str(s.normalize()) for s in steps] == ["0.5", "1.5", "2.5", "3.5", "4.5"]
    assert run_validate(options(tmp_path, zen), SETTINGS).ok
    assert run_load(options(tmp_path, zen), SETTINGS)[0].status == "skipped"


def test_fake_neptune_awkward_workspace_exports_then_loads_exactly(awkward_fake, tmp_path, zen):
    project = AWKWARD_PROJECT
    exported = export_awkward(awkward_fake, tmp_path)
    assert {r.status for r in exported} == {"complete"} and len(exported) == 8
    results = {r.run_id: r for r in run_load(options(tmp_path, zen, projects=(project,)), SETTINGS)}
    assert {k: r.status for k, r in results.items()} == {r.run_id: "loaded" for r in exported}
    versions = versions_of(zen, project)
    basic = versions["run-basic"].run_metadata
    assert basic["params"]["string_set"] == ["a", "b/c", "ü"] and basic["unicode"]["ścieżka/λ"] == 1.5
    assert basic["params"]["empty_string"] == "" and basic["neptune.experiment"] == "exp-alpha"
    artifacts = artifacts_of(zen, versions["run-basic"])
    steps = pq.read_table(Path(artifacts["metrics/float_steps"].uri)).column("step").to_pylist()
    assert [str(s.normalize()) for s in steps] == ["0.1", "0.29", "1", "1.5"]
    assert (Path(artifacts["files/empty"].uri) / "empty.txt").read_bytes() == b""
    assert len(versions["run-wide"].run_metadata["wide"]) == 10_000
    report = run_validate(options(tmp_path, zen, projects=(project,)), SETTINGS)
    assert report.ok, report.to_markdown()
    assert sum(run.checked["points"] for run in report.runs) > 100


@pytest.mark.parametrize("command", ["load", "validate"])
def test_bad_input_is_one_line_and_exit_2(command, tmp_path, monkeypatch):
    write_export(tmp_path / "data", tmp_path / "files", PROJECT, "r", [parameter_rows(PROJECT, "r", [("p", "int", 1)])])
    (tmp_path / "blocked").write_text("a file where the ZenML folder should be")
    base = [command, "-d", str(tmp_path / "data"), "--target", "zenml", "--zenml-dir"]
    cases = [
        ([*base, str(tmp_path / "blocked")], f"the ZenML folder {tmp_path / 'blocked'} is not writable"),
        ([*base, str(tmp_path / "zen"), "--zenml-model-template", "{x}"], "--zenml-model-template '{x}' is invalid"),
        ([*base, str(tmp_path / "zen"), "--step-multiplier", "10"], "--step-multiplier does not apply"),
    ]
    for arguments, expected in cases:
        result = CliRunner().invoke(app, arguments)
        lines = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2, (arguments, result.output)
        assert len(lines) == 1 and expected in lines[0] and "fix:" in lines[0], (arguments, result.output)
    monkeypatch.setitem(sys.modules, "zenml", None)  # as if the extra were not installed
    result = CliRunner().invoke(app, [*base, str(tmp_path / "zen")])
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "pip install 'neptune-exporter[zenml]'" in lines[0]
    assert not (tmp_path / "zen").exists()  # nothing was created for a bad command


def test_zenml_is_imported_only_when_a_zenml_command_runs():
    """ZenML takes seconds to import: a CLI start, `load --help` and importing the target's modules leave it out."""
    script = (
        "import importlib, sys\n"
        "from typer.testing import CliRunner\n"
        "from neptune_exporter.cli import app\n"
        "assert CliRunner().invoke(app, ['load', '--help']).exit_code == 0\n"
        "for name in ('neptune_exporter.loaders.zenml', 'neptune_exporter.validation.zenml'):\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'zenml' or m.startswith('zenml.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
    assert done.stdout.strip() == "[]"

"""Entity scopes (2.x models / model versions): options, JSON round trips, on-disk paths, CLI flag, fake lookups."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from neptune_exporter import cli
from neptune_exporter.cli import export_command
from neptune_exporter.export import ExportOptions, RunPlan
from neptune_exporter.exporters.neptune2 import sys_id_nql, version_model_id
from neptune_exporter.fake_neptune import api_v2, store
from neptune_exporter.fake_neptune import datasets as ds
from neptune_exporter.fake_neptune import models_dataset as md
from neptune_exporter.fake_neptune.server import HttpError, Request
from neptune_exporter.model import RunRef, part_file_name, sanitize_name
from neptune_exporter.rows import parameter_rows
from neptune_exporter.storage.manifest import STATUS_COMPLETE, Manifest, manifest_path, write_manifest
from neptune_exporter.storage.parquet import RunWriter, project_dir, read_run_batches, run_part_paths

T0 = datetime(2024, 1, 1, tzinfo=UTC)
runner = CliRunner()


def test_include_models_round_trips_and_leaves_the_fingerprint_alone():
    options = ExportOptions(source="neptune2", projects=("ws/p",), include_models=True)
    assert options.to_json()["include_models"] is True
    assert ExportOptions.from_json(options.to_json()) == options
    legacy = {k: v for k, v in options.to_json().items() if k != "include_models"}
    assert ExportOptions.from_json(legacy).include_models is False  # older flow parameters
    assert options.fingerprint() == ExportOptions(source="neptune2", projects=("ws/p",)).fingerprint()


def test_run_plans_keep_the_scope_through_json():
    ref = RunRef(
        "ws/p", "P-MOD-2", "P-MOD-2", name="v2", creation_time=T0, source_kind="neptune2", scope="model_versions"
    )
    plan = RunPlan(ref, "full", "not exported yet")
    assert RunPlan.from_json(plan.to_json()) == plan
    legacy = plan.to_json()
    del legacy["run"]["scope"]
    assert RunPlan.from_json(legacy).run.scope is None


def test_scope_is_a_subfolder_of_the_project_folder(tmp_path):
    project = tmp_path / sanitize_name("ws/p")
    assert project_dir(tmp_path, "ws/p") == project
    assert project_dir(tmp_path, "ws/p", "models") == project / "models"
    assert manifest_path(tmp_path, "ws/p", "P-MOD", "models") == project / "models" / (
        sanitize_name("P-MOD") + ".manifest.json"
    )
    assert manifest_path(tmp_path, "ws/p", "P-1") == project / (sanitize_name("P-1") + ".manifest.json")
    for bad in ("..", "runs", "models/../x"):
        with pytest.raises(ValueError, match="unknown entity scope"):
            project_dir(tmp_path, "ws/p", bad)


def test_scoped_writer_manifest_and_reader(tmp_path):
    batch = parameter_rows("ws/p", "P-MOD", [("sys/stage", "string", "staging")])
    with RunWriter(tmp_path, "ws/p", "P-MOD", 1 << 20, "models") as writer:
        writer.write(batch)
        parts = writer.close()
    assert [p.path for p in parts] == [f"{sanitize_name('ws/p')}/models/{part_file_name('P-MOD', 0)}"]
    assert run_part_paths(tmp_path, "ws/p", "P-MOD", scope="models") == [tmp_path / parts[0].path]
    assert run_part_paths(tmp_path, "ws/p", "P-MOD") == []  # runs never see scoped parts
    manifest = Manifest(STATUS_COMPLETE, {"project_id": "ws/p", "run_id": "P-MOD", "scope": "models"}, parts=parts)
    path = write_manifest(tmp_path, manifest)
    assert path == manifest_path(tmp_path, "ws/p", "P-MOD", "models")
    assert Manifest.from_json(manifest.to_json()).scope == "models"
    table = pa.Table.from_batches(list(read_run_batches(tmp_path, "ws/p", "P-MOD", scope="models")))
    assert table["string_value"].to_pylist() == ["staging"]


def test_run_manifests_carry_no_scope_key():
    record = Manifest(STATUS_COMPLETE, {"project_id": "ws/p", "run_id": "P-1"}).to_json()["source"]
    assert "scope" not in record


def test_registry_helpers():
    assert version_model_id("PROJ-CLS-12") == "PROJ-CLS"
    assert sys_id_nql("PROJ-CLS") == '`sys/id`:string = "PROJ-CLS"'


@pytest.fixture
def captured(monkeypatch):
    seen = {}

    def fake_run(options, *, no_progress=False, if_locked="stop", distribute=None):
        seen["options"] = options
        return 0

    monkeypatch.setattr(export_command, "run_export_command", fake_run)
    return seen


def test_cli_include_models_flag(captured):
    result = runner.invoke(cli.app, ["export", "--source", "neptune2", "-p", "ws/a", "--include-models"])
    assert result.exit_code == 0, result.output
    assert captured["options"].include_models is True
    assert runner.invoke(cli.app, ["export", "--source", "neptune2", "-p", "ws/a"]).exit_code == 0
    assert captured["options"].include_models is False


def test_cli_include_models_needs_neptune2(captured):
    result = runner.invoke(cli.app, ["export", "--source", "neptune3", "-p", "ws/a", "--include-models"])
    assert result.exit_code == 2 and "options" not in captured
    assert "--include-models" in result.output and "--source neptune2" in result.output


def registry() -> store.Project:
    ws = ds.new_workspace("ws")
    project = ds.add_project(ws, "p", "P")
    ds.add_run(ws, "ws/p", created=T0)
    model = md.add_model(ws, "ws/p", "mod", "model", created=T0)
    md.add_model_version(ws, "ws/p", model.sys_id, "production", created=T0)
    return project


def test_fake_names_models_and_versions_like_runs():
    project = registry()
    model, version = project.models[0], project.models[0].versions[0]
    assert (model.sys_id, version.sys_id, version.stage, version.model_id) == (
        "P-MOD",
        "P-MOD-1",
        "production",
        "P-MOD",
    )
    assert project.registry_container(version.uuid) is version and project.registry_container("P-1") is None
    assert [api_v2.container_type(c) for c in (project.runs[0], model, version)] == ["run", "model", "modelVersion"]
    assert api_v2.containers(project, ("model", "modelVersion")) == [model, version]
    with pytest.raises(ValueError, match="stage"):
        md.add_model_version(ds.new_workspace(), "ws/p", "P-MOD", "shipped")


def test_fake_refuses_unknown_table_types():
    request = Request("POST", "/", {}, {"type": ["run", "experiment"]}, {}, b"")
    with pytest.raises(HttpError) as raised:
        api_v2.requested_types(request)
    assert raised.value.status == 400
    assert api_v2.requested_types(Request("POST", "/", {}, {}, {}, b"")) == ("run",)


def test_export_task_keys_on_the_scoped_manifest(tmp_path):
    from tasks.export import export_run_call

    ref = RunRef("ws/p", "P-MOD", "P-MOD", source_kind="neptune2", scope="models")
    options = ExportOptions(source="neptune2", projects=("ws/p",), data_path=str(tmp_path), include_models=True)
    call = export_run_call(RunPlan(ref, "full", "new").to_json(), options)
    assert Path(call["manifest_path"]) == manifest_path(tmp_path, "ws/p", "P-MOD", "models").resolve()

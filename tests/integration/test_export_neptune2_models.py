"""Model registry export (2.x): the real `neptune` 1.14 client against the fake server, end to end into Parquet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import neptune
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from neptune import exceptions as ne

from neptune_exporter.errors import UnsupportedError
from neptune_exporter.export import ExportOptions, RunPlan, discover, export_run, preflight
from neptune_exporter.export_runner import run_export
from neptune_exporter.exporters.base import AttributeSelection, RunSelection
from neptune_exporter.exporters.neptune2 import Neptune2Source
from neptune_exporter.exporters.neptune3 import Neptune3Source
from neptune_exporter.fake_neptune import FakeNeptune, store
from neptune_exporter.fake_neptune import datasets as ds
from neptune_exporter.fake_neptune import models_dataset as md
from neptune_exporter.model import PARQUET_SCHEMA, RunRef, decimal_array_to_float, part_file_name, sanitize_name
from neptune_exporter.settings import RetryPolicy, Settings
from neptune_exporter.storage.exported_run import list_stored_runs
from neptune_exporter.storage.manifest import manifest_path, read_manifest
from neptune_exporter.storage.parquet import read_run_batches

pytestmark = pytest.mark.integration

T0 = datetime(2024, 1, 1, tzinfo=UTC)
MS = 1_704_067_200_000
PROJECT = "ws/proj"
BLOBS = {
    "card": (b'{"card": 1}', "card.json"),
    "w": (bytes(range(256)) * 9, "weights.bin"),
    "fa": (b"AAA", "a.txt"),
    "fb": (b"BBBB", "b.txt"),
    "img0": (b"\x89PNG-0", "i0.png"),
    "img1": (b"\x89PNG-1", "i1.png"),
}
ATOMS = {
    "params/lr": ("float", 0.25),
    "params/huge": ("float", -1.7976931348623157e308),
    "params/layers": ("int", -(2**40)),
    "params/arch": ("string", 'resnet "50" ✓'),
    "params/empty": ("string", ""),
    "params/frozen": ("bool", True),
    "params/trained": ("datetime", T0 + timedelta(milliseconds=1234)),
    "params/labels": ("string_set", ["cat", "dog house"]),
}
MODEL_ATTRS = {
    **ATOMS,
    "metrics/acc": ("float_series", [(0.0, 0.5, MS), (1.0, 0.75, MS + 1), (2.5, 0.875, MS + 2)]),
    "logs": ("string_series", [(0.0, "fit", MS), (1.0, "done ✓", MS + 5)]),
    "files/card": ("file", "card"),
    "data/set": ("file_set", {"a.txt": "fa", "sub/b.txt": "fb"}),
    "samples": ("file_series", [(0.0, "img0", MS), (1.0, "img1", MS + 1)]),
}
VERSION_ATTRS = {**ATOMS, "files/weights": ("file", "w"), "val/acc": ("float", 0.91)}
STAGES = {"PROJ-CLS-1": "none", "PROJ-CLS-2": "staging", "PROJ-CLS-3": "production"}
SYS_PATHS = ("sys/id", "sys/name", "sys/creation_time", "sys/modification_time", "sys/owner", "sys/tags", "sys/trashed")


def registry_workspace() -> store.Workspace:
    """Two runs; model CLS with every 2.x type and three versions (one per stage); EMPTY; trashed OLD."""
    ws = ds.new_workspace("ws")
    project = ds.add_project(ws, "proj", "PROJ")
    for key, (content, name) in BLOBS.items():
        project.files[key] = store.StoredFile(size=len(content), content=content, name=name)
    ds.add_run(
        ws,
        PROJECT,
        created=T0,
        attributes={"params/lr": ("float", 0.1), "metrics/loss": ("float_series", [(0.0, 1.0, MS), (1.0, 0.5, MS)])},
    )
    ds.add_run(ws, PROJECT, created=T0 + timedelta(minutes=1), attributes={"files/card": ("file", "card")})
    model = md.add_model(ws, PROJECT, "CLS", "classifier", MODEL_ATTRS, T0 + timedelta(minutes=10), tags=["prod"])
    for i, (version_id, stage) in enumerate(STAGES.items(), start=1):
        attributes = VERSION_ATTRS if version_id == "PROJ-CLS-2" else {"val/acc": ("float", 0.5 + i / 10)}
        md.add_model_version(ws, PROJECT, model.sys_id, stage, f"v{i}", attributes, T0 + timedelta(minutes=10 + i))
    md.add_model(ws, PROJECT, "EMPTY", "no versions", created=T0 + timedelta(minutes=20))
    old = md.add_model(ws, PROJECT, "OLD", "old", created=T0 + timedelta(minutes=30), trashed=True)
    md.add_model_version(ws, PROJECT, old.sys_id, "archived", "old-v1", created=T0 + timedelta(minutes=31))
    ds.add_project(ws, "bare", "BARE")
    ds.add_run(ws, "ws/bare", created=T0)
    return ws


@pytest.fixture(autouse=True)
def plain_http(monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


@pytest.fixture(scope="module")
def fake():
    with FakeNeptune(registry_workspace(), port=0) as server:
        yield server


@pytest.fixture()
def source(fake):
    src = Neptune2Source(fake.api_token, Settings(workers=3))
    yield src
    src.close()


def export_to(root: Path, token: str, include_models: bool, **options) -> dict[str, object]:
    """run_export of the project into root/data + root/files; results by run id."""
    opts = ExportOptions(
        source="neptune2",
        projects=(PROJECT,),
        data_path=str(root / "data"),
        files_path=str(root / "files"),
        api_token=token,
        include_models=include_models,
        workers=2,
        **options,
    )
    return {r.run_id: r for r in run_export(opts, Settings(workers=3))}


@pytest.fixture(scope="module")
def exported(fake, tmp_path_factory):
    root = tmp_path_factory.mktemp("with-models")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
        results = export_to(root, fake.api_token, include_models=True)
    return root, results


def rows(root: Path, run_id: str, scope: str | None) -> pa.Table:
    return pa.Table.from_batches(
        list(read_run_batches(root / "data", PROJECT, run_id, scope=scope)), schema=PARQUET_SCHEMA
    )


def of_path(table: pa.Table, path: str) -> pa.Table:
    return table.filter(pc.equal(table["attribute_path"], path))


VALUE_COLUMNS = {
    "float": "float_value",
    "int": "int_value",
    "string": "string_value",
    "bool": "bool_value",
    "datetime": "datetime_value",
    "string_set": "string_set_value",
}


def single_value(table: pa.Table, path: str) -> tuple[str, object]:
    """(attribute_type, value) of a single-value attribute present exactly once."""
    found = of_path(table, path).to_pylist()
    assert len(found) == 1, (path, found)
    kind = found[0]["attribute_type"]
    value = found[0][VALUE_COLUMNS[kind]]
    return kind, sorted(value) if kind == "string_set" else value


def file_bytes(root: Path, relative: str) -> bytes:
    """Bytes where the peer's loaders look: `<files>/<project-dir>/<file_value.path>` (scope folder inside the path)."""
    return (root / "files" / sanitize_name(PROJECT) / relative).read_bytes()


# --------------------------------------------------------------------------- the fake, through the real client


def test_fake_serves_the_registry_to_the_real_client(fake):
    project = neptune.init_project(project=PROJECT, api_token=fake.api_token, mode="read-only")
    model = neptune.init_model(with_id="PROJ-CLS", project=PROJECT, api_token=fake.api_token, mode="read-only")
    version = neptune.init_model_version(
        with_id="PROJ-CLS-2", project=PROJECT, api_token=fake.api_token, mode="read-only"
    )
    try:
        listed = project.fetch_models_table(columns=["sys/name"], ascending=True, progress_bar=False).to_pandas()
        assert list(listed["sys/id"]) == ["PROJ-CLS", "PROJ-EMPTY"]
        everything = project.fetch_models_table(trashed=None, ascending=True, progress_bar=False).to_pandas()
        assert list(everything["sys/id"]) == ["PROJ-CLS", "PROJ-EMPTY", "PROJ-OLD"]
        assert list(project.fetch_runs_table(progress_bar=False).to_pandas()["sys/id"]) == ["PROJ-2", "PROJ-1"]
        versions = model.fetch_model_versions_table(columns=["sys/stage"], ascending=True, progress_bar=False)
        assert dict(versions.to_pandas()[["sys/id", "sys/stage"]].values) == STAGES
        assert model["params/arch"].fetch() == 'resnet "50" ✓' and model["sys/name"].fetch() == "classifier"
        assert version["sys/stage"].fetch() == "staging" and version["sys/model_id"].fetch() == "PROJ-CLS"
        assert version["val/acc"].fetch() == 0.91
    finally:
        for container in (version, model, project):
            container.stop()
    with pytest.raises(ne.MetadataContainerNotFound):  # the type of the container is checked, as on Neptune
        neptune.init_model(with_id="PROJ-1", project=PROJECT, api_token=fake.api_token, mode="read-only")


# --------------------------------------------------------------------------- listing


def test_list_models_lists_models_then_versions_in_their_scopes(source):
    found = [(r.sys_id, r.run_id, r.scope, r.name) for r in source.list_models(PROJECT, RunSelection())]
    assert found == [
        ("PROJ-CLS", "PROJ-CLS", "models", "classifier"),
        ("PROJ-EMPTY", "PROJ-EMPTY", "models", "no versions"),
        ("PROJ-CLS-1", "PROJ-CLS-1", "model_versions", "v1"),
        ("PROJ-CLS-2", "PROJ-CLS-2", "model_versions", "v2"),
        ("PROJ-CLS-3", "PROJ-CLS-3", "model_versions", "v3"),
    ]
    refs = source.list_models(PROJECT, RunSelection())
    assert all(r.source_kind == "neptune2" and r.experiment_name is None and not r.archived for r in refs)
    assert refs[0].creation_time == T0 + timedelta(minutes=10)


def test_list_models_archived_and_modified_after(source):
    archived = source.list_models(PROJECT, RunSelection(include_archived=True))
    assert [r.sys_id for r in archived if r.archived] == ["PROJ-OLD"]
    assert {r.sys_id for r in archived} >= {"PROJ-OLD", "PROJ-OLD-1"}
    recent = source.list_models(PROJECT, RunSelection(modified_after=T0 + timedelta(minutes=12, seconds=30)))
    assert [r.sys_id for r in recent] == ["PROJ-EMPTY", "PROJ-CLS-3"]
    assert source.list_models("ws/bare", RunSelection(include_archived=True)) == []  # a project without models


def test_include_models_needs_a_model_registry(fake, tmp_path):
    options = ExportOptions(
        source="neptune3",
        projects=(PROJECT,),
        data_path=str(tmp_path / "d"),
        files_path=str(tmp_path / "f"),
        include_models=True,
    )
    with pytest.raises(UnsupportedError) as raised:
        discover(Neptune3Source(fake.api_token, Settings()), options, [PROJECT])
    assert "--source neptune2" in raised.value.remedy and "model registry" in str(raised.value)
    with pytest.raises(UnsupportedError):  # before any download
        preflight(options, Neptune3Source(fake.api_token, Settings()))


# --------------------------------------------------------------------------- export, value by value


def test_every_run_model_and_version_is_exported(exported):
    _, results = exported
    assert {k: r.status for k, r in results.items()} == {
        k: "complete" for k in ("PROJ-1", "PROJ-2", "PROJ-CLS", "PROJ-EMPTY", "PROJ-CLS-1", "PROJ-CLS-2", "PROJ-CLS-3")
    }


def test_model_atoms_come_back_value_by_value(exported):
    root, _ = exported
    table = rows(root, "PROJ-CLS", "models")
    assert set(table["run_id"].to_pylist()) == {"PROJ-CLS"} and set(table["project_id"].to_pylist()) == {PROJECT}
    for path, (kind, value) in ATOMS.items():
        assert single_value(table, path) == (kind, sorted(value) if kind == "string_set" else value), path
    assert single_value(table, "sys/id") == ("string", "PROJ-CLS")
    assert single_value(table, "sys/name") == ("string", "classifier")
    assert single_value(table, "sys/tags") == ("string_set", ["prod"])
    assert single_value(table, "sys/trashed") == ("bool", False)
    assert single_value(table, "sys/creation_time") == ("datetime", T0 + timedelta(minutes=10))


def test_model_series_and_files_come_back_with_their_steps(exported):
    root, _ = exported
    table = rows(root, "PROJ-CLS", "models")
    for path, kind, column in (
        ("metrics/acc", "float_series", "float_value"),
        ("logs", "string_series", "string_value"),
    ):
        series = of_path(table, path).sort_by("step")
        points = [
            (s, v, t)
            for s, v, t in zip(
                decimal_array_to_float(series["step"]).tolist(),
                series[column].to_pylist(),
                series["timestamp"].to_pylist(),
                strict=True,
            )
        ]
        expected = MODEL_ATTRS[path][1]
        assert [(s, v) for s, v, _ in points] == [(s, v) for s, v, _ in expected]
        assert [int(t.timestamp() * 1000) for _, _, t in points] == [t for _, _, t in expected]
        assert set(series["attribute_type"].to_pylist()) == {kind}
    model_files = f"models/{sanitize_name('PROJ-CLS')}/"
    card = of_path(table, "files/card").to_pylist()
    assert len(card) == 1 and card[0]["attribute_type"] == "file"
    assert card[0]["file_value"]["path"].startswith(model_files)
    assert file_bytes(root, card[0]["file_value"]["path"]) == BLOBS["card"][0]
    members = {
        row["file_value"]["path"].split("data/set/", 1)[1]: file_bytes(root, row["file_value"]["path"])
        for row in of_path(table, "data/set").to_pylist()
    }
    assert members == {"a.txt": b"AAA", "sub/b.txt": b"BBBB"}
    images = of_path(table, "samples").sort_by("step")
    assert decimal_array_to_float(images["step"]).tolist() == [0.0, 1.0]
    assert [file_bytes(root, f["path"]) for f in images["file_value"].to_pylist()] == [b"\x89PNG-0", b"\x89PNG-1"]


def test_versions_keep_stage_model_and_files(exported):
    root, _ = exported
    for version_id, stage in STAGES.items():
        table = rows(root, version_id, "model_versions")
        assert single_value(table, "sys/stage") == ("string", stage)
        assert single_value(table, "sys/model_id") == ("string", "PROJ-CLS")
        assert single_value(table, "sys/id") == ("string", version_id)
    full = rows(root, "PROJ-CLS-2", "model_versions")
    for path, (kind, value) in VERSION_ATTRS.items():
        if kind != "file":
            assert single_value(full, path) == (kind, sorted(value) if kind == "string_set" else value), path
    weights = of_path(full, "files/weights").to_pylist()[0]["file_value"]["path"]
    assert weights.startswith(f"model_versions/{sanitize_name('PROJ-CLS-2')}/")
    assert file_bytes(root, weights) == BLOBS["w"][0]
    plain = rows(root, "PROJ-CLS-1", "model_versions")
    assert sorted(plain["attribute_path"].to_pylist()) == sorted([*SYS_PATHS, "sys/model_id", "sys/stage", "val/acc"])
    assert single_value(rows(root, "PROJ-CLS-3", "model_versions"), "val/acc") == ("float", 0.8)


def test_manifests_record_the_scope(exported):
    root, results = exported
    for run_id, scope in (("PROJ-CLS", "models"), ("PROJ-EMPTY", "models"), ("PROJ-CLS-2", "model_versions")):
        path = manifest_path(root / "data", PROJECT, run_id, scope)
        assert results[run_id].manifest_path == str(path)
        manifest = read_manifest(path)
        assert manifest.is_complete() and manifest.scope == scope and manifest.source["kind"] == "neptune2"
        assert manifest.source["sys_id"] == run_id and all(
            p.path.startswith(f"{sanitize_name(PROJECT)}/{scope}/") for p in manifest.parts
        )
    assert read_manifest(manifest_path(root / "data", PROJECT, "PROJ-1")).scope is None
    assert read_manifest(manifest_path(root / "data", PROJECT, "PROJ-CLS-2", "model_versions")).source["name"] == "v2"


def test_runs_are_unaffected_by_include_models(exported, fake, tmp_path):
    root, _ = exported
    plain = export_to(tmp_path, fake.api_token, include_models=False)
    assert set(plain) == {"PROJ-1", "PROJ-2"}
    for run_id in plain:
        ordered = [("attribute_path", "ascending"), ("step", "ascending")]
        with_models, without = rows(root, run_id, None).sort_by(ordered), rows(tmp_path, run_id, None).sort_by(ordered)
        assert with_models.equals(without), run_id
    # loaders list the runs only: model registry entities live in scope subfolders
    assert sorted(r.run_id for r in list_stored_runs(root / "data")) == ["PROJ-1", "PROJ-2"]


def test_layout_is_the_peer_tools(exported):
    """`<data>/<project-dir>/models/<model-file>_part_<n>.parquet` and `.../model_versions/...`, complete with part 0."""
    root, _ = exported
    project_folder = root / "data" / sanitize_name(PROJECT)
    expected = {"models": ["PROJ-CLS", "PROJ-EMPTY"], "model_versions": list(STAGES)}
    for scope, ids in expected.items():
        parts = sorted(p.name for p in (project_folder / scope).glob("*_part_*.parquet"))
        assert parts == sorted(part_file_name(i, 0) for i in ids)
        for part in (project_folder / scope).glob("*_part_*.parquet"):
            assert pq.read_schema(part).equals(PARQUET_SCHEMA)
            assert set(pq.read_table(part)["project_id"].to_pylist()) == {PROJECT}
    top = sorted(p.name for p in project_folder.glob("*_part_*.parquet"))
    assert top == sorted(part_file_name(i, 0) for i in ("PROJ-1", "PROJ-2"))
    empty_model = pq.read_table(project_folder / "models" / part_file_name("PROJ-EMPTY", 0))
    assert sorted(empty_model["attribute_path"].to_pylist()) == sorted(SYS_PATHS)


def test_transient_faults_are_survived_for_models(fake, exported, tmp_path):
    fake.faults.update(
        error_share=0.15,
        error_statuses=(500, 503),
        rate_limit_share=0.05,
        retry_after_s=0,
        seed=5,
        endpoints=r"v2\.(search_entries|get_experiment|get_attributes|float_series_values|download_file)",
    )
    fake.requests.clear()
    try:
        retry = RetryPolicy(attempts=10, backoff_seconds=0.05, backoff_max_seconds=0.2)
        src = Neptune2Source(fake.api_token, Settings(workers=3, retry=retry))
        refs = {r.sys_id: r for r in src.list_models(PROJECT, RunSelection())}
        content = src.export_run(refs["PROJ-CLS"], AttributeSelection(), tmp_path / "files")
        table = pa.Table.from_batches(list(content.batches), schema=PARQUET_SCHEMA)
        src.close()
    finally:
        fake.faults.update(error_share=0.0, rate_limit_share=0.0, endpoints=None)
    assert sum(fake.requests.count(status=code) for code in (429, 500, 503)) > 0
    assert sorted(refs) == ["PROJ-CLS", "PROJ-CLS-1", "PROJ-CLS-2", "PROJ-CLS-3", "PROJ-EMPTY"]
    ordered = [("attribute_path", "ascending"), ("step", "ascending")]
    assert table.sort_by(ordered).equals(rows(exported[0], "PROJ-CLS", "models").sort_by(ordered))


def test_a_deleted_model_fails_alone_with_a_scoped_failed_manifest(source, tmp_path):
    gone = RunRef(PROJECT, "PROJ-GONE", "PROJ-GONE", source_kind="neptune2", scope="models")
    options = ExportOptions(
        source="neptune2",
        projects=(PROJECT,),
        data_path=str(tmp_path / "data"),
        files_path=str(tmp_path / "files"),
        include_models=True,
    )
    result = export_run(source, RunPlan(gone, "full", "listed"), options, Settings())
    assert result.status == "failed" and "404" in result.errors[0]["message"]
    manifest = read_manifest(manifest_path(tmp_path / "data", PROJECT, "PROJ-GONE", "models"))
    assert manifest.status == "failed" and manifest.scope == "models" and manifest.parts == []


# --------------------------------------------------------------------------- resume and incremental


def test_second_export_skips_models_and_an_edited_version_is_exported_again(tmp_path):
    ws = registry_workspace()
    with FakeNeptune(ws, port=0) as server:
        first = export_to(tmp_path / "a", server.api_token, include_models=True)
        assert {r.status for r in first.values()} == {"complete"}
        again = export_to(tmp_path / "a", server.api_token, include_models=True)
        assert {r.status for r in again.values()} == {"skipped"}
        version = ws.project(PROJECT).registry_container("PROJ-CLS-1")
        with ws.lock:
            version.attributes["sys/stage"] = store.Attribute("sys/stage", store.STRING, "production")
            version.attributes["val/f1"] = store.Attribute("val/f1", store.FLOAT, 0.66)
            store.touch(version)
        third = export_to(tmp_path / "a", server.api_token, include_models=True)
        fresh = export_to(tmp_path / "b", server.api_token, include_models=True)
    assert {k: r.action for k, r in third.items() if r.action != "skip"} == {"PROJ-CLS-1": "incremental"}
    assert third["PROJ-CLS-1"].status == "complete"
    updated = rows(tmp_path / "a", "PROJ-CLS-1", "model_versions")
    assert single_value(updated, "sys/stage") == ("string", "production")
    assert single_value(updated, "val/f1") == ("float", 0.66)
    ordered = [("attribute_path", "ascending"), ("step", "ascending")]
    assert updated.sort_by(ordered).equals(rows(tmp_path / "b", "PROJ-CLS-1", "model_versions").sort_by(ordered))
    assert fresh["PROJ-CLS-1"].status == "complete"

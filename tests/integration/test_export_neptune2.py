"""The Neptune 2.x source driving the real `neptune` 1.14 client over HTTP against the fake Neptune server."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from neptune_exporter.errors import (
    InvalidOptionError,
    InvalidQueryError,
    InvalidTokenError,
    ProjectNotFoundError,
    SourceUnavailableError,
)
from neptune_exporter.exporters.base import Watermark
from neptune_exporter.exporters.neptune2 import Neptune2Source
from neptune_exporter.fake_neptune import FakeNeptune, store
from neptune_exporter.fake_neptune import datasets as ds
from neptune_exporter.model import AttributeKind, AttributeType, decimal_array_to_float, sanitize_name
from neptune_exporter.selection import AttributeSelection, RunSelection
from neptune_exporter.settings import RetryPolicy, Settings

pytestmark = pytest.mark.integration

T0 = datetime(2024, 1, 1, tzinfo=UTC)
LOSS = [(float(i), 1.0 / (i + 1), 1_700_000_000_000 + i) for i in range(2_345)]
LOGS = [(0.0, "start", 10), (1.0, "ünïcode ✓", 11), (2.5, "", 12), (4.0, "x" * 5000, 13)]
MODEL_BYTES = bytes(range(256)) * 17
GIT = {
    "commit": {
        "commitId": "abc123",
        "message": "m",
        "authorName": "a",
        "authorEmail": "a@x",
        "commitDate": "2024-01-01T00:00:00.000Z",
    },
    "repositoryDirty": False,
    "currentBranch": "main",
}
NOTEBOOK = {
    "notebookId": "6a2c0b8e-0d4a-4d37-9d3e-5cfbdc3b2f2d",
    "notebookName": "explore.ipynb",
    "notebookDeleted": False,
}


ARTIFACT_SOURCE = Path(__file__).resolve()  # a Local artifact file the export can reach
ARTIFACT = {
    "hash": "f" * 64,
    "files": [
        {
            "filePath": "code/test.py",
            "fileHash": "1" * 64,
            "type": "Local",
            "size": ARTIFACT_SOURCE.stat().st_size,
            "metadata": {"file_path": f"file://{ARTIFACT_SOURCE.as_posix()}", "last_modified": "2024-01-01 00:00:00"},
        },
        {
            "filePath": "data/train.csv",
            "fileHash": "2" * 64,
            "type": "S3",
            "size": 123,
            "metadata": {"location": "s3://bucket/train.csv", "last_modified": "2024-01-01 00:00:00"},
        },
    ],
}


def workspace() -> store.Workspace:
    """Every 2.x type on one run, plus plain, trashed and custom-id runs for selection."""
    ws = ds.new_workspace("ws")
    project = ds.add_project(ws, "proj", "PROJ")
    project.files.update(
        {
            "model": store.StoredFile(size=len(MODEL_BYTES), content=MODEL_BYTES, name="weights.bin"),
            "img0": store.StoredFile(size=6, content=b"\x89PNG-0", mime_type="image/png", name="i0.png"),
            "img1": store.StoredFile(size=6, content=b"\x89PNG-1", mime_type="image/png", name="i1.png"),
            "big": store.StoredFile(size=300_000, seed=7, name="big.bin"),
            "fa": store.StoredFile(size=3, content=b"AAA", name="a.txt"),
        }
    )
    ds.add_run(
        ws,
        "ws/proj",
        custom_run_id="custom-one",
        experiment="first name",
        created=T0,
        tags=["best", "t2"],
        attributes={
            "params/lr": ("float", 0.1),
            "params/huge": ("float", 1.7976931348623157e308),
            "params/bs": ("int", -(2**53)),
            "params/opt/name": ("string", 'adam "quoted"'),
            "params/flag": ("bool", False),
            "params/when": ("datetime", T0 + timedelta(milliseconds=1234)),
            "params/set": ("string_set", ["x", "y z"]),
            "params/empty": ("string", ""),
            "metrics/loss": ("float_series", LOSS),
            "monitoring/stdout": ("string_series", LOGS),
            "files/model": ("file", "model"),
            "images": ("file_series", [(0.0, "img0", 5), (1.0, "img1", 6)]),
            "data/set": ("file_set", {"a.txt": "fa", "deep/er/big.bin": "big"}),
            "source_code/git": store.Attribute("source_code/git", "git_ref", GIT),
            "notebook": store.Attribute("notebook", "notebook_ref", NOTEBOOK),
            "datasets/train": store.Attribute("datasets/train", "artifact", ARTIFACT),
        },
    )
    ds.add_run(
        ws,
        "ws/proj",
        created=T0 + timedelta(minutes=1),
        tags=["t2"],
        attributes={"params/lr": ("float", 0.01), "params/opt/name": ("string", "sgd")},
    )
    ds.add_run(ws, "ws/proj", created=T0 + timedelta(minutes=2), trashed=True, attributes={"params/lr": ("float", 0.5)})
    ds.add_run(
        ws,
        "ws/proj",
        custom_run_id="alpha-7",
        created=T0 + timedelta(minutes=3),
        attributes={"params/lr": ("float", 0.2)},
    )
    ds.add_project(ws, "other", "OTH")
    return ws


@pytest.fixture(scope="module")
def fake():
    with FakeNeptune(workspace(), port=0) as server:
        yield server


@pytest.fixture(autouse=True)
def plain_http(monkeypatch):
    """The fake serves http://127.0.0.1; the client's OAuth refuses plain http without this."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


@pytest.fixture()
def source(fake):
    fake.faults.update(error_share=0.0, rate_limit_share=0.0, endpoints=None)
    src = Neptune2Source(fake.api_token, Settings(workers=3))
    yield src
    src.close()


def table_of(content) -> pa.Table:
    return pa.Table.from_batches(list(content.batches))


def rows_of(table: pa.Table, path: str) -> list[dict]:
    return table.filter(pa.compute.equal(table["attribute_path"], path)).to_pylist()


def ids(refs) -> list[str]:
    return [r.sys_id for r in refs]


# --------------------------------------------------------------------------- discovery


def test_access_errors_are_typed_before_any_download(fake):
    bad = base64.b64encode(
        json.dumps({"api_address": fake.base_url, "api_url": fake.base_url, "api_key": "wrong"}).encode()
    ).decode()
    with pytest.raises(InvalidTokenError):
        Neptune2Source("not a token", Settings()).check_access("ws/proj")
    with pytest.raises(ProjectNotFoundError) as missing:
        Neptune2Source(fake.api_token, Settings()).check_access("ws/nope")
    assert "ws/nope" in str(missing.value) and missing.value.remedy
    with pytest.raises(InvalidTokenError):
        Neptune2Source(bad, Settings()).check_access("ws/proj")


def test_lists_projects_of_a_workspace(source):
    assert source.list_projects("ws") == ["ws/other", "ws/proj"]
    assert source.list_projects("elsewhere") == []
    assert source.list_runs("ws/other", RunSelection()) == []


def test_lists_runs_ascending_with_2x_names(source):
    refs = source.list_runs("ws/proj", RunSelection())
    assert ids(refs) == ["PROJ-1", "PROJ-2", "PROJ-4"]
    first = refs[0]
    assert (first.run_id, first.custom_run_id, first.name, first.experiment_name) == (
        "PROJ-1",
        "custom-one",
        "first name",
        None,
    )
    assert first.creation_time == T0 and first.source_kind == "neptune2" and not first.archived


def test_trashed_runs_only_with_include_archived(source):
    refs = source.list_runs("ws/proj", RunSelection(include_archived=True))
    assert ids(refs) == ["PROJ-1", "PROJ-2", "PROJ-3", "PROJ-4"]
    assert [r.archived for r in refs] == [False, False, True, False]


def test_where_query_and_regex_select_exactly(source):
    def chosen(**options):
        return ids(source.list_runs("ws/proj", RunSelection(**options)))

    assert chosen(where="params/lr > 0.05") == ["PROJ-1", "PROJ-4"]
    assert chosen(where='sys/tags contains "best"') == ["PROJ-1"]
    assert chosen(where='params/opt/name == "sgd" or params/lr >= 0.2') == ["PROJ-2", "PROJ-4"]
    assert chosen(query="`params/lr`:float < 0.05") == ["PROJ-2"]
    assert chosen(where="params/lr > 0.05", query='(`sys/tags`:stringSet CONTAINS "t2")') == ["PROJ-1"]
    assert chosen(runs_regex="^alpha") == ["PROJ-4"]
    assert chosen(runs_regex="PROJ-[12]$") == ["PROJ-1", "PROJ-2"]
    assert chosen(run_ids=("custom-one", "PROJ-4")) == ["PROJ-1", "PROJ-4"]
    assert chosen(where="params/lr > 0.05", include_archived=True) == ["PROJ-1", "PROJ-3", "PROJ-4"]


def test_bad_selections_fail_with_typed_errors(source):
    with pytest.raises(InvalidQueryError):
        source.list_runs("ws/proj", RunSelection(query="`params/lr`:float >>> ("))
    with pytest.raises(InvalidQueryError):
        source.list_runs("ws/proj", RunSelection(where="params/lr >"))
    with pytest.raises(InvalidOptionError):
        source.list_runs("ws/proj", RunSelection(experiments_regex="x"))


def test_modified_after_keeps_only_newer_runs(fake, source):
    fake.touch("ws/proj", "PROJ-4")
    since = datetime.now(UTC) - timedelta(minutes=5)
    assert ids(source.list_runs("ws/proj", RunSelection(modified_after=since))) == ["PROJ-4"]


def test_more_than_ten_thousand_runs_are_all_listed():
    ws = ds.new_workspace("ws")
    project = ds.add_project(ws, "big", "BIG")
    total = 10_050
    for i in range(total):  # seven runs share each creation time, also across the 10,000 boundary
        sys_id = f"BIG-{i + 1}"
        project.runs.append(
            store.Run(sys_id, attributes=ds.sys_attributes(sys_id, None, None, T0 + timedelta(seconds=i // 7)))
        )
    with FakeNeptune(ws, port=0) as server:
        refs = Neptune2Source(server.api_token, Settings()).list_runs("ws/big", RunSelection())
    assert len(refs) == total
    assert [r.sys_id for r in refs] == [f"BIG-{i + 1}" for i in range(total)]


# --------------------------------------------------------------------------- export


def export_first(source, tmp_path, selection=AttributeSelection(), watermarks=None):
    ref = source.list_runs("ws/proj", RunSelection(runs_regex="custom-one"))[0]
    progress = []
    content = source.export_run(ref, selection, tmp_path, watermarks, lambda p, b: progress.append((p, b)))
    return content, table_of(content), progress


def test_every_2x_type_comes_back_value_by_value(fake, source, tmp_path):
    source.check_access("ws/proj")
    fake.requests.clear()
    content, table, progress = export_first(source, tmp_path)
    calls = fake.requests.by_endpoint()
    assert calls["v2.get_experiment"] == 1  # the run is opened once
    assert not {"auth.exchange", "v2.spec.leaderboard", "v2.client_config"} & set(calls)  # the session is reused
    assert set(table["run_id"].to_pylist()) == {"PROJ-1"} and set(table["project_id"].to_pylist()) == {"ws/proj"}
    value = {r["attribute_path"]: r for r in table.filter(pa.compute.is_null(table["step"])).to_pylist()}
    assert value["params/lr"]["float_value"] == 0.1 and value["params/lr"]["attribute_type"] == "float"
    assert value["params/huge"]["float_value"] == 1.7976931348623157e308
    assert value["params/bs"]["int_value"] == -(2**53) and value["params/bs"]["attribute_type"] == "int"
    assert value["params/opt/name"]["string_value"] == 'adam "quoted"'
    assert value["params/empty"]["string_value"] == ""
    assert value["params/flag"]["bool_value"] is False
    assert value["params/when"]["datetime_value"] == T0 + timedelta(milliseconds=1234)
    assert value["params/set"]["string_set_value"] == ["x", "y z"]
    assert value["sys/tags"]["string_set_value"] == ["best", "t2"]
    assert value["sys/name"]["string_value"] == "first name"
    assert value["sys/state"]["string_value"] == "Inactive"
    assert value["source_code/git"]["string_value"] == "abc123"
    assert value["notebook"]["string_value"] == "explore.ipynb"

    loss = rows_of(table, "metrics/loss")
    assert [(float(r["step"]), r["float_value"]) for r in loss] == [(s, v) for s, v, _ in LOSS]
    assert [int(r["timestamp"].timestamp() * 1000) for r in loss] == [t for _, _, t in LOSS]
    logs = rows_of(table, "monitoring/stdout")
    assert [(float(r["step"]), r["string_value"], r["attribute_type"]) for r in logs] == [
        (s, v, "string_series") for s, v, _ in LOGS
    ]
    assert sum(p for p, _ in progress) == table.num_rows

    root = tmp_path / sanitize_name("ws/proj")  # file_value.path is relative to the project folder (peer rule)
    run_dir = Path(sanitize_name("PROJ-1"))
    model = rows_of(table, "files/model")[0]["file_value"]["path"]
    assert model == (run_dir / "files/model/model.bin").as_posix()
    assert (root / model).read_bytes() == MODEL_BYTES

    images = rows_of(table, "images")
    assert [(float(r["step"]), (root / r["file_value"]["path"]).read_bytes()) for r in images] == [
        (0.0, b"\x89PNG-0"),
        (1.0, b"\x89PNG-1"),
    ]

    members = {r["file_value"]["path"]: r["attribute_type"] for r in rows_of(table, "data/set")}
    assert members == {
        (run_dir / "data/set/a.txt").as_posix(): "file_set",
        (run_dir / "data/set/deep/er/big.bin").as_posix(): "file_set",
    }
    big = root / run_dir / "data/set/deep/er/big.bin"
    assert big.read_bytes() == store.StoredFile(size=300_000, seed=7).read()

    artifact = rows_of(table, "datasets/train")
    assert [r["attribute_type"] for r in artifact] == ["artifact"]
    listing_path = artifact[0]["file_value"]["path"]
    assert listing_path == (run_dir / "datasets/train/files_list.json").as_posix()
    listing = json.loads((root / listing_path).read_text())
    assert listing["hash"] == "f" * 64
    assert [(f["filePath"], f["fileHash"], f["size"], f["type"]) for f in listing["files"]] == [
        (e["filePath"], e["fileHash"], e["size"], e["type"]) for e in ARTIFACT["files"]
    ]
    copied = root / run_dir / "datasets/train/content/code/test.py"
    assert not copied.is_symlink() and copied.read_bytes() == ARTIFACT_SOURCE.read_bytes()
    assert not (root / run_dir / "datasets/train/content/data/train.csv").exists()

    recorded = {f.relative_path: f for f in content.files}
    assert set(recorded) == {
        model,
        *members,
        *(r["file_value"]["path"] for r in images),
        listing_path,
        copied.relative_to(root).as_posix(),
    }
    for path, exported in recorded.items():
        data = (root / path).read_bytes()
        assert exported.size == len(data) and exported.sha256 == hashlib.sha256(data).hexdigest()
    assert recorded[images[1]["file_value"]["path"]].step == 1.0
    assert content.source_facts["name"] == "first name" and content.source_facts["experiment_name"] is None
    assert not [p for p in tmp_path.rglob(".staging-*")]


def test_attribute_selection_limits_what_is_read(fake, source, tmp_path):
    fake.requests.clear()
    metrics = AttributeSelection(include_kinds=frozenset({AttributeKind.METRICS}))
    content, table, _ = export_first(source, tmp_path, metrics)
    assert set(table["attribute_path"].to_pylist()) == {"metrics/loss"}
    assert not list(tmp_path.rglob("*.*"))
    assert fake.requests.count("v2.download_file") == 0


def test_incremental_export_reads_only_points_after_the_watermark(fake, source, tmp_path):
    marks = {
        "metrics/loss": Watermark(AttributeType.FLOAT_SERIES, last_step=LOSS[-1][0], count=len(LOSS)),
        "monitoring/stdout": Watermark(AttributeType.STRING_SERIES, last_step=2.5, count=0),
        "images": Watermark(AttributeType.FILE_SERIES, last_step=0.0, count=1),
    }
    fake.append_points("ws/proj", "PROJ-1", "metrics/loss", [5000.0, 5001.5], [0.25, 0.125], [1, 2])
    series = AttributeSelection(
        include_kinds=frozenset({AttributeKind.METRICS, AttributeKind.SERIES, AttributeKind.FILES}),
        regex="^(metrics|monitoring|images)",
    )
    _, table, _ = export_first(source, tmp_path, series, marks)
    loss = rows_of(table, "metrics/loss")
    assert [(float(r["step"]), r["float_value"]) for r in loss] == [(5000.0, 0.25), (5001.5, 0.125)]
    assert [r["string_value"] for r in rows_of(table, "monitoring/stdout")] == ["x" * 5000]
    assert [float(r["step"]) for r in rows_of(table, "images")] == [1.0]


def test_long_series_stream_in_bounded_batches(fake, tmp_path):
    ws = ds.new_workspace("ws")
    ds.add_project(ws, "long", "LONG")
    ds.add_run(
        ws,
        "ws/long",
        created=T0,
        attributes={
            "m": store.Attribute("m", store.FLOAT_SERIES, series=store.GeneratedFloatSeries(count=25_000, seed=3))
        },
    )
    with FakeNeptune(ws, port=0) as server:
        src = Neptune2Source(server.api_token, Settings(series_batch_rows=4_000))
        ref = src.list_runs("ws/long", RunSelection())[0]
        batches = [b for b in src.export_run(ref, AttributeSelection(regex="^m$"), tmp_path).batches]
        src.close()
    assert max(b.num_rows for b in batches) <= 4_000 + 1_000
    steps = np.concatenate([decimal_array_to_float(b.column("step")) for b in batches])
    values = np.concatenate([b.column("float_value").to_numpy() for b in batches])
    expected = store.GeneratedFloatSeries(count=25_000, seed=3)
    idx = np.arange(25_000)
    assert np.array_equal(steps, expected.steps_of(idx)) and np.array_equal(values, expected.values_of(idx))


# --------------------------------------------------------------------------- faults


def test_transient_faults_are_survived(fake, tmp_path):
    fake.faults.update(
        error_share=0.2,
        error_statuses=(500, 503),
        rate_limit_share=0.1,
        retry_after_s=0,
        endpoints=r"v2\.(float_series_values|string_series_values|search_entries|download_file)",
        seed=11,
    )
    try:
        src = Neptune2Source(fake.api_token, Settings(workers=3, retry=RetryPolicy(attempts=6, backoff_seconds=1)))
        ref = src.list_runs("ws/proj", RunSelection(runs_regex="custom-one"))[0]
        table = table_of(src.export_run(ref, AttributeSelection(regex="^(metrics|monitoring|files)/"), tmp_path))
        src.close()
    finally:
        fake.faults.update(error_share=0.0, rate_limit_share=0.0, endpoints=None)
    assert fake.requests.count(status=500) + fake.requests.count(status=503) + fake.requests.count(status=429) > 0
    assert [r["float_value"] for r in rows_of(table, "metrics/loss")] == [v for _, v, _ in LOSS] + [0.25, 0.125]
    assert len(rows_of(table, "monitoring/stdout")) == len(LOGS)
    assert (
        tmp_path / sanitize_name("ws/proj") / rows_of(table, "files/model")[0]["file_value"]["path"]
    ).read_bytes() == MODEL_BYTES


def test_persistent_server_errors_surface_as_transient_errors(fake, tmp_path):
    fake.faults.update(error_share=1.0, error_statuses=(503,), endpoints=r"v2\.float_series_values")
    try:
        src = Neptune2Source(
            fake.api_token, Settings(source_retry_timeout_s=1, retry=RetryPolicy(attempts=2, backoff_seconds=1))
        )
        ref = src.list_runs("ws/proj", RunSelection(runs_regex="custom-one"))[0]
        with pytest.raises(SourceUnavailableError) as failure:
            table_of(src.export_run(ref, AttributeSelection(regex="^metrics/"), tmp_path))
        src.close()
    finally:
        fake.faults.update(error_share=0.0, endpoints=None)
    assert failure.value.transient and failure.value.run == "PROJ-1" and failure.value.attribute == "metrics/loss"


# --------------------------------------------------------------------------- the attempt budget (README, Settings)
# A 2.x table read (`v2.search_entries`) is not retried by the client: ours retries it RETRY_ATTEMPTS times, once.


def fail_table_reads(fake, monkeypatch) -> Settings:
    """From now on every table read answers 503 (the fake's FaultConfig); the settings retry after 10 ms (by env)."""
    monkeypatch.setenv("NEPTUNE_EXPORTER_RETRY_BACKOFF_SECONDS", "0.01")
    monkeypatch.setenv("NEPTUNE_EXPORTER_RETRY_BACKOFF_MAX_SECONDS", "0.02")
    fake.requests.clear()
    fake.faults.update(error_share=1.0, error_statuses=(503,), endpoints=r"^v2\.search_entries$")
    return Settings.from_env()


def test_a_failing_table_read_in_discovery_is_attempted_exactly_the_budget(fake, tmp_path, monkeypatch):
    from neptune_exporter.export import ExportOptions
    from neptune_exporter.export_runner import run_export

    options = ExportOptions(
        source="neptune2",
        projects=("ws/proj",),
        data_path=str(tmp_path / "data"),
        files_path=str(tmp_path / "files"),
        api_token=fake.api_token,
        workers=2,
    )
    settings = fail_table_reads(fake, monkeypatch)
    try:
        with pytest.raises(SourceUnavailableError) as failure:
            run_export(options, settings)
    finally:
        fake.faults.update(error_share=0.0, endpoints=None)
    assert settings.retry.attempts == 5
    assert fake.requests.count("v2.search_entries") == fake.requests.count("v2.search_entries", status=503) == 5
    assert "503" in failure.value.message and "fix: retry later" in str(failure.value)


def test_a_failing_table_read_in_a_run_is_attempted_exactly_the_budget(fake, tmp_path, monkeypatch):
    from neptune_exporter.export import ExportOptions, export_one, plan_export
    from neptune_exporter.storage.manifest import read_manifest

    options = ExportOptions(
        source="neptune2",
        projects=("ws/proj",),
        data_path=str(tmp_path / "data"),
        files_path=str(tmp_path / "files"),
        api_token=fake.api_token,
        runs=RunSelection(runs_regex="^alpha-7$"),
    )
    src = Neptune2Source(fake.api_token, Settings())
    try:
        (plan,) = plan_export(src, options, Settings())  # discovery before the fault
        settings = fail_table_reads(fake, monkeypatch)
        try:
            result = export_one(src, plan, options, settings)  # what the export-run task and run_export call
        finally:
            fake.faults.update(error_share=0.0, endpoints=None)
    finally:
        src.close()
    assert fake.requests.count("v2.search_entries") == fake.requests.count("v2.search_entries", status=503) == 5
    assert result.status == "failed" and result.run_id == "PROJ-4"
    (error,) = result.errors
    assert error["error_type"] == "SourceUnavailableError" and error["remedy"] == "retry later; the export resumes"
    assert read_manifest(Path(result.manifest_path)).status == "failed"


# --------------------------------------------------------------------------- the awkward workspace


def expected_atom(attr: store.Attribute):
    """What the 2.x export must hold for a store atom (column, value)."""
    if attr.path == "sys/state":
        return "string_value", "Active" if str(attr.value).lower() in ("running", "active") else "Inactive"
    column = {
        store.FLOAT: "float_value",
        store.INT: "int_value",
        store.STRING: "string_value",
        store.BOOL: "bool_value",
        store.DATETIME: "datetime_value",
        store.STRING_SET: "string_set_value",
    }
    value = sorted(attr.value) if attr.type == store.STRING_SET else attr.value
    return column[attr.type], value


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (np.isnan(a) and np.isnan(b)) or (a == b and np.signbit(a) == np.signbit(b))
    return a == b


def check_run(run: store.Run, project: store.Project, table: pa.Table, files_root: Path) -> int:
    """Compare every 2.x-visible attribute of a store run with the exported rows; the number compared."""
    compared = 0
    base = files_root / sanitize_name(project.identifier)  # what file_value.path is relative to (peer rule)
    by_path: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        by_path.setdefault(row["attribute_path"], []).append(row)
    for attr in run.attributes.values():
        if attr.path.startswith(("sys/forking/", "sys/experiment/")) or attr.type == store.HISTOGRAM_SERIES:
            continue
        rows = by_path.get(attr.path, [])
        compared += 1
        if attr.type in (store.FLOAT, store.INT, store.STRING, store.BOOL, store.DATETIME, store.STRING_SET):
            column, value = expected_atom(attr)
            assert len(rows) == 1 and same(rows[0][column], value), attr.path
        elif attr.type in (store.FLOAT_SERIES, store.STRING_SERIES):
            steps, values, stamps = attr.series.window(None, None, None, len(attr.series))
            column = "float_value" if attr.type == store.FLOAT_SERIES else "string_value"
            assert [float(r["step"]) for r in rows] == list(steps), attr.path
            assert all(same(r[column], v) for r, v in zip(rows, values, strict=True)) and len(rows) == len(values), (
                attr.path
            )
            assert [int(r["timestamp"].timestamp() * 1000) for r in rows] == list(stamps), attr.path
        elif attr.type == store.FILE:
            assert (base / rows[0]["file_value"]["path"]).read_bytes() == project.files[attr.value].read()
        elif attr.type == store.FILE_SERIES:
            _, keys, _ = attr.series.window(None, None, None, len(attr.series))
            assert [float(r["step"]) for r in rows] == [float(i) for i in range(len(keys))]
            assert [(base / r["file_value"]["path"]).read_bytes() for r in rows] == [
                project.files[k].read() for k in keys
            ]
        elif attr.type == store.FILE_SET:
            folder = (Path(sanitize_name(run.sys_id)) / attr.path).as_posix()
            got = {r["file_value"]["path"]: (base / r["file_value"]["path"]).read_bytes() for r in rows}
            assert got == {f"{folder}/{rel}": project.files[key].read() for rel, key in attr.value.items()}
        elif attr.type in (store.GIT_REF, store.NOTEBOOK_REF):  # kept as the commit id / the notebook name
            wanted = attr.value["commit"]["commitId"] if attr.type == store.GIT_REF else attr.value["notebookName"]
            assert [r["string_value"] for r in rows] == [wanted], attr.path
        elif attr.type == store.ARTIFACT:
            listing = json.loads((base / rows[0]["file_value"]["path"]).read_text())
            assert listing["hash"] == attr.value["hash"] and len(rows) == 1, attr.path
            assert [f["filePath"] for f in listing["files"]] == [f["filePath"] for f in attr.value["files"]]
    assert compared and table.num_rows >= compared
    return compared


def test_awkward_workspace_comes_back_value_by_value(tmp_path):
    ws = ds.awkward_workspace()
    project = ws.project(ds.AWKWARD_PROJECT)
    with FakeNeptune(ws, port=0) as server:
        src = Neptune2Source(server.api_token, Settings(workers=4))
        refs = src.list_runs(ds.AWKWARD_PROJECT, RunSelection(include_archived=True))
        assert [r.sys_id for r in refs] == [r.sys_id for r in project.runs]
        compared = 0
        for ref in refs:
            content = src.export_run(ref, AttributeSelection(), tmp_path)
            table = table_of(content)
            assert set(table["attribute_type"].to_pylist()) <= {t.value for t in AttributeType}
            compared += check_run(project.run(ref.sys_id), project, table, tmp_path)
            for exported in content.files:
                data = (tmp_path / sanitize_name(ds.AWKWARD_PROJECT) / exported.relative_path).read_bytes()
                assert exported.size == len(data) and exported.sha256 == hashlib.sha256(data).hexdigest()
        src.close()
    assert compared > ds.AWKWARD_WIDE_ATTRIBUTES
    assert refs[0].name == "exp-alpha" and refs[0].experiment_name is None and refs[0].custom_run_id == "run-basic"


# --------------------------------------------------------------------------- through the export pipeline


def stored_rows(data_root: Path, project_id: str, run_id: str) -> list[tuple]:
    """A run's stored rows as sorted comparable tuples (NaN as text so equal runs compare equal)."""
    from neptune_exporter.storage.parquet import read_run_batches

    table = pa.Table.from_batches(list(read_run_batches(data_root, project_id, run_id)))
    rows = []
    for row in table.drop(["timestamp"]).to_pylist():
        rows.append(tuple(repr(row[k]) for k in sorted(row)))
    return sorted(rows)


def test_pipeline_full_then_incremental_equals_a_fresh_export(tmp_path):
    from neptune_exporter.export import ExportOptions
    from neptune_exporter.export_runner import run_export
    from neptune_exporter.storage.manifest import manifest_path, read_manifest

    ws = ds.awkward_workspace()
    with FakeNeptune(ws, port=0) as server:

        def export(root: Path):
            options = ExportOptions(
                source="neptune2",
                projects=(ds.AWKWARD_PROJECT,),
                data_path=str(root / "data"),
                files_path=str(root / "files"),
                api_token=server.api_token,
                workers=2,
                runs=RunSelection(runs_regex="^run-(basic|gamma)$"),
            )
            return {r.run_id: r for r in run_export(options, Settings(workers=2))}

        first = export(tmp_path / "a")
        assert {k: v.status for k, v in first.items()} == {"AWK-1": "complete", "AWK-8": "complete"}
        manifest = read_manifest(manifest_path(tmp_path / "a" / "data", ds.AWKWARD_PROJECT, "AWK-1"))
        assert manifest.status == "complete" and manifest.source["kind"] == "neptune2"
        assert manifest.source["name"] == "exp-alpha" and manifest.source["experiment_name"] is None
        assert manifest.source["custom_run_id"] == "run-basic"

        server.append_points(ds.AWKWARD_PROJECT, "AWK-1", "metrics/loss", [100.0, 101.0], [0.5, 0.25])
        server.set_attribute(ds.AWKWARD_PROJECT, "AWK-1", "params/float", store.FLOAT, 0.75)
        second = export(tmp_path / "a")
        assert (second["AWK-1"].status, second["AWK-1"].action) == ("complete", "incremental")
        assert second["AWK-8"].status == "skipped"
        assert second["AWK-1"].points < first["AWK-1"].points
        fresh = export(tmp_path / "b")
        assert fresh["AWK-1"].status == "complete"
    assert stored_rows(tmp_path / "a" / "data", ds.AWKWARD_PROJECT, "AWK-1") == stored_rows(
        tmp_path / "b" / "data", ds.AWKWARD_PROJECT, "AWK-1"
    )
    loss = [r for r in stored_rows(tmp_path / "a" / "data", ds.AWKWARD_PROJECT, "AWK-1") if "'metrics/loss'" in r]
    assert len(loss) == 102


def test_closing_the_stream_stops_reading_the_run(tmp_path):
    ws = ds.new_workspace("ws")
    ds.add_project(ws, "many", "MANY")
    series = {f"m/{i:02d}": (store.FLOAT_SERIES, [(0.0, 1.0, 1), (1.0, 2.0, 2)]) for i in range(30)}
    ds.add_run(ws, "ws/many", created=T0, attributes=series)
    with FakeNeptune(ws, port=0) as server:
        src = Neptune2Source(server.api_token, Settings(workers=1))
        ref = src.list_runs("ws/many", RunSelection())[0]
        batches = src.export_run(ref, AttributeSelection(regex="^m/"), tmp_path).batches
        assert next(batches).num_rows == 2
        batches.close()
        read = server.requests.count("v2.float_series_values")
        src.close()
    assert 1 <= read <= 5  # one attribute consumed, at most the queue's two and one in flight read ahead


def test_a_run_deleted_after_listing_fails_with_a_clear_terminal_error(source, tmp_path):
    from neptune_exporter.errors import TerminalError
    from neptune_exporter.model import RunRef

    gone = RunRef("ws/proj", "PROJ-99", "PROJ-99", source_kind="neptune2")
    with pytest.raises(TerminalError) as failure:
        table_of(source.export_run(gone, AttributeSelection(), tmp_path))
    assert not failure.value.transient and failure.value.run == "PROJ-99"
    assert "404" in failure.value.message and "PROJ-99" in failure.value.message and "\x1b" not in failure.value.message

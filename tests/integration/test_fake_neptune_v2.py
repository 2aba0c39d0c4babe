"""The real, unpatched `neptune` 1.14 client (read-only mode) against the fake server's Neptune 2.x API."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from neptune_exporter.fake_neptune import FakeNeptune, datasets, store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

os.environ.setdefault("NEPTUNE_RETRIES_TIMEOUT", "20")  # read by neptune at import: keep retries modest
import neptune  # noqa: E402
from neptune.common.exceptions import NeptuneInvalidApiTokenException  # noqa: E402
from neptune.exceptions import NeptuneInvalidQueryException, ProjectNotFound  # noqa: E402

PROJECT = "ws/proj"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
LOSS = [(float(i) * 0.5, (math.nan if i == 7 else 1.0 / (i + 1)), 1_000 + i) for i in range(2_500)]
ARTIFACT = {
    "hash": "f" * 64,
    "files": [
        {
            "filePath": "train.csv",
            "fileHash": "ab12",
            "type": "S3",
            "size": 123,
            "metadata": {"location": "s3://bucket/train.csv", "last_modified": "2024-01-01 00:00:00"},
        },
        {"filePath": "dir/labels.txt", "fileHash": "cd34", "type": "Local", "size": 7, "metadata": {"file_path": "/x"}},
    ],
}
LOGS = [(float(i), f'line {i} "q" ü', 5_000 + i) for i in range(1_203)]


def _files(project: store.Project) -> None:
    project.files.update(
        {
            "blob/model": store.StoredFile(size=2_500_000, seed=11, name="weights.pt"),
            "blob/img0": store.StoredFile(size=4, content=b"PNG0", mime_type="image/png", name="0.png"),
            "blob/img1": store.StoredFile(size=5, content=b"JPEG1", mime_type="image/jpeg", name="1.jpg"),
            "blob/a": store.StoredFile(size=3, content=b"AAA", name="a.txt"),
            "blob/b": store.StoredFile(size=70_000, seed=3, name="b.bin"),
        }
    )


def build_workspace() -> store.Workspace:
    """Three runs: one with every 2.x type, one trashed, one with another owner and state."""
    ws = datasets.new_workspace("ws")
    project = datasets.add_project(ws, "proj", "PROJ")
    _files(project)
    first = datasets.add_run(
        ws,
        PROJECT,
        custom_run_id="crid-1",
        experiment="exp-a",
        created=T0,
        tags=["a", "b"],
        attributes={
            "params/lr": ("float", 0.125),
            "params/bs": ("int", 64),
            "params/opt": ("string", 'adam "x"'),
            "params/flag": ("bool", True),
            "params/when": ("datetime", T0 + timedelta(milliseconds=1500)),
            "params/set": ("string_set", {"x", "y"}),
            "params/big": ("int", 2**40),
            "metrics/loss": ("float_series", LOSS),
            "logs/out": ("string_series", LOGS),
            "hist": ("histogram_series", [(0.0, {"type": "COUNTING", "edges": [0.0, 1.0], "values": [3.0]}, 1000)]),
            "files/model": ("file", "blob/model"),
            "images": ("file_series", [(0.0, "blob/img0", 1000), (1.0, "blob/img1", 2000)]),
            "artifacts_dir": ("file_set", {"a.txt": "blob/a", "sub/b.bin": "blob/b"}),
        },
    )
    first.attributes["data/train"] = store.Attribute("data/train", "artifact", ARTIFACT)
    datasets.add_run(
        ws,
        PROJECT,
        custom_run_id="crid-2",
        created=T0 + timedelta(hours=1),
        tags=["b"],
        trashed=True,
        attributes={"params/lr": ("float", 0.5)},
    )
    third = datasets.add_run(
        ws, PROJECT, created=T0 + timedelta(hours=2), owner="alice", attributes={"params/lr": ("float", 0.01)}
    )
    third.attributes["sys/state"] = store.Attribute("sys/state", store.STRING, "running")
    third.attributes["source_code/git"] = store.Attribute(
        "source_code/git",
        "git_ref",
        {
            "commit": {
                "commitId": "abc123",
                "message": "m",
                "authorName": "n",
                "authorEmail": "e",
                "commitDate": "2024-01-01T00:00:00.000Z",
            },
            "currentBranch": "main",
        },
    )
    return ws


@pytest.fixture(scope="module", autouse=True)
def insecure_transport() -> Iterator[None]:
    """The neptune client's OAuth session refuses plain http unless OAUTHLIB_INSECURE_TRANSPORT is set."""
    previous = os.environ.get("OAUTHLIB_INSECURE_TRANSPORT")
    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
    yield
    if previous is None:
        os.environ.pop("OAUTHLIB_INSECURE_TRANSPORT", None)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeNeptune]:
    with FakeNeptune(build_workspace()) as server:
        yield server
        assert server.server_errors == []


@pytest.fixture(scope="module")
def project(fake):
    handle = neptune.init_project(project=PROJECT, mode="read-only", api_token=fake.api_token)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def run(fake):
    handle = neptune.init_run(project=PROJECT, with_id="PROJ-1", mode="read-only", api_token=fake.api_token)
    yield handle
    handle.stop()


def dataset_run(fake: FakeNeptune, sys_id: str) -> store.Run:
    return fake.workspace.project(PROJECT).run(sys_id)


# ---------------------------------------------------------------------------- runs table
def test_runs_table_values_match_the_dataset(fake, project):
    df = project.fetch_runs_table(trashed=None).to_pandas().set_index("sys/id")
    assert sorted(df.index) == ["PROJ-1", "PROJ-2", "PROJ-3"]
    first = dataset_run(fake, "PROJ-1")
    row = df.loc["PROJ-1"]
    assert row["params/lr"] == 0.125 and row["params/bs"] == 64 and row["params/big"] == 2**40
    assert row["params/opt"] == 'adam "x"' and row["params/flag"] == True  # noqa: E712
    assert row["params/when"] == datetime(2024, 1, 1, 0, 0, 1, 500000)
    assert set(row["params/set"].split(",")) == {"x", "y"} and set(row["sys/tags"].split(",")) == {"a", "b"}
    assert row["metrics/loss"] == LOSS[-1][1] and row["logs/out"] == LOGS[-1][1]
    assert row["sys/custom_run_id"] == "crid-1" and row["sys/owner"] == first.get("sys/owner")
    assert row["sys/state"] == "Inactive" and df.loc["PROJ-3", "sys/state"] == "Active"
    assert df.loc["PROJ-3", "source_code/git"] == "abc123" and row["data/train"] == ARTIFACT["hash"]
    assert "hist" not in df.columns and not [c for c in df.columns if c.startswith("sys/experiment")]
    assert df.loc["PROJ-2", "sys/trashed"] == True  # noqa: E712


def test_runs_table_filters(project):
    def ids(**kwargs) -> list[str]:
        return sorted(project.fetch_runs_table(columns=["sys/id"], **kwargs).to_pandas()["sys/id"])

    assert ids() == ["PROJ-1", "PROJ-3"]
    assert ids(trashed=True) == ["PROJ-2"]
    assert ids(tag="b", trashed=None) == ["PROJ-1", "PROJ-2"]
    assert ids(tag=["a", "b"]) == ["PROJ-1"]
    assert ids(state="active") == ["PROJ-3"] and ids(state="inactive") == ["PROJ-1"]
    assert ids(owner="alice") == ["PROJ-3"]
    assert ids(id=["PROJ-1", "PROJ-2"], trashed=None) == ["PROJ-1", "PROJ-2"]
    assert ids(query="`params/lr`:float > 0.05", trashed=None) == ["PROJ-1", "PROJ-2"]
    assert ids(query='(`params/opt`:string = "adam \\"x\\"") OR (`sys/owner`:string = "alice")') == ["PROJ-1", "PROJ-3"]


def test_runs_table_sorting_and_columns(project):
    table = project.fetch_runs_table(columns=["params/lr"], sort_by="params/lr", ascending=True, trashed=None)
    df = table.to_pandas()
    assert list(df["sys/id"]) == ["PROJ-3", "PROJ-1", "PROJ-2"] and list(df["params/lr"]) == [0.01, 0.125, 0.5]
    assert set(df.columns) == {"sys/id", "params/lr"}
    newest_first = project.fetch_runs_table(columns=["sys/id"], trashed=None).to_pandas()
    assert list(newest_first["sys/id"]) == ["PROJ-3", "PROJ-2", "PROJ-1"]


def test_bad_query_raises_the_clients_invalid_query_error(project):
    with pytest.raises(NeptuneInvalidQueryException):
        project.fetch_runs_table(query="`params/lr`:float >", columns=["sys/id"]).to_pandas()


# ---------------------------------------------------------------------------- errors
def test_bad_token_and_unknown_project(fake):
    """A token of the right shape whose key this server never issued; a project that does not exist."""
    bad = base64.b64encode(
        json.dumps({"api_address": fake.base_url, "api_url": fake.base_url, "api_key": "not-ours"}).encode()
    ).decode()
    with pytest.raises(NeptuneInvalidApiTokenException):
        neptune.init_project(project=PROJECT, mode="read-only", api_token=bad)
    with pytest.raises(ProjectNotFound):
        neptune.init_project(project="ws/absent", mode="read-only", api_token=fake.api_token)


# ---------------------------------------------------------------------------- one run
def test_structure_and_atoms(fake, run):
    structure = run.get_structure()
    assert set(structure["params"]) == {"lr", "bs", "opt", "flag", "when", "set", "big"}
    assert {"metrics", "logs", "files", "images", "artifacts_dir", "sys", "data"} <= set(structure)
    assert "hist" not in structure and "experiment" not in structure["sys"]
    assert run["params/lr"].fetch() == 0.125 and run["params/bs"].fetch() == 64
    assert run["params/big"].fetch() == 2**40
    assert run["params/opt"].fetch() == 'adam "x"' and run["params/flag"].fetch() is True
    assert run["params/when"].fetch() == T0 + timedelta(milliseconds=1500)
    assert run["params/set"].fetch() == {"x", "y"} and run["sys/tags"].fetch() == {"a", "b"}
    assert run["sys/creation_time"].fetch() == T0
    assert run["sys/custom_run_id"].fetch() == "crid-1"
    assert run["files/model"].fetch_extension() == "pt"
    assert run["sys"].fetch()["state"] == "idle"
    assert run["params"].fetch() == {
        "lr": 0.125,
        "bs": 64,
        "opt": 'adam "x"',
        "flag": True,
        "big": 2**40,
        "when": T0 + timedelta(milliseconds=1500),
    }


def test_artifact_metadata(run):
    assert run["data/train"].fetch_hash() == ARTIFACT["hash"]
    files = run["data/train"].fetch_files_list()
    assert [(f.file_path, f.file_hash, f.type, f.size, f.metadata) for f in files] == [
        (f["filePath"], f["fileHash"], f["type"], f["size"], f["metadata"]) for f in ARTIFACT["files"]
    ]


def test_run_by_custom_run_id(fake):
    handle = neptune.init_run(project=PROJECT, with_id="crid-2", mode="read-only", api_token=fake.api_token)
    try:
        assert handle["sys/id"].fetch() == "PROJ-2" and handle["params/lr"].fetch() == 0.5
    finally:
        handle.stop()


def test_series_values_page_through_every_point(fake, run):
    assert run["metrics/loss"].fetch_last() == LOSS[-1][1]
    df = run["metrics/loss"].fetch_values()
    assert len(df) == len(LOSS) and list(df["step"]) == [p[0] for p in LOSS]
    values = [float(v) for v in df["value"]]
    assert math.isnan(values[7]) and [v for i, v in enumerate(values) if i != 7] == [
        p[1] for i, p in enumerate(LOSS) if i != 7
    ]
    assert [round(t.timestamp() * 1000) for t in df["timestamp"]] == [p[2] for p in LOSS]
    logs = run["logs/out"].fetch_values(include_timestamp=False)
    assert list(logs["value"]) == [p[1] for p in LOGS] and run["logs/out"].fetch_last() == LOGS[-1][1]
    assert fake.requests.count("v2.float_series_values", run="PROJ-1") >= 3


def test_file_downloads(fake, run, tmp_path: Path):
    blobs = fake.workspace.project(PROJECT).files
    run["files/model"].download(str(tmp_path))
    assert (tmp_path / "model.pt").read_bytes() == blobs["blob/model"].read()
    images = tmp_path / "images"
    run["images"].download(str(images))
    assert sorted(os.listdir(images)) == ["0.png", "1.jpeg"]
    assert (images / "0.png").read_bytes() == b"PNG0" and (images / "1.jpeg").read_bytes() == b"JPEG1"
    last = tmp_path / "last"
    run["images"].download_last(str(last))
    assert os.listdir(last) == ["1.jpeg"]


def test_file_set_zip_and_listing(fake, run, tmp_path: Path):
    blobs = fake.workspace.project(PROJECT).files
    run["artifacts_dir"].download(str(tmp_path))
    with zipfile.ZipFile(io.BytesIO((tmp_path / "artifacts_dir.zip").read_bytes())) as archive:
        assert archive.read("a.txt") == b"AAA" and archive.read("sub/b.bin") == blobs["blob/b"].read()
    top = run["artifacts_dir"].list_fileset_files()
    assert [(e.name, e.file_type, e.size) for e in top] == [("a.txt", "file", 3), ("sub", "directory", None)]
    assert [(e.name, e.size) for e in run["artifacts_dir"].list_fileset_files("sub")] == [("b.bin", 70_000)]


# ---------------------------------------------------------------------------- more than 10,000 runs
def many_runs_workspace(count: int) -> store.Workspace:
    """`count` runs with only their sys/* attributes, built directly (add_run checks duplicates: quadratic)."""
    ws = datasets.new_workspace("ws")
    project = datasets.add_project(ws, "many", "MANY")
    for i in range(1, count + 1):
        run = store.Run(f"MANY-{i}")
        run.attributes = datasets.sys_attributes(run.sys_id, None, None, T0 + timedelta(seconds=i))
        project.runs.append(run)
    return ws


@pytest.fixture(scope="module")
def many(fake) -> Iterator[FakeNeptune]:
    with FakeNeptune(many_runs_workspace(10_001)) as server:
        yield server
        assert server.server_errors == []


def test_runs_table_past_ten_thousand_runs_continues_with_a_greater_than_query(many):
    project = neptune.init_project(project="ws/many", mode="read-only", api_token=many.api_token)
    try:
        many.requests.clear()
        df = project.fetch_runs_table(
            columns=["sys/id"], sort_by="sys/creation_time", ascending=True, progress_bar=False
        ).to_pandas()
    finally:
        project.stop()
    assert list(df["sys/id"]) == [f"MANY-{i}" for i in range(1, 10_002)]
    # 1 count request, 100 pages of 100 up to offset 10,000, then the `>` continuation: 1 run, then an empty page
    assert many.requests.count("v2.search_entries") == 1 + 100 + 2
    assert many.requests.count("v2.search_attributes") == 1
    assert many.requests.runs_fetched() == set()  # listing by sys/id is discovery, not a data read


def test_descending_tables_past_ten_thousand_repeat_runs_in_the_real_client(many):
    """The client always continues with `>` (even when sorting descending): past 10,000 runs it starts over
    from the top and never reaches the oldest run. Exporters must page ascending (shown here with a limit)."""
    project = neptune.init_project(project="ws/many", mode="read-only", api_token=many.api_token)
    try:
        ids = list(project.fetch_runs_table(columns=["sys/id"], limit=10_050, progress_bar=False).to_pandas()["sys/id"])
    finally:
        project.stop()
    assert ids[:10_000] == [f"MANY-{i}" for i in range(10_001, 1, -1)]
    assert ids[10_000:10_002] == ["MANY-10001", "MANY-10000"] and "MANY-1" not in ids


# ---------------------------------------------------------------------------- the client's own retries
def test_client_retries_429_5xx_and_resets_on_2x_endpoints(fake, run):
    """One scripted fault per call: the client sleeps Retry-After (1 s) or 2^0 s and asks again."""
    fake.requests.clear()
    calls = [
        ("params/lr", 429, lambda: run["params/lr"].fetch()),
        ("params/bs", 503, lambda: run["params/bs"].fetch()),
        ("metrics/loss", "reset", lambda: run["metrics/loss"].fetch_values()["value"].iloc[0]),
    ]
    values = []
    try:
        for _, fault, call in calls:
            fake.faults.update(
                endpoints=r"^v2\.(get_attribute|float_series_values)$", retry_after_s=1, scripted=[fault]
            )
            values.append(call())
    finally:
        fake.faults.update(endpoints=None, scripted=[])
    assert values == [0.125, 64, LOSS[0][1]]
    assert fake.requests.count("v2.get_attribute", status=429) == 1
    assert fake.requests.count("v2.get_attribute", status=503) == 1
    assert fake.requests.count("v2.get_attribute", status=200) == 2
    assert sum(1 for r in fake.requests.records() if r.reset) == 1
    assert fake.requests.count("v2.float_series_values", status=200) == 4  # 1 retried + 3 pages of 1000


# ---------------------------------------------------------------------------- the awkward workspace, value by value
AWKWARD = "workspace/awkward"
ATOM_TYPES_2X = {"float", "int", "bool", "string", "datetime", "experimentState"}


def _same(actual, expected) -> bool:
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(actual, float) and math.isnan(actual)
    return actual == expected and type(actual) is type(expected)


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[prefix + key] = value
    return flat


def _visible(run: store.Run) -> dict[str, tuple[store.Attribute, str]]:
    from neptune_exporter.fake_neptune.api_v2 import run_attributes, visible_type

    attributes = run_attributes(run).items()  # stored + derived system attributes (system.V2_DERIVED)
    return {path: (attr, t) for path, attr in attributes if (t := visible_type(attr)) is not None}


def _check_atoms(handle, visible) -> None:
    from neptune_exporter.fake_neptune.api_v2 import run_state

    expected = {
        path: (run_state(a.value) if t == "experimentState" else a.value)
        for path, (a, t) in visible.items()
        if t in ATOM_TYPES_2X
    }
    if any(t == "notebookRef" for _, t in visible.values()):  # neptune 1.14's fetch() fails on a notebookRef
        fetched = _flatten({"sys": handle["sys"].fetch()})
        fetched.update({path: handle[path].fetch() for path in expected if not path.startswith("sys/")})
    else:
        fetched = _flatten(handle.fetch())
    assert fetched.keys() == expected.keys()
    wrong = {p: (fetched[p], v) for p, v in expected.items() if not _same(fetched[p], v)}
    assert not wrong


def _check_series(handle, visible) -> None:
    for path, (attr, t) in visible.items():
        if t not in ("floatSeries", "stringSeries"):
            continue
        steps, values, stamps = attr.series.window(None, None, None, len(attr.series))
        df = handle[path].fetch_values()
        assert list(df["step"]) == steps.tolist() if len(df) else len(steps) == 0
        if len(df):
            assert [round(t.timestamp() * 1000) for t in df["timestamp"]] == stamps.tolist()
            cast = float if t == "floatSeries" else str
            assert all(_same(cast(a), cast(e)) for a, e in zip(list(df["value"]), list(values), strict=True)), path


def _check_files(handle, project: store.Project, visible, folder: Path) -> None:
    for path, (attr, t) in visible.items():
        target = folder / path.replace("/", "__")
        if t == "file":
            target.mkdir()
            handle[path].download(str(target))
            assert [f.read_bytes() for f in target.iterdir()] == [project.files[attr.value].read()]
        elif t == "imageSeries":
            handle[path].download(str(target))
            keys = attr.series.window(None, None, None, len(attr.series))[1]
            assert [(target / f"{i}.png").read_bytes() for i in range(len(keys))] == [
                project.files[k].read() for k in keys
            ]
        elif t == "fileSet":
            target.mkdir()
            handle[path].download(str(target))
            with zipfile.ZipFile(next(target.iterdir())) as archive:
                assert {n: archive.read(n) for n in archive.namelist()} == {
                    n: project.files[k].read() for n, k in attr.value.items()
                }
        elif t == "stringSet":
            assert handle[path].fetch() == attr.value


def test_awkward_workspace_value_by_value(awkward_fake, tmp_path: Path):
    project = awkward_fake.workspace.project(AWKWARD)
    for run in project.runs:
        visible = _visible(run)
        handle = neptune.init_run(
            project=AWKWARD, with_id=run.sys_id, mode="read-only", api_token=awkward_fake.api_token
        )
        try:
            structure = _flatten({k: v for k, v in handle.get_structure().items()})
            assert set(structure) == set(visible), run.sys_id
            _check_atoms(handle, visible)
            _check_series(handle, visible)
            folder = tmp_path / run.sys_id
            folder.mkdir()
            _check_files(handle, project, visible, folder)
        finally:
            handle.stop()


def test_awkward_runs_table(awkward_fake):
    project = awkward_fake.workspace.project(AWKWARD)
    handle = neptune.init_project(project=AWKWARD, mode="read-only", api_token=awkward_fake.api_token)
    try:
        df = handle.fetch_runs_table(trashed=None, progress_bar=False).to_pandas().set_index("sys/id")
    finally:
        handle.stop()
    assert sorted(df.index) == sorted(r.sys_id for r in project.runs)
    basic = df.loc["AWK-1"]
    assert basic["params/float"] == 0.1 and basic["params/int"] == -7 and basic["params/nan"] == "NaN"
    assert basic["params/inf"] == "Infinity" and basic["unicode/ścieżka/λ"] == 1.5
    assert basic["params/string"] == project.run("AWK-1").get("params/string")
    assert basic["params/datetime"] == datetime(2024, 2, 3, 4, 5, 6, 789000)
    assert df.loc["AWK-3", "wide/p09999"] == 9999 * 0.5
    assert df.loc["AWK-6", "sys/trashed"] == True  # noqa: E712
    assert not [c for c in df.columns if c.startswith("hist/")]
    legacy = project.run("AWK-1")  # 2.x-only types: the table shows commit id, notebook name, artifact hash
    assert basic["source_code/git"] == legacy.get("source_code/git")["commit"]["commitId"]
    assert basic["source_code/notebook"] == legacy.get("source_code/notebook")["notebookName"]
    assert basic["datasets/train"] == legacy.get("datasets/train")["hash"]

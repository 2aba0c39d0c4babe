"""Unit tests of the fake server's Neptune 2.x wire helpers: types, values, paging, zips, table order, specs."""

from __future__ import annotations

import io
import json
import math
import zipfile
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from bravado_core.spec import Spec

from neptune_exporter.fake_neptune import api_v2, datasets, store
from neptune_exporter.fake_neptune.server import HttpError

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _project_with_runs(count: int) -> store.Project:
    ws = datasets.new_workspace("ws")
    project = datasets.add_project(ws, "proj", "PROJ")
    for i in range(count):
        datasets.add_run(
            ws,
            "ws/proj",
            created=T0 + timedelta(seconds=count - i),
            attributes={"params/x": ("float", float(i % 3) if i != 1 else float("nan")), "h": ("histogram_series", [])},
        )
    return project


def test_datetimes_keep_milliseconds_and_exact_microseconds():
    assert api_v2.iso_datetime(T0) == "2024-01-01T00:00:00.000Z"
    assert api_v2.iso_datetime(T0 + timedelta(milliseconds=1500)) == "2024-01-01T00:00:01.500Z"
    assert api_v2.iso_datetime(T0 + timedelta(microseconds=7)) == "2024-01-01T00:00:00.000007Z"


def test_non_finite_floats_become_jackson_strings():
    assert [api_v2.wire_float(v) for v in (1.5, math.nan, math.inf, -math.inf)] == [1.5, "NaN", "Infinity", "-Infinity"]
    assert json.loads(api_v2.json_response({"v": api_v2.wire_float(math.nan)}).body) == {"v": "NaN"}


def test_two_x_sees_its_own_type_vocabulary():
    def seen(path, type_):
        return api_v2.visible_type(store.Attribute(path, type_))

    assert seen("m", store.FILE_SERIES) == "imageSeries"
    assert seen("f", store.FILE) == "file" and seen("s", store.FILE_SET) == "fileSet"
    assert seen("s", store.STRING_SET) == "stringSet" and seen("x", store.FLOAT_SERIES) == "floatSeries"
    assert seen("sys/state", store.STRING) == "experimentState"
    assert seen("h", store.HISTOGRAM_SERIES) is None
    assert seen("sys/experiment/name", store.STRING) is None and seen("sys/forking/depth", store.INT) is None


def test_series_pages_by_index_for_explicit_and_generated_series():
    explicit = store.ExplicitSeries(store.STRING_SERIES, [0, 1, 2.5], ["a", "b", "c"], [10, 20, 30])
    steps, values, stamps = api_v2.points_by_index(explicit, 1, 5)
    assert steps.tolist() == [1.0, 2.5] and list(values) == ["b", "c"] and stamps.tolist() == [20, 30]
    generated = store.GeneratedFloatSeries(count=10_000, seed=4, start_step=2.0, step_size=0.5)
    steps, values, stamps = api_v2.points_by_index(generated, 9_998, 1000)
    expected = generated.window(None, None, None, 10_000)
    assert steps.tolist() == expected[0][-2:].tolist() and values.tolist() == expected[1][-2:].tolist()
    assert api_v2.points_by_index(generated, 10_000, 10)[0].size == 0


def test_zip_stream_is_a_valid_zip_of_the_file_set():
    project = store.Project("ws", "proj", "PROJ")
    project.files["a"] = store.StoredFile(size=3, content=b"AAA", name="a.txt")
    project.files["b"] = store.StoredFile(size=300_000, seed=9, name="b.bin")
    data = b"".join(api_v2.zip_stream(project, {"a.txt": "a", "sub/b.bin": "b"}, "dir"))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == ["a.txt", "sub/b.bin"]
        assert archive.read("a.txt") == b"AAA"
        assert archive.read("sub/b.bin") == project.files["b"].read()


def test_file_set_listing_shows_direct_children():
    project = store.Project("ws", "proj", "PROJ")
    project.files["k"] = store.StoredFile(size=5, content=b"12345", name="x")
    members = {"a.txt": "k", "sub/b.txt": "k", "sub/deeper/c.txt": "k"}
    top = api_v2.list_file_set(members, project, "", "T")
    assert [(e["name"], e["fileType"], e.get("size")) for e in top] == [
        ("a.txt", "file", 5),
        ("sub", "directory", None),
    ]
    sub = api_v2.list_file_set(members, project, "sub", "T")
    assert [(e["name"], e["fileType"]) for e in sub] == [("b.txt", "file"), ("deeper", "directory")]
    with pytest.raises(HttpError):
        api_v2.list_file_set(members, project, "nope", "T")


def test_table_order_and_the_greater_than_continuation_agree():
    project = _project_with_runs(7)
    table = api_v2.TableQuery("", "sys/creation_time", False, None, 0, 100)
    ordered = api_v2.select_runs(project.runs, table)
    assert [r.sys_id for r in ordered] == [f"PROJ-{i}" for i in range(7, 0, -1)]
    last = api_v2.iso_datetime(ordered[2].get("sys/creation_time"))
    rest = api_v2.TableQuery(f'(`sys/creation_time`:datetime > "{last}")', "sys/creation_time", False, None, 0, 100)
    assert [r.sys_id for r in api_v2.select_runs(project.runs, rest)] == [r.sys_id for r in ordered[3:]]


def test_table_sorts_descending_with_nan_and_missing_values_last():
    project = _project_with_runs(5)
    del project.runs[4].attributes["params/x"]
    table = api_v2.TableQuery("", "params/x", True, None, 0, 100)
    assert [r.sys_id for r in api_v2.select_runs(project.runs, table)] == [
        "PROJ-3",
        "PROJ-1",
        "PROJ-4",
        "PROJ-2",
        "PROJ-5",
    ]


def test_bad_nql_is_a_syntax_error_the_client_recognises():
    with pytest.raises(HttpError) as caught:
        api_v2.select_runs(_project_with_runs(1).runs, api_v2.TableQuery("(`a`:float >", None, True, None, 0, 10))
    assert caught.value.status == 400 and caught.value.extra["title"] == "Syntax error"
    assert "position" in caught.value.message


def test_table_entries_hide_histograms_and_keep_requested_columns():
    project = _project_with_runs(1)
    run = project.runs[0]
    every = api_v2.table_entry(project, run, None)
    names = {a["name"] for a in every["attributes"]}
    assert "h" not in names and "params/x" in names and "sys/experiment/name" not in names
    chosen = api_v2.table_entry(project, run, ("sys/id", "params/x", "missing"))
    assert [a["name"] for a in chosen["attributes"]] == ["sys/id", "params/x"]
    assert api_v2.reads_run_data(("sys/id",)) is False and api_v2.reads_run_data(("sys/id", "params/x"))


@pytest.mark.parametrize("name", ["backend", "leaderboard", "artifacts"])
def test_specs_load_in_bravado_and_cover_the_client_operations(name):
    raw = json.loads(api_v2.spec_bytes(name))
    assert "host" not in raw
    spec = Spec.from_dict(
        raw,
        origin_url=f"http://127.0.0.1:1/api/{name}/swagger.json",
        config={"validate_swagger_spec": True, "use_models": True},
    )
    operations = {op.operation_id for resource in spec.resources.values() for op in resource.operations.values()}
    wanted = {
        "backend": {"getClientConfig", "exchangeApiToken", "getProject", "listProjects", "listOrganizations"},
        "leaderboard": {
            "getExperiment",
            "getExperimentAttributes",
            "getFloatAttribute",
            "getIntAttribute",
            "getBoolAttribute",
            "getStringAttribute",
            "getDatetimeAttribute",
            "getFileAttribute",
            "getStringSetAttribute",
            "getFloatSeriesAttribute",
            "getStringSeriesAttribute",
            "getFloatSeriesValues",
            "getStringSeriesValues",
            "getImageSeriesValues",
            "getImageSeriesValue",
            "downloadAttribute",
            "prepareForDownloadFileSetAttributeZip",
            "getDownloadPrepareRequest",
            "lsFileSetAttribute",
            "searchLeaderboardAttributes",
            "searchLeaderboardEntries",
            "getArtifactAttribute",
        },
        "artifacts": {"listArtifactFiles"},
    }[name]
    assert wanted <= operations
    assert api_v2.spec_bytes(name) is api_v2.spec_bytes(name)  # read once


def test_download_ids_round_trip_and_reject_garbage():
    project = store.Project("ws", "proj", "PROJ")
    run = store.Run("PROJ-1")
    token = api_v2.encode_download_id(api_v2.Holder(project, run), "dir/a")
    assert api_v2.decode_download_id(token) == (project.uuid, run.uuid, "dir/a")
    with pytest.raises(HttpError):
        api_v2.decode_download_id("%%%")


def test_generated_series_sorting_key_uses_last_value():
    run = store.Run(
        "PROJ-1", attributes={"m": store.Attribute("m", store.FLOAT_SERIES, series=store.GeneratedFloatSeries(count=3))}
    )
    assert api_v2.sort_key(run, "m")[1] == pytest.approx(float(store.GeneratedFloatSeries(count=3).last()[1]))
    assert api_v2.sort_key(run, "absent") == (2,)
    assert np.isfinite(api_v2.sort_key(run, "m")[1])


def test_selection_cache_reuses_until_runs_change():
    ws = datasets.new_workspace("ws")
    project = datasets.add_project(ws, "proj", "PROJ")
    datasets.add_run(ws, "ws/proj", created=T0, attributes={"p": ("int", 1)})
    cache = api_v2.SelectionCache(size=2)
    table = api_v2.TableQuery("`p`:int = 2", "sys/creation_time", True, None, 0, 100)
    assert cache.get(project, table) == []
    assert cache.get(project, table) is cache.get(project, table)
    datasets.set_attribute(ws, "ws/proj", "PROJ-1", "p", "int", 2)  # bumps sys/modification_time
    assert [r.sys_id for r in cache.get(project, table)] == ["PROJ-1"]
    datasets.add_run(ws, "ws/proj", created=T0, attributes={"p": ("int", 2)})
    assert len(cache.get(project, table)) == 2


def test_table_pagination_stops_at_ten_thousand_like_neptune():
    ok = api_v2.TableQuery.from_body({"pagination": {"offset": 9_900, "limit": 100}})
    assert (ok.offset, ok.limit, ok.descending, ok.columns) == (9_900, 100, True, None)
    with pytest.raises(HttpError) as caught:
        api_v2.TableQuery.from_body({"pagination": {"offset": 10_000, "limit": 100}})
    assert caught.value.status == 400 and "10000" in caught.value.message


def test_zip_of_a_missing_blob_fails_before_streaming():
    with pytest.raises(HttpError):
        api_v2.zip_stream(store.Project("ws", "proj", "PROJ"), {"a.txt": "nope"}, "dir")


def test_experiment_ids_resolve_like_neptune():
    from neptune_exporter.fake_neptune.auth import AuthService
    from neptune_exporter.fake_neptune.faults import FaultConfig
    from neptune_exporter.fake_neptune.server import RequestLog, ServerContext

    ws = datasets.new_workspace("ws")
    project = datasets.add_project(ws, "proj", "PROJ")
    run = datasets.add_run(ws, "ws/proj", custom_run_id="my-run")
    ctx = ServerContext(ws, FaultConfig(), RequestLog(), AuthService("http://x", FaultConfig()), "http://x")
    for experiment_id in ("ws/proj/PROJ-1", "ws/proj/my-run", run.uuid):
        assert api_v2.find_holder(ctx, experiment_id).run is run
    holder = api_v2.find_holder(ctx, project.uuid)
    assert holder.run is None and holder.attributes()["sys/id"].value == "PROJ"
    for unknown in ("ws/proj/PROJ-2", "PROJ-1", "ws/other/PROJ-1"):
        with pytest.raises(HttpError) as caught:
            api_v2.find_holder(ctx, unknown)
        assert caught.value.status == 404

"""Neptune3Source with the real neptune-query against the fake server: every value back, filters, errors, streaming."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from neptune_exporter.errors import (
    InvalidQueryError,
    InvalidRegexError,
    InvalidTokenError,
    ProjectNotFoundError,
    UnsupportedError,
)
from neptune_exporter.exporters.base import Watermark
from neptune_exporter.exporters.neptune3 import Neptune3Source
from neptune_exporter.fake_neptune import FakeNeptune, api_v3, store
from neptune_exporter.fake_neptune.datasets import awkward_workspace
from neptune_exporter.model import AttributeKind, AttributeType, decimal_array_to_float, sanitize_name
from neptune_exporter.selection import AttributeSelection, RunSelection
from neptune_exporter.settings import Settings
from tests.integration.mlflow_server import mlflow_server  # noqa: F401  (session fixture)

pytestmark = pytest.mark.integration

PROJECT = "workspace/awkward"
SMALL_WINDOWS = Settings(series_batch_rows=7, attributes_per_request=300, source_retry_timeout_s=5)
DATA_ENDPOINTS = ("v3.float_series", "v3.series", "v3.signed_url", "storage.download")


@pytest.fixture(scope="module")
def fake():
    with FakeNeptune(awkward_workspace(), port=0) as server:
        yield server


@pytest.fixture(scope="module")
def source(fake):
    return Neptune3Source(fake.api_token, SMALL_WINDOWS)


@pytest.fixture(scope="module")
def all_runs(source):
    return {ref.run_id: ref for ref in source.list_runs(PROJECT, RunSelection(include_archived=True))}


def store_run(fake, sys_id: str) -> store.Run:
    return fake.workspace.project(PROJECT).run(sys_id)


def export(source, ref, files_root: Path, selection=AttributeSelection(), watermarks=None):
    content = source.export_run(ref, selection, files_root, watermarks)
    batches = list(content.batches)
    table = pa.Table.from_batches(batches) if batches else None
    return table, content, batches


def rows_by_path(table: pa.Table | None) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    if table is None:
        return grouped
    steps = decimal_array_to_float(table.column("step"))
    for row, step in zip(table.to_pylist(), steps, strict=True):
        row["step_float"] = None if np.isnan(step) else float(step)
        grouped.setdefault(row["attribute_path"], []).append(row)
    return grouped


def same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))


def ms(value: datetime) -> datetime:
    """The datetime as the wire carries it: whole milliseconds since the epoch."""
    return datetime.fromtimestamp(round(value.timestamp() * 1000) / 1000, UTC)


def check_file(files_root: Path, relative: str, blob: store.StoredFile) -> None:
    data = (files_root / sanitize_name(PROJECT) / relative).read_bytes()  # where the peer's loaders look
    assert data == blob.read() and len(data) == blob.size


def check_atom(attr: store.Attribute, row: dict, project: store.Project, files_root: Path) -> None:
    assert row["attribute_type"] == attr.type and row["step"] is None
    value = attr.value
    if attr.type == store.FLOAT:
        assert same_float(row["float_value"], value)
    elif attr.type == store.INT:
        assert row["int_value"] == value
    elif attr.type == store.STRING:
        assert row["string_value"] == value
    elif attr.type == store.BOOL:
        assert row["bool_value"] is value
    elif attr.type == store.DATETIME:
        assert row["datetime_value"] == ms(value)
    elif attr.type == store.STRING_SET:
        assert row["string_set_value"] == sorted(value)
    elif attr.type == store.FILE:
        check_file(files_root, row["file_value"]["path"], project.files[value])


def check_series(attr: store.Attribute, rows: list[dict], project: store.Project, files_root: Path, after=None):
    steps, values, stamps = attr.series.window(after, None, None, len(attr.series) + 1)
    rows = sorted(rows, key=lambda r: r["step_float"])
    assert [r["step_float"] for r in rows] == [round(float(s), 6) for s in steps]
    assert [int(r["timestamp"].timestamp() * 1000) for r in rows] == [int(t) for t in stamps]
    assert {r["attribute_type"] for r in rows} == {attr.type}
    for row, value in zip(rows, values, strict=True):
        if attr.type == store.FLOAT_SERIES:
            assert same_float(row["float_value"], float(value))
        elif attr.type == store.STRING_SERIES:
            assert row["string_value"] == value
        elif attr.type == store.HISTOGRAM_SERIES:
            assert row["histogram_value"] == value
        else:
            check_file(files_root, row["file_value"]["path"], project.files[value])


def check_run(fake, ref, table, files_root: Path) -> None:
    """Every attribute the 3.x API shows comes back exactly; nothing else comes back."""
    project = fake.workspace.project(PROJECT)
    run = store_run(fake, ref.sys_id)
    got = rows_by_path(table)
    expected = {a.path: a for a in api_v3.visible_attributes(run) if a.type not in store.SERIES_TYPES or len(a.series)}
    assert set(got) == set(expected)
    assert {r["run_id"] for rows in got.values() for r in rows} == {ref.run_id}
    for path, attr in expected.items():
        if attr.type in store.SERIES_TYPES:
            check_series(attr, got[path], project, files_root)
        else:
            assert len(got[path]) == 1
            check_atom(attr, got[path][0], project, files_root)


# ---------------------------------------------------------------------------- discovery


def test_listing_finds_runs_with_and_without_custom_ids(source, all_runs):
    assert set(all_runs) == {
        "run-basic",
        "run-empty",
        "run-wide",
        "run-parent",
        "run-child",
        "run-trashed",
        "AWK-7",
        "run-gamma",
    }
    assert all_runs["AWK-7"].custom_run_id is None and all_runs["AWK-7"].experiment_name == "exp-beta"
    assert all_runs["run-basic"].experiment_name == "exp-alpha" and all_runs["run-empty"].experiment_name is None
    assert all_runs["run-trashed"].archived and not all_runs["run-basic"].archived
    assert all_runs["run-basic"].creation_time == datetime(2024, 1, 1, 1, tzinfo=UTC)
    assert all(ref.modification_time is not None for ref in all_runs.values())
    default = {ref.run_id for ref in source.list_runs(PROJECT, RunSelection())}
    assert default == set(all_runs) - {"run-trashed"}


@pytest.mark.parametrize(
    "selection, expected",
    [
        (RunSelection(runs_regex="^run-(parent|child)$"), {"run-parent", "run-child"}),
        (RunSelection(runs_regex="AWK-[78]"), {"AWK-7", "run-gamma"}),  # sys ids match too
        (RunSelection(experiments_regex="^exp-(fork|beta)"), {"run-parent", "run-child", "AWK-7"}),
        (RunSelection(where="params/lr > 0.02"), {"run-parent", "run-child"}),
        (RunSelection(where="params/lr > 0.02", include_archived=True), {"run-parent", "run-child", "run-trashed"}),
        (RunSelection(where='sys/tags contains "wide" or sys/tags contains "ünï"'), {"run-wide", "run-gamma"}),
        (
            RunSelection(where="not exists(params/lr) and not exists(params/float)"),
            {"run-empty", "run-wide", "run-gamma"},
        ),
        (RunSelection(where='sys/name matches "^exp-(al|ga)"'), {"run-basic", "run-gamma"}),
        (RunSelection(where="params/bool == true and params/int < 0"), {"run-basic"}),
        (RunSelection(run_ids=("run-empty", "AWK-7")), {"run-empty", "AWK-7"}),
        (RunSelection(where='sys/forking/parent == "run-parent" and sys/forking/step >= 4'), {"run-child"}),
        (RunSelection(where="sys/forking/depth > 0"), {"run-child"}),
    ],
)
def test_run_filters_select_exactly(source, selection, expected):
    assert {ref.run_id for ref in source.list_runs(PROJECT, selection)} == expected


def test_modified_after_is_pushed_to_the_server(fake, source):
    cutoff = datetime(2024, 1, 1, 5, 30, tzinfo=UTC)
    assert {r.run_id for r in source.list_runs(PROJECT, RunSelection(modified_after=cutoff))} == {"AWK-7", "run-gamma"}


# ---------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    "run_id", ["run-basic", "run-empty", "run-parent", "run-child", "run-trashed", "AWK-7", "run-gamma"]
)
def test_every_value_comes_back(fake, source, all_runs, tmp_path, run_id):
    table, content, batches = export(source, all_runs[run_id], tmp_path)
    check_run(fake, all_runs[run_id], table, tmp_path)
    assert max(b.num_rows for b in batches) <= max(
        SMALL_WINDOWS.series_batch_rows, SMALL_WINDOWS.attributes_per_request
    )


def test_ten_thousand_attributes(fake, source, all_runs, tmp_path):
    table, _, batches = export(source, all_runs["run-wide"], tmp_path)
    check_run(fake, all_runs["run-wide"], table, tmp_path)
    assert sum(1 for p in table.column("attribute_path").to_pylist() if p.startswith("wide/")) == 10_000
    assert max(b.num_rows for b in batches) <= SMALL_WINDOWS.attributes_per_request


def test_files_are_byte_identical_and_recorded(fake, source, all_runs, tmp_path):
    ref = all_runs["run-basic"]
    table, content, _ = export(source, ref, tmp_path)
    project = fake.workspace.project(PROJECT)
    run = store_run(fake, ref.sys_id)
    by_attribute = {(f.attribute_path, f.step): f for f in content.files}
    assert {k[0] for k in by_attribute} == {"files/model", "files/empty", "files/big", "images/samples"}
    for (path, step), exported in by_attribute.items():
        attr = run.attributes[path]
        key = attr.value if step is None else attr.series.window(None, step, step, 1)[1][0]
        data = (tmp_path / sanitize_name(PROJECT) / exported.relative_path).read_bytes()
        assert data == project.files[key].read()
        assert exported.size == len(data) and exported.sha256 == hashlib.sha256(data).hexdigest()
        assert exported.relative_path.split("/")[0] == sanitize_name("run-basic")  # relative to the project folder
    assert not (tmp_path / ".staging").exists() or not any((tmp_path / ".staging").iterdir())


def test_fork_child_has_only_its_own_points(fake, source, all_runs, tmp_path):
    table, _, _ = export(source, all_runs["run-child"], tmp_path)
    loss = rows_by_path(table)["metrics/loss"]
    assert sorted(r["step_float"] for r in loss) == [5.0, 6.0, 7.0, 8.0, 9.0]
    assert sorted(r["float_value"] for r in loss) == [105.0, 106.0, 107.0, 108.0, 109.0]


def test_fork_relation_is_parameter_rows_and_source_facts(source, all_runs, tmp_path):
    table, content, _ = export(source, all_runs["run-child"], tmp_path)
    got = rows_by_path(table)
    assert [(r["attribute_type"], r["string_value"]) for r in got["sys/forking/parent"]] == [("string", "run-parent")]
    assert [(r["attribute_type"], r["float_value"]) for r in got["sys/forking/step"]] == [("float", 4.0)]
    assert [r["int_value"] for r in got["sys/forking/depth"]] == [1]
    assert content.source_facts == {"fork_parent": "run-parent", "fork_step": 4.0}
    _, parent, _ = export(source, all_runs["run-parent"], tmp_path)
    assert parent.source_facts == {}


@pytest.mark.parametrize(
    "selection",
    [
        AttributeSelection(regex="^metrics/"),
        AttributeSelection(names=("params/lr",)),
        AttributeSelection(exclude_kinds=frozenset({AttributeKind.PARAMETERS})),
        AttributeSelection(include_kinds=frozenset()),
    ],
)
def test_fork_facts_whatever_the_attribute_selection(source, all_runs, tmp_path, selection):
    table, content, _ = export(source, all_runs["run-child"], tmp_path, selection)
    assert not {p for p in rows_by_path(table) if p.startswith("sys/forking/")}  # not selected: no rows
    assert content.source_facts == {"fork_parent": "run-parent", "fork_step": 4.0}


# ---------------------------------------------------------------------------- selection and increments


def test_attribute_selection_by_regex_names_and_kinds(source, all_runs, tmp_path):
    ref = all_runs["run-basic"]
    table, _, _ = export(source, ref, tmp_path, AttributeSelection(regex="^metrics/", names=("params/int",)))
    assert set(rows_by_path(table)) == {"metrics/loss", "metrics/float_steps", "metrics/nonfinite", "params/int"}
    table, content, _ = export(
        source,
        ref,
        tmp_path,
        AttributeSelection(exclude_kinds=frozenset({AttributeKind.FILES, AttributeKind.PARAMETERS})),
    )
    types = set(table.column("attribute_type").to_pylist())
    assert types == {"float_series", "string_series", "histogram_series"} and content.files == []


def test_incremental_export_fetches_only_new_points(fake, source, all_runs, tmp_path):
    ref = all_runs["run-basic"]
    marks = {
        "metrics/loss": Watermark(AttributeType.FLOAT_SERIES, 49.0, 50),
        "metrics/float_steps": Watermark(AttributeType.FLOAT_SERIES, 0.29, 2),
        "logs/stdout": Watermark(AttributeType.STRING_SERIES, 4.0, 5),
    }
    table, _, _ = export(
        source, ref, tmp_path, AttributeSelection(exclude_kinds=frozenset({AttributeKind.FILES})), marks
    )
    got = rows_by_path(table)
    run = store_run(fake, ref.sys_id)
    check_series(run.attributes["metrics/loss"], got["metrics/loss"], None, tmp_path, after=49.0)
    assert [r["step_float"] for r in got["metrics/float_steps"]] == [1.0, 1.5]
    assert "logs/stdout" not in got  # nothing after the last exported step
    assert got["params/float"][0]["float_value"] == 0.1  # parameters come again


def test_long_series_stream_in_bounded_batches(fake, tmp_path):
    long = store.GeneratedFloatSeries(count=25_000, seed=3, start_step=0.5, step_size=0.25)
    run = fake.add_run(
        PROJECT,
        custom_run_id="run-long",
        attributes={"m/long": store.Attribute("m/long", store.FLOAT_SERIES, series=long)},
    )
    source = Neptune3Source(fake.api_token, Settings(series_batch_rows=4_000, source_retry_timeout_s=5))
    ref = next(r for r in source.list_runs(PROJECT, RunSelection(runs_regex="^run-long$")))
    table, _, batches = export(source, ref, tmp_path, AttributeSelection(regex="^m/"))
    assert max(b.num_rows for b in batches) <= 4_000 and table.num_rows == 25_000
    steps = np.sort(decimal_array_to_float(table.column("step")))
    assert np.array_equal(steps, np.round(long.steps_of(np.arange(25_000)), 6))
    order = np.argsort(decimal_array_to_float(table.column("step")))
    assert np.array_equal(table.column("float_value").to_numpy()[order], long.values_of(np.arange(25_000)))
    assert run.sys_id == ref.sys_id


# ---------------------------------------------------------------------------- errors


def bad_token(fake) -> str:
    payload = json.loads(base64.b64decode(fake.api_token))
    payload["api_key"] = "wrong-key"
    return base64.b64encode(json.dumps(payload).encode()).decode()


def test_bad_inputs_fail_fast_with_one_typed_error(fake):
    fake.requests.clear()
    with pytest.raises(InvalidTokenError):
        Neptune3Source(bad_token(fake), SMALL_WINDOWS).check_access(PROJECT)
    with pytest.raises(InvalidTokenError):
        Neptune3Source("definitely-not-a-token", SMALL_WINDOWS).check_access(PROJECT)
    good = Neptune3Source(fake.api_token, SMALL_WINDOWS)
    with pytest.raises(ProjectNotFoundError) as info:
        good.check_access("workspace/no-such-project")
    assert "no-such-project" in info.value.message and info.value.remedy
    with pytest.raises(InvalidRegexError):
        good.list_runs(PROJECT, RunSelection(runs_regex="(unclosed"))
    with pytest.raises(InvalidQueryError) as info:
        good.list_runs(PROJECT, RunSelection(where="params/lr >> 1"))
    assert "position" in info.value.message
    with pytest.raises(UnsupportedError):
        good.list_projects("workspace")
    assert not any(fake.requests.count(endpoint=e) for e in DATA_ENDPOINTS)


# ---------------------------------------------------------------------------- transient faults


@pytest.fixture()
def faulty(fake):
    yield fake
    fake.faults.clear()


def test_flaky_server_still_gives_every_value(faulty, all_runs, tmp_path):
    faulty.faults.update(
        error_share=0.15, reset_share=0.05, error_statuses=(500, 503), endpoints=r"float_series|series|storage", seed=11
    )
    source = Neptune3Source(faulty.api_token, SMALL_WINDOWS)
    faulty.requests.clear()
    table, _, _ = export(source, all_runs["run-basic"], tmp_path)
    faulty.faults.clear()
    assert faulty.requests.count(status=500) + faulty.requests.count(status=503) > 0
    check_run(faulty, all_runs["run-basic"], table, tmp_path)


@pytest.mark.timeout(60)  # neptune-query would otherwise retry for 30 minutes
def test_a_server_that_keeps_failing_gives_a_transient_error(faulty, all_runs, tmp_path):
    from neptune_exporter.errors import SourceUnavailableError

    faulty.faults.update(error_share=1.0, error_statuses=(503,), endpoints=r"^v3\.", seed=1)
    source = Neptune3Source(faulty.api_token, Settings(source_retry_timeout_s=1, series_batch_rows=7))
    with pytest.raises(SourceUnavailableError) as info:
        export(source, all_runs["run-parent"], tmp_path)
    assert info.value.transient and info.value.run == "run-parent"


@pytest.mark.timeout(120)
def test_a_run_failing_after_the_clients_window_is_attempted_exactly_the_budget(faulty, tmp_path, monkeypatch):
    """neptune-query retries a request for its window (time-based); ours then re-attempts the run, exactly 5 times."""
    from neptune_exporter.export import ExportOptions, export_one, plan_export
    from neptune_exporter.exporters.base import RunSelection

    monkeypatch.setenv("NEPTUNE_EXPORTER_RETRY_BACKOFF_SECONDS", "0.01")  # real, small backoff of our layer
    settings = Settings(source_retry_timeout_s=1, retry=Settings.from_env().retry)
    options = ExportOptions(
        source="neptune3",
        projects=(PROJECT,),
        data_path=str(tmp_path / "data"),
        files_path=str(tmp_path / "files"),
        api_token=faulty.api_token,
        runs=RunSelection(runs_regex="^run-basic$"),
    )
    source = Neptune3Source(faulty.api_token, settings)
    (plan,) = plan_export(source, options, settings)
    faulty.requests.clear()
    faulty.faults.update(error_share=1.0, error_statuses=(503,), endpoints=r"^v3\.float_series$")
    result = export_one(source, plan, options, settings)  # what the export-run task and run_export call
    assert settings.retry.attempts == 5
    assert faulty.requests.count("v3.search") == 5  # one per attempt of the run: 5, not 5 x 5
    assert faulty.requests.count("v3.float_series") == faulty.requests.count("v3.float_series", status=503) >= 5
    assert result.status == "failed" and result.errors[0]["error_type"] == "SourceUnavailableError"
    assert (
        result.errors[0]["remedy"]
        == "check the server and the network; the export resumes where it stopped when run again"
    )


# ---------------------------------------------------------------------------- through the export pipeline


def check_files_where_the_peer_looks(data_root: Path, files_root: Path) -> int:
    """Every file row resolves as the peer's loaders resolve it (`<files>/<sanitized project>/<path>`) to the manifest's
    bytes; returns the number of file rows checked."""
    from neptune_exporter.storage.exported_run import list_stored_runs
    from neptune_exporter.storage.parquet import read_run_batches

    checked = 0
    for stored in list_stored_runs(data_root, projects=[PROJECT]):
        recorded = {f["path"]: f for f in stored.manifest.files}
        rows = [
            row
            for batch in read_run_batches(data_root, PROJECT, stored.run_id, columns=["attribute_path", "file_value"])
            for row in batch.to_pylist()
            if row["file_value"] is not None
        ]
        assert {row["file_value"]["path"] for row in rows} == set(recorded)
        for row in rows:
            entry = recorded[row["file_value"]["path"]]
            data = (files_root / sanitize_name(PROJECT) / entry["path"]).read_bytes()
            assert entry["attribute_path"] == row["attribute_path"] and entry["size"] == len(data)
            assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        checked += len(rows)
    return checked


def test_full_then_incremental_export_to_parquet(tmp_path):
    from neptune_exporter.export import ExportOptions
    from neptune_exporter.export_runner import run_export
    from neptune_exporter.storage.parquet import read_run_batches

    with FakeNeptune(awkward_workspace(), port=0) as server:
        settings = Settings(series_batch_rows=7, attributes_per_request=300, source_retry_timeout_s=5)
        options = ExportOptions(
            source="neptune3",
            projects=(PROJECT,),
            data_path=str(tmp_path / "data"),
            files_path=str(tmp_path / "files"),
            runs=RunSelection(include_archived=True),
            api_token=server.api_token,
            workers=2,
        )

        def check_everything(expected_statuses: dict[str, str]) -> None:
            results = {r.run_id: r for r in run_export(options, settings)}
            assert {k: (r.status, r.action) for k, r in results.items()} == expected_statuses
            source = Neptune3Source(server.api_token, settings)
            for ref in source.list_runs(PROJECT, RunSelection(include_archived=True)):
                table = pa.Table.from_batches(list(read_run_batches(tmp_path / "data", PROJECT, ref.run_id)))
                check_run(server, ref, table, tmp_path / "files")

        full = {
            run: ("complete", "full")
            for run in (
                "run-basic",
                "run-empty",
                "run-wide",
                "run-parent",
                "run-child",
                "run-trashed",
                "AWK-7",
                "run-gamma",
            )
        }
        check_everything(full)
        assert check_files_where_the_peer_looks(tmp_path / "data", tmp_path / "files") >= 4  # files + file series

        server.append_points(PROJECT, "run-parent", "metrics/loss", [10.0, 10.5], [0.5, float("nan")])
        server.set_attribute(PROJECT, "run-parent", "params/lr", store.FLOAT, 0.2)
        server.requests.clear()
        again = {run: ("skipped", "skip") for run in full} | {"run-parent": ("complete", "incremental")}
        check_everything(again)
        assert server.requests.runs_fetched() == {"AWK-4"}
        assert server.requests.count(endpoint="v3.float_series") <= 2


def test_each_source_uses_its_own_token_while_streaming(fake, all_runs, tmp_path):
    good = Neptune3Source(fake.api_token, SMALL_WINDOWS)
    content = good.export_run(all_runs["run-parent"], AttributeSelection(), tmp_path)
    with pytest.raises(InvalidTokenError):
        Neptune3Source(bad_token(fake), SMALL_WINDOWS).check_access(PROJECT)  # neptune-query's token is global
    table = pa.Table.from_batches(list(content.batches))
    check_run(fake, all_runs["run-parent"], table, tmp_path)


# ---------------------------------------------------------------------------- the fork relation, end to end

FORK_RUN_IDS = ("run-parent", "run-child", "AWK-7", "run-of-plain")
FORK_RUNS = RunSelection(runs_regex="^(run-parent|run-child|AWK-7|run-of-plain)$")
FORK_STEPS = {"run-child": 4.0, "run-of-plain": 1.0}


@pytest.fixture(scope="module")
def fork_export(tmp_path_factory):
    """The awkward workspace plus a fork of AWK-7 (no custom run id), exported through export.run_export."""
    from neptune_exporter.export import ExportOptions
    from neptune_exporter.export_runner import run_export

    root = tmp_path_factory.mktemp("forks")
    with FakeNeptune(awkward_workspace(), port=0) as server:
        server.add_run(
            PROJECT,
            custom_run_id="run-of-plain",
            fork_parent="AWK-7",
            fork_step=1.0,
            attributes={"metrics/acc": (store.FLOAT_SERIES, [(2.0, 0.9, 1_704_067_200_000)])},
        )
        options = ExportOptions(
            source="neptune3",
            projects=(PROJECT,),
            data_path=str(root / "data"),
            files_path=str(root / "files"),
            runs=FORK_RUNS,
            api_token=server.api_token,
            workers=2,
        )
        results = run_export(options, Settings(source_retry_timeout_s=5))
    assert {r.run_id: r.status for r in results} == dict.fromkeys(FORK_RUN_IDS, "complete")
    return root


def test_fork_relation_in_manifests_and_rows_of_a_real_export(fork_export):
    from neptune_exporter.loaders.base import open_exported_run
    from neptune_exporter.storage.manifest import manifest_path, read_manifest
    from neptune_exporter.storage.parquet import read_run_batches

    data, files = fork_export / "data", fork_export / "files"

    def source_of(run_id: str) -> dict:
        return read_manifest(manifest_path(data, PROJECT, run_id)).source

    facts = {run: (source_of(run)["fork_parent"], source_of(run)["fork_step"]) for run in FORK_RUN_IDS}
    assert facts == {
        "run-parent": (None, None),
        "run-child": ("run-parent", 4.0),
        "AWK-7": (None, None),
        "run-of-plain": ("AWK-7", 1.0),
    }
    rows = pa.Table.from_batches(list(read_run_batches(data, PROJECT, "run-child"))).to_pylist()
    fork_rows = {
        r["attribute_path"]: (r["string_value"], r["float_value"], r["int_value"])
        for r in rows
        if r["attribute_path"].startswith("sys/forking/")
    }
    assert fork_rows == {
        "sys/forking/parent": ("run-parent", None, None),
        "sys/forking/step": (None, 4.0, None),
        "sys/forking/depth": (None, None, 1),
    }
    for child, parent in (("run-child", "run-parent"), ("run-of-plain", "AWK-7")):  # loaders find the parent's export
        exported = open_exported_run(data, files, PROJECT, child)
        assert open_exported_run(data, files, PROJECT, exported.fork_parent).run_id == parent


def test_mlflow_links_the_exported_fork_to_its_parent(fork_export, mlflow_server):  # noqa: F811
    from mlflow.tracking import MlflowClient

    from neptune_exporter.load import LoadOptions, run_load, run_validate

    options = LoadOptions(
        target="mlflow",
        data_path=str(fork_export / "data"),
        files_path=str(fork_export / "files"),
        projects=(PROJECT,),
        mlflow_tracking_uri=mlflow_server,
        workers=2,
    )
    results = {r.run_id: r for r in run_load(options, Settings())}
    assert {k: r.status for k, r in results.items()} == dict.fromkeys(FORK_RUN_IDS, "loaded")
    client = MlflowClient(mlflow_server)
    for child, parent in (("run-child", "run-parent"), ("run-of-plain", "AWK-7")):
        tags = client.get_run(results[child].target_run_id).data.tags
        parent_id = results[parent].target_run_id
        assert (tags["neptune.fork_parent"], float(tags["neptune.fork_step"])) == (parent, FORK_STEPS[child])
        assert tags["neptune.fork_parent_mlflow_run_id"] == parent_id and tags["mlflow.parentRunId"] == parent_id
    params = client.get_run(results["run-child"].target_run_id).data.params
    assert params["sys/forking/parent"] == "run-parent" and float(params["sys/forking/step"]) == 4.0
    assert "neptune.fork_parent" not in client.get_run(results["run-parent"].target_run_id).data.tags
    assert run_validate(options, Settings()).ok


def test_wandb_config_names_the_fork_parent(fork_export, tmp_path, monkeypatch):
    from neptune_exporter.load import LoadOptions, run_load, run_validate
    from neptune_exporter.storage.wandb_log import find_offline_runs, read_run_log, run_log_path

    for name in ("WANDB_API_KEY", "WANDB_ENTITY", "WANDB_DIR", "WANDB_DATA_DIR", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # offline: never reachable
    monkeypatch.setenv("WANDB_SILENT", "true")
    options = LoadOptions(
        target="wandb",
        data_path=str(fork_export / "data"),
        files_path=str(fork_export / "files"),
        projects=(PROJECT,),
        workers=2,
        wandb_dir=str(tmp_path / "wb"),
    )
    results = {r.run_id: r for r in run_load(options, Settings())}
    assert {k: r.status for k, r in results.items()} == dict.fromkeys(FORK_RUN_IDS, "loaded")

    def config(run_id: str) -> dict:
        folder = find_offline_runs(tmp_path / "wb", results[run_id].target_run_id)[0]
        return read_run_log(run_log_path(folder)).config

    for child, parent in (("run-child", "run-parent"), ("run-of-plain", "AWK-7")):
        assert (config(child)["neptune.fork_parent"], config(child)["neptune.fork_step"]) == (parent, FORK_STEPS[child])
        assert config(child)["sys/forking/parent"] == parent
    assert config("run-parent")["neptune.fork_parent"] is None
    assert run_validate(options, Settings()).ok


# ---------------------------------------------------------------------------- grouped windows


def explicit(path: str, kind: str, steps, values) -> store.Attribute:
    steps = np.asarray(steps, dtype=np.float64)
    stamps = 1_700_000_000_000 + np.arange(steps.size, dtype=np.int64) * 1_000
    return store.Attribute(path, kind, series=store.ExplicitSeries(kind, steps, values, stamps))


def histogram(i: int) -> dict:
    return {"type": "linear", "edges": [0.0, 1.0, 2.0 + i], "values": [float(i), 0.5]}


def grid_attributes() -> dict[str, store.Attribute]:
    """Series of different lengths and fractional step grids (steps exact to 6 decimals), windowed together."""
    quarter = 0.5 + 0.25 * np.arange(40)
    tenths = np.round(0.1 * np.arange(47), 6)
    thirds = np.round(np.arange(23) / 3, 6)
    rng = np.random.default_rng(11)
    attrs = [
        explicit("g/quarter_a", store.FLOAT_SERIES, quarter, rng.normal(size=40)),
        explicit("g/quarter_b", store.FLOAT_SERIES, quarter, rng.normal(size=40)),
        explicit("g/quarter_short", store.FLOAT_SERIES, quarter[:13], rng.normal(size=13)),
        explicit("g/quarter_late", store.FLOAT_SERIES, quarter[25:], rng.normal(size=15)),
        explicit("g/tenths", store.FLOAT_SERIES, tenths, rng.normal(size=47)),
        explicit("g/thirds", store.FLOAT_SERIES, thirds, rng.normal(size=23)),
        explicit("g/one", store.FLOAT_SERIES, [1e-6], [2.5]),
        explicit("g/text", store.STRING_SERIES, thirds, [f"line {i}" for i in range(23)]),
        explicit("g/hist", store.HISTOGRAM_SERIES, tenths[:9], [histogram(i) for i in range(9)]),
    ]
    return {a.path: a for a in attrs}


@pytest.mark.parametrize("rows", [1, 5, 12, 64])
def test_series_windowed_together_come_back_exact(fake, tmp_path, rows):
    run_id = f"run-grids-{rows}"
    run = fake.add_run(PROJECT, custom_run_id=run_id, attributes=grid_attributes())
    source = Neptune3Source(fake.api_token, Settings(series_batch_rows=rows, source_retry_timeout_s=5))
    ref = next(r for r in source.list_runs(PROJECT, RunSelection(runs_regex=f"^{run_id}$")))
    table, _, batches = export(source, ref, tmp_path, AttributeSelection(regex="^g/"))
    assert max(b.num_rows for b in batches) <= rows
    got = rows_by_path(table)
    assert set(got) == set(grid_attributes())
    for path, attr in run.attributes.items():
        if path.startswith("g/"):
            check_series(attr, got[path], None, tmp_path)  # every step once: no duplicate, no gap


def test_series_logged_together_share_their_windows(fake, tmp_path):
    quarter = 0.5 + 0.25 * np.arange(30)
    attrs = {f"s/m{i}": explicit(f"s/m{i}", store.FLOAT_SERIES, quarter, np.arange(30.0) + i) for i in range(8)}
    attrs["s/text"] = explicit("s/text", store.STRING_SERIES, quarter[:5], list("abcde"))
    attrs["s/hist"] = explicit("s/hist", store.HISTOGRAM_SERIES, quarter[:3], [histogram(i) for i in range(3)])
    run = fake.add_run(PROJECT, custom_run_id="run-grouped", attributes=attrs)
    source = Neptune3Source(fake.api_token, Settings(series_batch_rows=80, source_retry_timeout_s=5))
    ref = next(r for r in source.list_runs(PROJECT, RunSelection(runs_regex="^run-grouped$")))
    fake.requests.clear()
    table, _, _ = export(source, ref, tmp_path, AttributeSelection(regex="^s/"))
    # 8 series x 30 points, 80 points a request: three rounds of 10 points per series, each asking for 11 so the
    # third knows nothing is left (no fourth request finding nothing; one series alone each time would be 1 + 8
    # requests); text and histograms in one request
    assert fake.requests.count(endpoint="v3.float_series") == 3
    assert fake.requests.count(endpoint="v3.series") == 1
    got = rows_by_path(table)
    assert set(got) == set(attrs)
    for path in attrs:
        check_series(run.attributes[path], got[path], None, tmp_path)

"""Issue 14, end to end: the limits workspace (fake Neptune over HTTP) exported with both real clients, loaded into a
real `mlflow server` and an offline W&B log, and read back value by value against the source dataset."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest
from mlflow.tracking import MlflowClient

from neptune_exporter.export import ExportOptions
from neptune_exporter.export_runner import run_export
from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.fake_neptune import limits_dataset as lim
from neptune_exporter.fake_neptune.datasets import awkward_workspace
from neptune_exporter.load import LoadOptions, run_load, run_validate
from neptune_exporter.model import decimal_array_to_unscaled
from neptune_exporter.selection import RunSelection
from neptune_exporter.settings import Settings
from neptune_exporter.storage.parquet import project_dir, read_run_batches
from neptune_exporter.storage.wandb_log import find_offline_runs, iter_history, read_run_log, run_log_path
from tests.integration.mlflow_server import mlflow_server  # noqa: F401  (session fixture)
from tests.integration.test_load_wandb import offline_wandb  # noqa: F401  (autouse: W&B never goes online here)

pytestmark = pytest.mark.integration
PROJECT = lim.LIMITS_PROJECT
SETTINGS = Settings(source_retry_timeout_s=5)
SOURCES = ("neptune3", "neptune2")
RUNS = (
    "run-large-step",
    "run-step-over",
    "run-step-1e15",
    "run-micro-steps",
    "run-milli-steps",
    "run-fine-step",
    "run-odd-paths",
    "run-target-limits",
    "run-shared-steps",
    "run-underscore-keys",
)
# the export names runs by the id each source names them with: 3.x custom run id, 2.x sys id
RUN_IDS = {"neptune3": {run: run for run in RUNS}, "neptune2": {run: f"LIM-{i}" for i, run in enumerate(RUNS, 1)}}
FAILING = {"run-step-over", "run-step-1e15"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """Project `workspace/limits` of the awkward workspace exported once per source: {source: (root, {run id: result})}."""
    out = {}
    with FakeNeptune(awkward_workspace(), port=0) as server, pytest.MonkeyPatch.context() as patch:
        patch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the 2.x client's OAuth on the fake's plain http
        for source in SOURCES:
            root = tmp_path_factory.mktemp(f"limits-{source}")
            options = export_options(source, PROJECT, root, server.api_token)
            out[source] = (root, {r.run_id: r for r in run_export(options, SETTINGS)})
    return out


def export_options(source: str, project: str, root: Path, api_token: str) -> ExportOptions:
    return ExportOptions(
        source=source,
        projects=(project,),
        data_path=str(root / "data"),
        files_path=str(root / "files"),
        api_token=api_token,
        workers=2,
        runs=RunSelection(),
    )


def error_lines(root: Path) -> list[dict]:
    return error_lines_of(root / "data", PROJECT)


def exported_steps(root: Path, run_id: str, attribute: str) -> list[int]:
    """The step column of one attribute, as exact int64 millionths."""
    table = pa.Table.from_batches(list(read_run_batches(root / "data", PROJECT, run_id)))
    rows = table.filter(pa.compute.equal(table["attribute_path"], attribute))
    return decimal_array_to_unscaled(rows["step"]).tolist()


def load_options(root: Path, target: str, run_id: str, **kwargs) -> LoadOptions:
    return LoadOptions(
        target=target,
        data_path=str(root / "data"),
        files_path=str(root / "files"),
        projects=(PROJECT,),
        runs_regex=f"^{run_id}$",
        workers=1,
        **kwargs,
    )


# ----------------------------------------------------------------------------- 1. exact steps at export


@pytest.mark.parametrize("source", SOURCES)
def test_large_steps_are_exported_exactly_and_steps_beyond_the_column_fail_the_run(exported, source):
    root, results = exported[source]
    ids = RUN_IDS[source]
    assert {run: results[run_id].status for run, run_id in ids.items()} == {
        run: "failed" if run in FAILING else "complete" for run in RUNS
    }
    assert exported_steps(root, ids["run-large-step"], "metrics/large") == [0, 999_999_999_999_000_000]
    errors = {line["run"]: line for line in error_lines(root)}
    assert set(errors) == {ids["run-step-over"], ids["run-step-1e15"]}
    for run, step in (("run-step-over", "1000000000001.0"), ("run-step-1e15", "1000000000000000.0")):
        record = errors[ids[run]]
        assert (record["error_type"], record["attribute"]) == ("StepOutOfRangeError", "metrics/over")
        assert f"step {step} of metrics/over is outside" in record["message"]
        assert "-999999999999.999999 to 999999999999.999999" in record["message"]
        assert record["remedy"].startswith("leave this attribute out to have the run complete and loadable (--attr")
        assert results[ids[run]].errors == [record]
    # the attribute is not exported, the run's others are (and the failed run is never loaded)
    over = exported_table(root, ids["run-step-over"])
    assert "metrics/over" not in over["attribute_path"].to_pylist()
    assert exported_steps(root, ids["run-step-over"], "metrics/fine") == [0, 1_000_000]
    assert "params/case" in exported_table(root, ids["run-step-1e15"])["attribute_path"].to_pylist()


@pytest.mark.parametrize("source", SOURCES)
def test_the_largest_step_reads_back_exactly_from_mlflow(exported, source, mlflow_server):  # noqa: F811
    root, _ = exported[source]
    run_id = RUN_IDS[source]["run-large-step"]
    options = load_options(root, "mlflow", run_id, mlflow_tracking_uri=mlflow_server)
    (result,) = run_load(options, SETTINGS)
    assert result.status == "loaded"
    history = MlflowClient(mlflow_server).get_metric_history(result.target_run_id, "metrics/large")
    assert [(m.step, m.value, m.timestamp) for m in history] == [
        (int(step), value, stamp) for step, value, stamp in lim.points(lim.LARGE_STEPS, [1.5, 2.5])
    ]
    assert run_validate(options, SETTINGS).ok


def test_the_largest_step_reads_back_exactly_from_wandb(exported, tmp_path):
    root, _ = exported["neptune3"]
    options = load_options(root, "wandb", "run-large-step", wandb_dir=str(tmp_path / "wb"))
    (result,) = run_load(options, SETTINGS)
    assert result.status == "loaded"
    rows = list(iter_history(run_log_path(find_offline_runs(tmp_path / "wb", result.target_run_id)[0])))
    assert [(row["_step"], row["metrics/large"]) for row in rows if "metrics/large" in row] == [
        (0, 1.5),
        (999_999_999_999, 2.5),
    ]
    assert run_validate(options, SETTINGS).ok


# ----------------------------------------------------------------------------- 2. exact step arithmetic at load

SCALED = {  # run → (series, target steps with the automatic multiplier, the multiplier, the values)
    "run-micro-steps": ("metrics/micro", lim.MICRO_STEPS, [1, 10**13], 10**6, [0.125, 0.25]),
    "run-milli-steps": ("metrics/milli", lim.MILLI_STEPS, [1, 10**13], 1000, [0.375, 0.5]),
    "run-fine-step": ("metrics/fine", [lim.FINE_STEP], [123456789123456], 10**6, [0.625]),
}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("run", sorted(SCALED))
def test_fine_and_large_steps_load_into_mlflow_exactly(exported, source, run, mlflow_server, caplog):  # noqa: F811
    root, _ = exported[source]
    series, steps, target_steps, multiplier, values = SCALED[run]
    options = load_options(root, "mlflow", RUN_IDS[source][run], mlflow_tracking_uri=mlflow_server)
    with caplog.at_level("INFO", logger="neptune_exporter.storage.exported_run"):
        (result,) = run_load(options, SETTINGS)
    assert result.status == "loaded", result.error
    client = MlflowClient(mlflow_server)
    history = client.get_metric_history(result.target_run_id, series)
    stamps = [stamp for _, _, stamp in lim.points(steps, values)]
    assert [(m.step, m.value, m.timestamp) for m in history] == list(zip(target_steps, values, stamps, strict=True))
    assert client.get_run(result.target_run_id).data.tags["neptune.step_multiplier"] == str(multiplier)
    finest = f"{steps[0]:.6f}".rstrip("0")
    assert f"steps × {multiplier}, the smallest power of ten making every step whole (step {finest} of {series})" in (
        caplog.text
    )
    assert run_validate(options, SETTINGS).ok


@pytest.mark.parametrize("run", sorted(SCALED))
def test_fine_and_large_steps_load_into_wandb_exactly(exported, run, tmp_path):
    root, _ = exported["neptune3"]
    series, _, target_steps, multiplier, values = SCALED[run]
    options = load_options(root, "wandb", run, wandb_dir=str(tmp_path / "wb"))
    (result,) = run_load(options, SETTINGS)
    assert result.status == "loaded", result.error
    rows = list(iter_history(run_log_path(find_offline_runs(tmp_path / "wb", result.target_run_id)[0])))
    assert [(row["_step"], row[series]) for row in rows if series in row] == list(
        zip(target_steps, values, strict=True)
    )
    assert run_validate(options, SETTINGS).ok


@pytest.mark.parametrize("target", ["mlflow", "wandb"])
def test_a_multiplier_taking_a_step_beyond_int64_fails_that_series_alone_saying_so(
    exported,
    target,
    tmp_path,
    mlflow_server,  # noqa: F811
):
    root, _ = exported["neptune3"]
    target_options = {"mlflow_tracking_uri": mlflow_server} if target == "mlflow" else {"wandb_dir": str(tmp_path)}
    options = load_options(root, target, "run-large-step", step_multiplier=10**7, **target_options)
    (result,) = run_load(options, SETTINGS)
    assert result.status == "failed" and result.target_run_id is not None
    assert (result.error["error_type"], result.error["attribute"]) == ("StepOutOfRangeError", "metrics/large")
    assert result.error["message"] == (
        "step 999999999999 of metrics/large times the step multiplier 10000000 is 9999999999990000000, beyond the "
        "integer steps a target holds, -9223372036854775808 to 9223372036854775807 (int64, what MLflow and W&B "
        "store); only this series is not loaded, the run's other attributes are"
    )
    assert result.error["remedy"].startswith("pass a smaller --step-multiplier")
    small = [(int(step) * 10**7, value) for step, value, _ in lim.points(lim.SMALL_STEPS, [0.5, 0.75])]
    if target == "mlflow":
        client = MlflowClient(mlflow_server)
        run = client.get_run(result.target_run_id)
        history = client.get_metric_history(result.target_run_id, "metrics/small")
        assert [(m.step, m.value) for m in history] == small
        assert "metrics/large" not in run.data.metrics and run.data.params["params/case"] == "run-large-step"
    else:
        log_path = run_log_path(find_offline_runs(tmp_path, result.target_run_id)[0])
        rows = list(iter_history(log_path))
        assert [(row["_step"], row["metrics/small"]) for row in rows] == small
        assert read_run_log(log_path).config["params/case"] == "run-large-step"
    report = run_validate(options, SETTINGS)
    assert [(d.kind, d.key, d.problem, d.actual) for d in report.differences] == [
        (
            "series",
            "metrics/large",
            "beyond int64",
            {"step": "999999999999", "multiplier": 10**7, "product": 10**19 - 10**7},
        )
    ]
    (again,) = run_load(options, SETTINGS)  # a rerun finds the run loaded and reports the same failure
    assert (again.status, again.error, again.target_run_id) == ("failed", result.error, result.target_run_id)


# ----------------------------------------------------------------------------- 3. every 2.x attribute kept


def exported_table(root: Path, run_id: str) -> pa.Table:
    return pa.Table.from_batches(list(read_run_batches(root / "data", PROJECT, run_id)))


def key_map(client: MlflowClient, target_run_id: str) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as folder:
        path = client.download_artifacts(target_run_id, "neptune/key_map.json", folder)
        return json.loads(Path(path).read_text(encoding="utf-8"))["attributes"]


@pytest.mark.parametrize("source", SOURCES)
def test_attributes_at_paths_the_2x_client_rewrites_are_exported_at_their_own_paths(exported, source):
    root, results = exported[source]
    run_id = RUN_IDS[source]["run-odd-paths"]
    assert (results[run_id].status, results[run_id].errors) == ("complete", [])
    rows = exported_table(root, run_id).to_pylist()
    value_of = {"float": "float_value", "int": "int_value", "string": "string_value"}
    atoms = {
        r["attribute_path"]: r[value_of[r["attribute_type"]]] for r in rows if r["attribute_path"] in lim.ODD_PATH_ATOMS
    }
    assert atoms == {path: value for path, (_, value) in lim.ODD_PATH_ATOMS.items()}
    for path, (_, steps, values) in lim.ODD_PATH_SERIES.items():
        points = [r for r in rows if r["attribute_path"] == path]
        column = "string_value" if isinstance(values[0], str) else "float_value"
        assert [(float(r["step"]), r[column]) for r in points] == list(zip(steps, values, strict=True)), path


@pytest.mark.parametrize("source", SOURCES)
def test_rewritten_paths_read_back_from_mlflow_under_their_recorded_keys(exported, source, mlflow_server):  # noqa: F811
    root, _ = exported[source]
    options = load_options(root, "mlflow", RUN_IDS[source]["run-odd-paths"], mlflow_tracking_uri=mlflow_server)
    (result,) = run_load(options, SETTINGS)
    assert result.status == "loaded", result.error
    client = MlflowClient(mlflow_server)
    renamed = key_map(client, result.target_run_id)
    assert set(renamed) == {"a//b", "trailing/", "/leading", "s//x", "/slead", "strail/"}
    params = client.get_run(result.target_run_id).data.params
    assert {path: params[renamed.get(path, path)] for path in lim.ODD_PATH_ATOMS} == {
        "a//b": "1.5",
        "a/b": "9.0",
        "trailing/": "t",
        "/leading": "3",
    }
    for path in ("s//x", "/slead"):
        _, steps, values = lim.ODD_PATH_SERIES[path]
        history = client.get_metric_history(result.target_run_id, renamed[path])
        assert [(m.step, m.value) for m in history] == list(zip(steps, values, strict=True)), path
    assert run_validate(options, SETTINGS).ok


def test_rewritten_paths_read_back_from_wandb(exported, tmp_path):
    root, _ = exported["neptune2"]
    options = load_options(root, "wandb", RUN_IDS["neptune2"]["run-odd-paths"], wandb_dir=str(tmp_path / "wb"))
    (result,) = run_load(options, SETTINGS)
    assert result.status == "loaded", result.error
    log_path = run_log_path(find_offline_runs(tmp_path / "wb", result.target_run_id)[0])
    config = read_run_log(log_path).config
    renamed = config["neptune.key_map"]
    assert {path: config[renamed.get(path, path)] for path in lim.ODD_PATH_ATOMS} == {
        path: value for path, (_, value) in lim.ODD_PATH_ATOMS.items()
    }
    rows = list(iter_history(log_path))
    for path in ("s//x", "/slead"):
        _, steps, values = lim.ODD_PATH_SERIES[path]
        key = renamed.get(path, path)
        assert [(row["_step"], row[key]) for row in rows if key in row] == list(zip(steps, values, strict=True))
    assert run_validate(options, SETTINGS).ok


# ----------------------------------------------------------------------------- 4. MLflow's limits recorded


MAX_FLOAT = 1.7976931348623157e308


def original_points(client: MlflowClient, target_run_id: str, key: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        local = client.download_artifacts(target_run_id, f"neptune/original_points/{key}.jsonl", folder)
        return [json.loads(line) for line in Path(local).read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def target_limits(exported, mlflow_server):  # noqa: F811
    """run-target-limits of the 3.x export loaded into MLflow once: (options, target run id, client)."""
    root, _ = exported["neptune3"]
    options = load_options(root, "mlflow", "run-target-limits", mlflow_tracking_uri=mlflow_server)
    (result,) = run_load(options, SETTINGS)
    assert result.status == "loaded", result.error
    return options, result.target_run_id, MlflowClient(mlflow_server)


def test_points_before_1970_load_at_1970_with_their_original_times_kept(target_limits):
    _, target_run_id, client = target_limits
    history = client.get_metric_history(target_run_id, "metrics/pre1970")
    assert [(m.step, m.value, m.timestamp) for m in history] == [
        (int(step), value, max(stamp, 0)) for step, value, stamp in lim.PRE_1970_POINTS
    ]
    assert original_points(client, target_run_id, "metrics/pre1970") == [
        {"step": "0", "timestamp": -86_400_000, "value": None},
        {"step": "1", "timestamp": -1, "value": None},
    ]


def test_infinities_and_minus_zero_keep_their_originals(target_limits):
    _, target_run_id, client = target_limits
    history = client.get_metric_history(target_run_id, "metrics/special")
    assert [m.value for m in history] == [MAX_FLOAT, -MAX_FLOAT, 0.0, 0.0, 1.0]
    assert original_points(client, target_run_id, "metrics/special") == [
        {"step": "0", "timestamp": None, "value": "inf"},
        {"step": "1", "timestamp": None, "value": "-inf"},
        {"step": "2", "timestamp": None, "value": "-0.0"},
    ]
    params = client.get_run(target_run_id).data.params
    assert (params["params/inf"], params["params/minus_inf"], params["params/minus_zero"]) == ("inf", "-inf", "-0.0")


def test_string_sets_are_json_lists_that_read_back_as_the_sets(target_limits):
    _, target_run_id, client = target_limits
    params = client.get_run(target_run_id).data.params
    assert params["params/set_with_comma"] == '["a,b", "c"]' and params["params/empty_set"] == "[]"
    for path in ("params/set_with_comma", "params/empty_set"):
        assert set(json.loads(params[path])) == lim.TARGET_LIMIT_ATOMS[path][1]


def test_validation_checks_the_recorded_originals(target_limits):
    options, target_run_id, client = target_limits
    assert run_validate(options, SETTINGS).ok
    client.log_text(
        target_run_id,
        '{"step": "0", "timestamp": null, "value": "inf"}\n',
        "neptune/original_points/metrics/special.jsonl",
    )
    report = run_validate(options, SETTINGS)
    assert {(d.kind, d.key, d.problem) for d in report.differences} == {
        ("artifact", "neptune/original_points/metrics/special.jsonl", "records")
    }


# ----------------------------------------------------------------------------- 5. W&B: every point keeps its time


def load_shared_steps(exported, tmp_path: Path, source: str = "neptune3"):
    root, _ = exported[source]
    options = load_options(root, "wandb", RUN_IDS[source]["run-shared-steps"], wandb_dir=str(tmp_path / "wb"))
    (result,) = run_load(options, SETTINGS)
    assert result.status == "loaded", result.error
    return options, list(iter_history(run_log_path(find_offline_runs(tmp_path / "wb", result.target_run_id)[0])))


@pytest.mark.parametrize("source", SOURCES)
def test_series_sharing_steps_keep_each_points_own_time_in_wandb(exported, tmp_path, source):
    options, rows = load_shared_steps(exported, tmp_path, source)
    early = lim.points(lim.SHARED_STEPS, [0.1, 0.2, 0.3, 0.4, 0.5])
    late = lim.points(lim.SHARED_STEPS, [1.1, 1.2, 1.3, 1.4, 1.5], lim.START_MS + lim.LATE_MS)
    assert [
        (row["_step"], round(row["_timestamp"] * 1000), row["metrics/early"], row["metrics/late"])
        + (row["_neptune_time/metrics/late"],)
        for row in rows
        if "metrics/early" in row
    ] == [(int(a[0]), a[2], a[1], b[1], b[2]) for a, b in zip(early, late, strict=True)]
    assert not any("_neptune_time/metrics/early" in row for row in rows)  # its time is the row's
    assert run_validate(options, SETTINGS).ok


def test_validation_sees_a_point_time_lost_in_the_row_merge(exported, tmp_path, monkeypatch):
    from neptune_exporter.loaders.wandb import history

    monkeypatch.setattr(history, "POINT_TIME_PREFIX", "_lost_time/")  # bug: the loader keeps one time per row
    options, _ = load_shared_steps(exported, tmp_path)
    report = run_validate(options, SETTINGS)
    assert {(d.kind, d.key, d.problem) for d in report.differences} == {
        ("metric", "metrics/late", "points"),
        # and the times kept under a key validation does not know are reported, never skipped
        ("metric", "_lost_time/metrics/late", "unexpected"),
        ("metric-last", "_lost_time/metrics/late", "unexpected"),
        ("history", "rows", "points"),
    }


# ----------------------------------------------------------------------------- 6. the peer tool's rows with no value

PEER_PROJECT = "ws/peer"


def write_peer_export(root: Path) -> None:
    """A run in the peer tool's layout (parts only, no manifest) with rows naming no value: a file row with a null
    struct and one with a null path, a file-series point with no path, null single values of several types."""
    from neptune_exporter.model import project_files_dir
    from neptune_exporter.rows import parameter_rows, series_rows
    from neptune_exporter.storage.parquet import RunWriter

    stored = project_files_dir(root / "files", PEER_PROJECT) / "f"
    stored.mkdir(parents=True)
    (stored / "model.bin").write_bytes(b"model")
    rows = parameter_rows(
        PEER_PROJECT,
        "peer-run",
        [
            ("params/lr", "float", 0.5),
            ("params/none_float", "float", None),
            ("params/none_string", "string", None),
            ("params/none_set", "string_set", None),
            ("files/model", "file", "f/model.bin"),
            ("files/other_runs_file", "file", None),
        ],
    )
    nulled = rows.column("file_value").to_pylist()
    nulled[-1] = None  # the whole struct null, as well as a struct with a null path (series row below)
    rows = rows.set_column(
        rows.schema.get_field_index("file_value"), "file_value", pa.array(nulled, rows.schema.field("file_value").type)
    )
    with RunWriter(root / "data", PEER_PROJECT, "peer-run", 10**9) as writer:
        writer.write(rows)
        writer.write(
            series_rows(
                PEER_PROJECT, "peer-run", "metrics/loss", "float_series", [0.0, 1.0], [0.25, 0.5], [1_000, 2_000]
            )
        )
        writer.write(series_rows(PEER_PROJECT, "peer-run", "images/frames", "file_series", [0.0], [None], [1_000]))


def peer_options(root: Path, target: str, **kwargs) -> LoadOptions:
    return LoadOptions(target=target, data_path=str(root / "data"), files_path=str(root / "files"), workers=1, **kwargs)


def test_rows_with_no_value_in_a_peer_export_are_ignored_by_mlflow(tmp_path, mlflow_server):  # noqa: F811
    write_peer_export(tmp_path)
    options = peer_options(tmp_path, "mlflow", mlflow_tracking_uri=mlflow_server)
    (result,) = run_load(options, SETTINGS)
    assert (result.status, result.files) == ("loaded", 2), result.error  # files/model and neptune/key_map.json
    client = MlflowClient(mlflow_server)
    run = client.get_run(result.target_run_id)
    assert {k: v for k, v in run.data.params.items()} == {"params/lr": "0.5"}
    artifacts = [a.path for a in client.list_artifacts(result.target_run_id, "files")]
    assert artifacts == ["files/model"] and not client.list_artifacts(result.target_run_id, "images")
    assert run_validate(options, SETTINGS).ok


def test_rows_with_no_value_in_a_peer_export_are_ignored_by_wandb(tmp_path):
    write_peer_export(tmp_path)
    options = peer_options(tmp_path, "wandb", wandb_dir=str(tmp_path / "wb"))
    (result,) = run_load(options, SETTINGS)
    assert (result.status, result.files) == ("loaded", 1), result.error
    config = read_run_log(run_log_path(find_offline_runs(tmp_path / "wb", result.target_run_id)[0])).config
    assert config["params/lr"] == 0.5
    assert not {"params/none_float", "params/none_string", "params/none_set", "files/other_runs_file"} & set(config)
    assert run_validate(options, SETTINGS).ok


GAPS_PROJECT = "ws/peer-gaps"
HISTOGRAM = {"type": "linear", "edges": [0.0, 1.0, 2.0], "values": [3.0, 4.0]}


def write_peer_gaps(root: Path) -> None:
    """A peer-layout run whose series have rows with no value, one at step 0.5 (a point there would make the
    automatic multiplier 10): float, string and histogram series."""
    from neptune_exporter.rows import series_rows
    from neptune_exporter.storage.parquet import RunWriter

    (root / "files").mkdir(parents=True)
    with RunWriter(root / "data", GAPS_PROJECT, "gaps-run", 10**9) as writer:
        for path, kind, values in (
            ("metrics/gaps", "float_series", [0.25, None, 0.5, None]),
            ("logs/gaps", "string_series", ["x", None, "y", None]),
            ("charts/gaps", "histogram_series", [HISTOGRAM, None, HISTOGRAM, None]),
        ):
            writer.write(series_rows(GAPS_PROJECT, "gaps-run", path, kind, [0.0, 0.5, 1.0, 2.0], values, [1, 2, 3, 4]))


def test_series_rows_with_no_value_are_ignored_by_mlflow(tmp_path, mlflow_server):  # noqa: F811
    write_peer_gaps(tmp_path)
    options = peer_options(tmp_path, "mlflow", mlflow_tracking_uri=mlflow_server)
    (result,) = run_load(options, SETTINGS)
    assert result.status == "loaded", result.error
    client = MlflowClient(mlflow_server)
    history = client.get_metric_history(result.target_run_id, "metrics/gaps")
    assert [(m.step, m.value, m.timestamp) for m in history] == [(0, 0.25, 1), (1, 0.5, 3)]
    assert client.get_run(result.target_run_id).data.tags["neptune.step_multiplier"] == "1"
    with tempfile.TemporaryDirectory() as folder:
        strings = Path(client.download_artifacts(result.target_run_id, "logs/gaps/series.jsonl", folder))
        histograms = Path(client.download_artifacts(result.target_run_id, "charts/gaps/histograms.jsonl", folder))
        assert [json.loads(line)["value"] for line in strings.read_text().splitlines()] == ["x", "y"]
        assert [json.loads(line)["step"] for line in histograms.read_text().splitlines()] == ["0", "1"]
    assert run_validate(options, SETTINGS).ok


def test_series_rows_with_no_value_are_ignored_by_wandb(tmp_path):
    write_peer_gaps(tmp_path)
    options = peer_options(tmp_path, "wandb", wandb_dir=str(tmp_path / "wb"))
    (result,) = run_load(options, SETTINGS)
    assert result.status == "loaded", result.error
    log_path = run_log_path(find_offline_runs(tmp_path / "wb", result.target_run_id)[0])
    rows = list(iter_history(log_path))
    assert [(row["_step"], row["metrics/gaps"]) for row in rows if "metrics/gaps" in row] == [(0, 0.25), (1, 0.5)]
    assert [row["_step"] for row in rows if "charts/gaps" in row] == [0, 1]
    assert read_run_log(log_path).config["neptune.step_multiplier"] == 1
    assert run_validate(options, SETTINGS).ok  # offline, every record of logs/gaps is compared: x and y only


def test_validation_expects_no_point_for_a_row_with_no_value(tmp_path, mlflow_server, monkeypatch):  # noqa: F811
    from neptune_exporter.loaders.mlflow import mapping

    monkeypatch.setattr(mapping, "rows_with_points", lambda batch: batch)  # bug: the loader loads rows with no value
    write_peer_gaps(tmp_path)
    options = peer_options(tmp_path, "mlflow", mlflow_tracking_uri=mlflow_server, step_multiplier=10)
    (result,) = run_load(options, SETTINGS)
    assert result.status == "loaded", result.error
    report = run_validate(options, SETTINGS)
    assert {(d.kind, d.key, d.problem) for d in report.differences} == {
        ("metric", "metrics/gaps", "count"),
        ("artifact", "logs/gaps/series.jsonl", "records"),
        ("artifact", "charts/gaps/histograms.jsonl", "records"),
    }


def test_points_before_1970_keep_their_times_in_wandb(exported, tmp_path):
    root, _ = exported["neptune2"]
    options = load_options(root, "wandb", RUN_IDS["neptune2"]["run-target-limits"], wandb_dir=str(tmp_path / "wb"))
    (result,) = run_load(options, SETTINGS)
    assert result.status == "loaded", result.error
    rows = list(iter_history(run_log_path(find_offline_runs(tmp_path / "wb", result.target_run_id)[0])))
    pre1970 = [(row["_step"], round(row["_timestamp"] * 1000), row["metrics/pre1970"]) for row in rows[:4]]
    assert pre1970 == [(int(step), stamp, value) for step, value, stamp in lim.PRE_1970_POINTS]
    special_times = [row["_neptune_time/metrics/special"] for row in rows[:4]]  # later than their rows' times
    assert special_times == [lim.START_MS + 1000 * i for i in range(4)]
    assert run_validate(options, SETTINGS).ok


def test_an_attribute_that_cannot_be_read_fails_alone(tmp_path, monkeypatch):
    from neptune_exporter.fake_neptune import FaultConfig

    ws = one_run_workspace()
    faults = FaultConfig(endpoints=r"^v2\.string_series_values$", error_share=1.0, error_statuses=(400,))
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")

    def own_rows() -> list[tuple]:
        return rows_of_one(tmp_path, "ONE-1")

    with FakeNeptune(ws, faults=faults, port=0) as server:
        options = export_options("neptune2", "ws/one", tmp_path, server.api_token)
        (result,) = run_export(options, SETTINGS)
        failed_rows = own_rows()
        faults.update(error_share=0.0)
        (again,) = run_export(options, SETTINGS)  # the next export redoes the failed run, whole
    assert result.status == "failed"
    assert [(e["run"], e["attribute"], e["error_type"]) for e in result.errors] == [
        ("ONE-1", "logs/out", "TerminalError")
    ]
    assert result.errors[0]["message"].startswith("the server refused a request (HTTP 400)")
    assert error_lines_of(tmp_path / "data", "ws/one") == []  # the last export's errors: none
    assert failed_rows == [("metrics/ok", 0.25, None), ("metrics/ok", 0.5, None), ("params/x", 2.5, None)]
    assert (again.status, again.errors) == ("complete", [])
    assert own_rows() == sorted([*failed_rows, ("logs/out", None, "refused")])


# ----------------------------------------------------------------------------- 7. keys W&B reserves: none skipped


@pytest.mark.parametrize("source", SOURCES)
def test_keys_that_would_start_with_an_underscore_in_wandb_load_under_recorded_keys_and_are_validated(
    exported, tmp_path, source
):
    root, _ = exported[source]
    options = load_options(root, "wandb", RUN_IDS[source]["run-underscore-keys"], wandb_dir=str(tmp_path / "wb"))
    (result,) = run_load(options, SETTINGS)
    assert result.status == "loaded", result.error
    log_path = run_log_path(find_offline_runs(tmp_path / "wb", result.target_run_id)[0])
    config = read_run_log(log_path).config
    renamed = config["neptune.key_map"]
    originals = {*lim.UNDERSCORE_ATOMS, *lim.UNDERSCORE_SERIES}
    assert set(renamed) == originals and not any(key.startswith("_") for key in renamed.values())
    assert all(renamed[path].startswith("u_") for path in originals)
    assert {path: config[renamed[path]] for path in lim.UNDERSCORE_ATOMS} == {"_q": 1.5, "@p": 0.5}
    rows = list(iter_history(log_path))
    for path, (_, steps, values) in lim.UNDERSCORE_SERIES.items():
        key = renamed[path]
        assert [(row["_step"], row[key]) for row in rows if key in row] == list(zip(steps, values, strict=True))
    assert run_validate(options, SETTINGS).ok


def test_validation_reports_a_key_stored_under_wandbs_underscore(exported, tmp_path, monkeypatch):
    from neptune_exporter.loaders.base import map_key
    from neptune_exporter.loaders.wandb.names import WandbKeyMap

    monkeypatch.setattr(WandbKeyMap, "target_key", lambda self, key: map_key(key, self.capabilities))  # bug
    root, _ = exported["neptune3"]
    options = load_options(root, "wandb", "run-underscore-keys", wandb_dir=str(tmp_path / "wb"))
    (result,) = run_load(options, SETTINGS)
    assert result.status == "loaded", result.error
    report = run_validate(options, SETTINGS)
    problems = {(d.kind, d.key, d.problem) for d in report.differences}
    assert problems == {("key", k, p) for k, p in RESERVED_KEY_PROBLEMS}  # their points compared and equal
    assert not report.ok


RESERVED_KEY_PROBLEMS = {
    ("@loss", "invalid rename"),
    ("@p", "invalid rename"),
    ("_private/loss", "not renamed"),
    ("_q", "not renamed"),
}


def test_a_3x_attribute_that_cannot_be_read_fails_alone(tmp_path):
    from neptune_exporter.fake_neptune import FaultConfig, store

    ws = one_run_workspace({"logs/err": (store.STRING_SERIES, lim.points([0.0], ["refused too"]))})
    # the string series' endpoint refuses every request: both series fail (asked one by one), the others export
    faults = FaultConfig(endpoints=r"^v3\.series$", error_share=1.0, error_statuses=(400,))

    with FakeNeptune(ws, faults=faults, port=0) as server:
        options = export_options("neptune3", "ws/one", tmp_path, server.api_token)
        (result,) = run_export(options, SETTINGS)
        failed_rows, lines = rows_of_one(tmp_path, "r"), error_lines_of(tmp_path / "data", "ws/one")
        faults.update(error_share=0.0)
        (again,) = run_export(options, SETTINGS)  # the next export redoes the failed run, whole
    assert result.status == "failed"
    assert sorted((e["run"], e["attribute"], e["error_type"]) for e in result.errors) == [
        ("r", "logs/err", "TerminalError"),
        ("r", "logs/out", "TerminalError"),
    ]
    assert all(e["message"] == "unexpected answer from the Neptune server (HTTP 400)" for e in result.errors)
    assert all(e["remedy"] for e in result.errors) and lines == result.errors
    assert failed_rows == [("metrics/ok", 0.25, None), ("metrics/ok", 0.5, None), ("params/x", 2.5, None)]
    assert (again.status, again.errors) == ("complete", [])
    refused = [("logs/err", None, "refused too"), ("logs/out", None, "refused")]
    assert rows_of_one(tmp_path, "r") == sorted([*failed_rows, *refused])


def test_a_transient_3x_series_error_goes_through_the_retry_policy_not_to_the_attribute(tmp_path, caplog):
    from neptune_exporter.fake_neptune import FaultConfig
    from neptune_exporter.settings import RetryPolicy

    ws = one_run_workspace()
    faults = FaultConfig(endpoints=r"^v3\.series$", error_share=1.0, error_statuses=(503,))
    settings = Settings(source_retry_timeout_s=1, retry=RetryPolicy(attempts=2, backoff_seconds=0.1))
    with FakeNeptune(ws, faults=faults, port=0) as server, caplog.at_level("WARNING"):
        (result,) = run_export(export_options("neptune3", "ws/one", tmp_path, server.api_token), settings)
    assert result.status == "failed"
    assert [e["error_type"] for e in result.errors] == ["SourceUnavailableError"]  # transient: not the attribute's
    assert "attempt 2 of 2" in caplog.text  # the run was retried by the one retry policy, then reported


def test_a_2x_atom_the_runs_table_returns_nothing_for_is_read_alone_or_an_error_entry(tmp_path, monkeypatch):
    from neptune_exporter.fake_neptune import FaultConfig, store

    ws = one_run_workspace({"params/hidden": (store.STRING, "read alone"), "params/y": (store.INT, 7)})
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    faults = FaultConfig(table_omits=r"^params/(hidden|x)$")  # the runs table returns nothing for these two
    with FakeNeptune(ws, faults=faults, port=0) as server:
        options = export_options("neptune2", "ws/one", tmp_path, server.api_token)
        (read_alone,) = run_export(options, SETTINGS)
        read_alone_rows = rows_of_one(tmp_path, "ONE-1")
        # now reading params/x by itself is refused too: an error entry for it, the run's others exported
        faults.update(endpoints=r"^v2\.get_attribute$", error_share=1.0, error_statuses=(400,))
        (refused,) = run_export(export_options("neptune2", "ws/one", tmp_path / "2", server.api_token), SETTINGS)
    assert (read_alone.status, read_alone.errors) == ("complete", [])
    assert ("params/hidden", None, "read alone") in read_alone_rows and ("params/x", 2.5, None) in read_alone_rows
    assert refused.status == "failed"
    assert sorted((e["run"], e["attribute"], e["error_type"]) for e in refused.errors) == [
        ("ONE-1", "params/hidden", "TerminalError"),
        ("ONE-1", "params/x", "TerminalError"),
    ]
    assert all(e["message"].startswith("the server refused a request (HTTP 400)") for e in refused.errors)
    assert sorted(map(str, error_lines_of(tmp_path / "2" / "data", "ws/one"))) == sorted(map(str, refused.errors))
    assert rows_of_one(tmp_path / "2", "ONE-1") == [
        ("logs/out", None, "refused"),
        ("metrics/ok", 0.25, None),
        ("metrics/ok", 0.5, None),
        ("params/y", None, None),  # an int: read from the table
    ]


def one_run_workspace(extra: dict | None = None):
    """Project ws/one with run `r` (2.x: ONE-1): params/x, metrics/ok, logs/out, and `extra`."""
    from neptune_exporter.fake_neptune import datasets as ds
    from neptune_exporter.fake_neptune import store

    ws = ds.new_workspace("ws")
    ds.add_project(ws, "one", "ONE")
    attributes = {
        "params/x": (store.FLOAT, 2.5),
        "metrics/ok": (store.FLOAT_SERIES, lim.points([0.0, 1.0], [0.5, 0.25])),
        "logs/out": (store.STRING_SERIES, lim.points([0.0], ["refused"])),
        **(extra or {}),
    }
    ds.add_run(ws, "ws/one", custom_run_id="r", attributes=attributes)
    return ws


def rows_of_one(root: Path, run_id: str) -> list[tuple]:
    """(path, float, string) of the exported ws/one run's own rows (no sys/ ones), sorted."""
    table = pa.Table.from_batches(list(read_run_batches(root / "data", "ws/one", run_id)))
    rows = [(r["attribute_path"], r["float_value"], r["string_value"]) for r in table.to_pylist()]
    return sorted(row for row in rows if not row[0].startswith("sys/"))


def error_lines_of(data: Path, project: str) -> list[dict]:
    path = project_dir(data, project) / "errors.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

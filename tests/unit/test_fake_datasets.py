"""Datasets of the fake Neptune server: JSON format, generator, awkward workspace, live mutation, wire encoding."""

from __future__ import annotations

import json
import math
import tracemalloc
from datetime import UTC, datetime

import numpy as np
import pytest
from neptune_query.generated.neptune_api.proto.neptune_pb.api.v1.model import series_values_pb2

from neptune_exporter.fake_neptune import datasets, store, wire
from neptune_exporter.fake_neptune.datasets import AWKWARD_PROJECT

HAND_WRITTEN = {
    "workspace": "acme",
    "projects": [
        {
            "name": "vision",
            "key": "VIS",
            "files": {"blobs/model.bin": {"content": "weights"}, "blobs/big": {"size": 100_000, "seed": 4}},
            "runs": [
                {
                    "custom_run_id": "r1",
                    "experiment": "baseline",
                    "created": "2024-03-01T10:00:00Z",
                    "tags": ["a"],
                    "attributes": {
                        "params/lr": 0.001,
                        "params/epochs": 10,
                        "params/opt": "adam",
                        "params/flag": True,
                        "params/when": {"type": "datetime", "value": "2024-03-01T10:00:00.250Z"},
                        "params/nan": {"type": "float", "value": "NaN"},
                        "params/set": {"type": "string_set", "value": ["x", "y"]},
                        "metrics/loss": {"type": "float_series", "points": [[0, 1.0, 1000], [0.5, "Infinity", 2000]]},
                        "metrics/long": {"type": "float_series", "generate": {"count": 1_000_000, "seed": 9}},
                        "logs": {"type": "string_series", "points": [[0, "hello", 1000]]},
                        "model": {"type": "file", "value": "blobs/model.bin"},
                    },
                },
                {"sys_id": "VIS-7", "trashed": True, "fork_parent": "VIS-1", "fork_step": 0.0},
            ],
        }
    ],
}


def test_load_hand_written_dataset() -> None:
    ws = datasets.load_dataset(HAND_WRITTEN)
    project = ws.project("acme/vision")
    first, second = project.runs
    assert (first.sys_id, first.custom_run_id, first.experiment_head) == ("VIS-1", "r1", True)
    assert first.get("params/lr") == 0.001 and first.attributes["params/epochs"].type == store.INT
    assert first.get("params/when") == datetime(2024, 3, 1, 10, 0, 0, 250_000, tzinfo=UTC)
    assert math.isnan(first.get("params/nan")) and first.get("params/set") == {"x", "y"}
    steps, values, stamps = first.attributes["metrics/loss"].series.window(None, None, None, 10)
    assert list(steps) == [0.0, 0.5] and list(values) == [1.0, math.inf] and list(stamps) == [1000, 2000]
    assert len(first.attributes["metrics/long"].series) == 1_000_000
    assert project.files["blobs/model.bin"].read() == b"weights" and project.files["blobs/big"].size == 100_000
    assert (second.sys_id, second.trashed, second.fork_parent, second.get("sys/forking/depth")) == (
        "VIS-7",
        True,
        "VIS-1",
        1,
    )


def test_save_then_load_round_trips(tmp_path) -> None:
    original = datasets.awkward_workspace()
    path = tmp_path / "awkward.json"
    saved = datasets.save_dataset(original, path)
    again = datasets.save_dataset(datasets.load_dataset(path))
    assert again == saved
    assert json.loads(path.read_text())["format_version"] == datasets.FORMAT_VERSION


def test_bad_attribute_type_is_named() -> None:
    bad = {"projects": [{"name": "p", "runs": [{"attributes": {"x": {"type": "tensor", "value": 1}}}]}]}
    with pytest.raises(ValueError, match="attribute 'x': unknown type 'tensor'"):
        datasets.load_dataset(bad)


def test_generator_is_deterministic_and_lazy() -> None:
    tracemalloc.start()
    ws = datasets.generate_workspace(runs=10, metrics=10, points=1_000_000, files=2, file_size=50_000_000, seed=3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20_000_000  # 100M points + 1 GB of files cost next to nothing
    again = datasets.generate_workspace(runs=10, metrics=10, points=1_000_000, files=2, file_size=50_000_000, seed=3)
    a = ws.project("workspace/sandbox").runs[4].attributes["metrics/m007"].series
    b = again.project("workspace/sandbox").runs[4].attributes["metrics/m007"].series
    assert np.array_equal(a.window(999_990.0, None, None, 5)[1], b.window(999_990.0, None, None, 5)[1])
    heads = [r.custom_run_id for r in ws.project("workspace/sandbox").runs if r.experiment_head]
    assert heads == ["run-00008", "run-00009"]  # the last run of each experiment


def test_awkward_workspace_contents() -> None:
    project = datasets.awkward_workspace().project(AWKWARD_PROJECT)
    basic = project.run("run-basic")
    types = {a.type for a in basic.attributes.values()}
    assert types == set(store.ALL_TYPES)
    assert len(project.run("run-wide").attributes) > datasets.AWKWARD_WIDE_ATTRIBUTES
    assert project.files[basic.get("files/big")].size == datasets.AWKWARD_BIG_FILE_SIZE
    assert project.files[basic.get("files/empty")].read() == b""
    assert project.run("run-child").fork_parent == "AWK-4" and project.run("run-child").fork_step == 4.0
    assert project.run("AWK-7").custom_run_id is None and project.run("run-trashed").trashed
    assert [v for v in basic.attributes["metrics/float_steps"].series.steps] == [0.1, 0.29, 1.0, 1.5]


LEGACY_RUN = {
    "sys_id": "L-1",
    "attributes": {
        "git": {
            "type": "git_ref",
            "value": {
                "commit": {"commitId": "abc", "message": "m"},
                "currentBranch": "main",
                "repositoryDirty": False,
                "remotes": ["origin"],
            },
        },
        "notebook": {"type": "notebook_ref", "value": {"notebookId": "n-1", "notebookName": "a.ipynb"}},
        "data": {
            "type": "artifact",
            "value": {
                "hash": "f" * 64,
                "files": [
                    {
                        "filePath": "x.csv",
                        "fileHash": "1" * 64,
                        "type": "S3",
                        "size": 3,
                        "metadata": {"location": "s3://b/x"},
                    }
                ],
            },
        },
    },
}


def test_legacy_only_types_in_the_json_format() -> None:
    spec = {"workspace": "w", "projects": [{"name": "legacy", "key": "L", "runs": [LEGACY_RUN]}]}
    run = datasets.load_dataset(spec).project("w/legacy").run("L-1")
    assert {path: run.attributes[path].type for path in LEGACY_RUN["attributes"]} == {
        "git": store.GIT_REF,
        "notebook": store.NOTEBOOK_REF,
        "data": store.ARTIFACT,
    }
    assert {path: run.get(path) for path in LEGACY_RUN["attributes"]} == {
        path: a["value"] for path, a in LEGACY_RUN["attributes"].items()
    }
    saved = datasets.save_dataset(datasets.load_dataset(spec))
    assert saved["projects"][0]["runs"][0]["attributes"] == LEGACY_RUN["attributes"]


def test_forked_runs_carry_the_fork_relation_as_sys_attributes() -> None:
    ws = datasets.new_workspace("w")
    datasets.add_project(ws, "p", "P")
    datasets.add_run(ws, "w/p", custom_run_id="root")
    datasets.add_run(ws, "w/p")  # P-2: no custom run id
    child = datasets.add_run(ws, "w/p", custom_run_id="child", fork_parent="P-1", fork_step=2.5)
    grandchild = datasets.add_run(ws, "w/p", fork_parent="child")
    of_plain = datasets.add_run(ws, "w/p", fork_parent="P-2", fork_step=1)

    def fork(run: store.Run) -> tuple:
        return tuple(run.get(f"sys/forking/{k}") for k in ("parent", "step", "depth"))

    assert fork(child) == ("root", 2.5, 1) and child.attributes["sys/forking/step"].type == store.FLOAT
    assert fork(grandchild) == ("child", None, 2) and "sys/forking/step" not in grandchild.attributes
    assert fork(of_plain) == ("P-2", 1.0, 1)  # the parent's run id: its sys id when it has no custom run id
    assert (child.fork_parent, child.fork_step) == ("P-1", 2.5)
    assert "sys/forking/parent" not in ws.project("w/p").run("root").attributes
    again = datasets.load_dataset(datasets.save_dataset(ws)).project("w/p")
    assert [fork(r) for r in again.runs] == [fork(r) for r in ws.project("w/p").runs]


def test_live_mutation_helpers() -> None:
    ws = datasets.awkward_workspace()
    run = ws.project(AWKWARD_PROJECT).run("run-basic")
    before = run.get("sys/modification_time")
    datasets.append_points(ws, AWKWARD_PROJECT, "run-basic", "metrics/loss", [200.0], [0.5], [7])
    assert run.attributes["metrics/loss"].series.last() == (200.0, 0.5, 7)
    assert run.get("sys/modification_time") > before
    with pytest.raises(ValueError, match="greater than the last step"):
        datasets.append_points(ws, AWKWARD_PROJECT, "run-basic", "metrics/loss", [1.0], [0.5], [8])
    datasets.set_attribute(ws, AWKWARD_PROJECT, "run-basic", "params/int", store.INT, 8)
    assert run.get("params/int") == 8
    new = datasets.add_run(ws, AWKWARD_PROJECT, custom_run_id="run-x", experiment="exp-alpha")
    assert new.sys_id == "AWK-9" and new.experiment_head and not run.experiment_head
    with pytest.raises(KeyError, match="no run 'nope'"):
        datasets.touch_run(ws, AWKWARD_PROJECT, "nope")


def test_generated_series_can_be_appended_to() -> None:
    ws = datasets.generate_workspace(runs=1, metrics=1, points=5)
    datasets.append_points(ws, "workspace/sandbox", "run-00000", "metrics/m000", [5.0], [42.0], [1])
    steps, values, _ = (
        ws.project("workspace/sandbox").runs[0].attributes["metrics/m000"].series.window(None, None, None, 10)
    )
    assert list(steps) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] and values[-1] == 42.0


def test_wire_float_points_decode_exactly_with_protobuf() -> None:
    stamps = np.array([0, 5, 1_000, 1_704_067_200_000, -1, 2**40], dtype=np.int64)
    steps = np.array([0.0, 0.1, 0.29, 3.0, -1.0, 1e300])
    values = np.array([math.nan, math.inf, -math.inf, -0.0, 1.5, 2.0])
    body = wire.encode_float_series_entry(
        "07", wire.encode_float_points(stamps, steps, values)
    ) + wire.encode_float_series_entry("empty", b"")
    decoded = series_values_pb2.ProtoFloatSeriesValuesResponseDTO.FromString(body)
    first = decoded.series[0].series.values
    assert decoded.series[0].requestId == "07" and decoded.series[1].requestId == "empty"
    assert [p.timestamp_millis for p in first] == list(stamps)
    assert [p.step for p in first] == list(steps)
    assert np.array_equal([p.value for p in first], values, equal_nan=True)
    assert math.copysign(1.0, first[3].value) == -1.0
    assert all(p.completion_ratio == 1.0 and not p.is_preview for p in first)


def test_cli_generate_writes_a_loadable_dataset(tmp_path) -> None:
    from typer.testing import CliRunner

    from neptune_exporter.fake_neptune.cli import app

    out = tmp_path / "gen.json"
    result = CliRunner().invoke(app, ["generate", "--runs", "3", "--points", "5000000", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "15,000,000 float points" not in result.output and out.stat().st_size < 100_000
    runs = datasets.load_dataset(out).project("workspace/sandbox").runs
    assert [r.custom_run_id for r in runs] == ["run-00000", "run-00001", "run-00002"]
    assert len(runs[2].attributes["metrics/m004"].series) == 5_000_000


def test_cli_serve_needs_exactly_one_source() -> None:
    from typer.testing import CliRunner

    from neptune_exporter.fake_neptune.cli import app

    result = CliRunner().invoke(app, ["serve", "--generate", "--awkward"])
    assert result.exit_code != 0 and "exactly one of" in result.output


@pytest.mark.parametrize("descending", [False, True])
def test_lineage_windows_page_across_the_fork(descending: bool) -> None:
    from neptune_exporter.fake_neptune.api_v3 import lineage_segments, read_window

    project = datasets.awkward_workspace().project(AWKWARD_PROJECT)
    segments = lineage_segments(project, project.run("run-child"), "metrics/loss", full=True)
    pages, after = [], None
    while True:  # the client's afterStep protocol with pages of 3 points
        window = read_window(segments, None, None, after, 3, descending)
        pages.extend(zip(window.steps.tolist(), window.values.tolist(), strict=True))
        if len(window.steps) < 3:
            break
        after = float(window.steps[-1])
    expected = [(float(s), 10.0 - s) for s in range(5)] + [(float(s), 100.0 + s) for s in range(5, 10)]
    assert pages == (expected[::-1] if descending else expected)
    own = read_window(
        lineage_segments(project, project.run("run-child"), "metrics/loss", full=False), 6.0, 8.0, None, 10, descending
    )
    assert sorted(own.steps.tolist()) == [6.0, 7.0, 8.0]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"projects": [{"runs": []}]}, 'project #1 (None) has no "name"'),
        (
            {
                "projects": [
                    {
                        "name": "p",
                        "runs": [
                            {},
                            {"attributes": {"m": {"type": "float_series", "points": [[1, 1.0, 1], [1, 2.0, 2]]}}},
                        ],
                    }
                ]
            },
            "run #2: attribute 'm': series steps must be strictly increasing, but step 1.0 follows 1.0",
        ),
        ({"projects": [{"name": "p", "runs": [{"fork_parent": "P-9"}]}]}, "fork parent 'P-9' is not a run"),
        ({"projects": [{"name": "p", "runs": [{"sys_id": "P-1"}, {"sys_id": "P-1"}]}]}, "run 'P-1' already exists"),
        ({"projects": [{"name": "p", "runs": [{"created": "yesterday"}]}]}, "run #1: Invalid isoformat"),
        (
            {"projects": [{"name": "p", "runs": [{"attributes": {"g": {"type": "git_ref", "value": "abc"}}}]}]},
            "attribute 'g': a git_ref value is an object, got str",
        ),
        (
            {
                "projects": [
                    {"name": "p", "runs": [{"attributes": {"n": {"type": "notebook_ref", "value": {"name": "x"}}}}]}
                ]
            },
            "attribute 'n': unknown notebook_ref field(s) ['name']",
        ),
        (
            {
                "projects": [
                    {
                        "name": "p",
                        "runs": [
                            {"attributes": {"a": {"type": "artifact", "value": {"hash": "h", "files": [{"size": 1}]}}}}
                        ],
                    }
                ]
            },
            "attribute 'a': artifact file {'size': 1} needs filePath and fileHash",
        ),
    ],
)
def test_dataset_errors_name_the_place_and_the_fix(spec: dict, message: str) -> None:
    with pytest.raises(datasets.DatasetError) as info:
        datasets.load_dataset(spec)
    assert message in str(info.value) and "README.md" in str(info.value)


def test_unreadable_dataset_file(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(datasets.DatasetError, match="cannot read dataset"):
        datasets.load_dataset(bad)


def test_archive_flag_variants_round_trip_and_shape_the_3x_view() -> None:
    from neptune_exporter.fake_neptune import api_v2, api_v3

    ws = datasets.generate_workspace(runs=2, params=1, metrics=0, string_series=0, histograms=0, files=0)
    datasets.archive_run(ws, "workspace/sandbox", "run-00001")
    datasets.set_archived_paths(ws, "archived")
    again = datasets.load_dataset(json.loads(json.dumps(datasets.save_dataset(ws))))
    project = again.project("workspace/sandbox")
    assert project.archived_paths == "archived" and [r.archived_paths for r in project.runs] == ["archived"] * 2
    paths = {run.sys_id: {a.path: a.value for a in api_v3.visible_attributes(run)} for run in project.runs}
    assert paths["SANDBOX-1"]["sys/archived"] is False and paths["SANDBOX-2"]["sys/archived"] is True
    assert "sys/trashed" not in paths["SANDBOX-1"] and "sys/group_tags" in paths["SANDBOX-1"]
    v2 = api_v2.run_attributes(project.runs[1])
    assert v2["sys/trashed"].value is True and "sys/archived" not in v2 and v2["sys/size"].type == store.FLOAT
    datasets.set_archived_paths(again, "trashed")
    trashed_only = {a.path: a.value for a in api_v3.visible_attributes(project.runs[1])}
    assert trashed_only["sys/trashed"] is True and "sys/archived" not in trashed_only
    with pytest.raises(ValueError, match="archived paths 'nope'"):
        datasets.set_archived_paths(again, "nope")
    with pytest.raises(datasets.DatasetError, match="archived_paths"):
        datasets.load_dataset({"projects": [{"name": "p", "archived_paths": "nope"}]})


def test_cli_serve_refuses_an_unknown_archive_flag_variant() -> None:
    from typer.testing import CliRunner

    from neptune_exporter.fake_neptune.cli import app

    result = CliRunner().invoke(app, ["serve", "--generate", "--runs", "1", "--archived-paths", "deleted"])
    assert result.exit_code == 2 and "archived paths 'deleted'" in result.output

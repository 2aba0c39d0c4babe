"""MLflow mapping of an exported run (no server): params, tags, keys, exact steps, artifacts, naming."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from neptune_exporter.errors import InvalidOptionError
from neptune_exporter.loaders.base import open_exported_run
from neptune_exporter.loaders.mlflow import (
    ArtifactItem,
    MetricChunk,
    Params,
    RunMapping,
    Tags,
    check_experiment_template,
    experiment_name,
    param_text,
    provenance_tags,
    truncated_param,
)
from tests.load_exports import COLLIDING, LONG_KEY, LONG_TEXT, T0_MS, write_rich_export


@pytest.fixture
def mapped(tmp_path):
    write_rich_export(tmp_path / "data", tmp_path / "files", "ws/p", "r1", points=30, part_target_bytes=512)
    export = open_exported_run(tmp_path / "data", tmp_path / "files", "ws/p", "r1")
    mapping = RunMapping(export, export.step_multiplier(None), tmp_path / "work")
    items = list(mapping.items())
    return export, mapping, items


def test_param_text_of_every_single_value_type():
    assert param_text("float", 0.1) == "0.1" and param_text("float", float("nan")) == "nan"
    assert param_text("int", 3) == "3" and param_text("bool", False) == "False"
    assert (
        param_text("string_set", ["b", "a"]) == '["a", "b"]'
        and param_text("string_set", ["a,b", "c"]) == '["a,b", "c"]'
    )
    assert param_text("datetime", datetime(2024, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)) == "2024-01-02T03:04:05.006+00:00"


def test_long_value_is_truncated_with_a_pointer_never_silently():
    text = truncated_param("x" * 7000, "neptune/long_values/k.txt", 6000)
    assert (
        len(text) == 6000
        and text.startswith("x" * 5000)
        and text.endswith("full value in artifact neptune/long_values/k.txt]")
    )


def test_params_tags_and_long_values(mapped):
    export, mapping, items = mapped
    params = {k: v for item in items if isinstance(item, Params) for k, v in item.values.items()}
    tags = {k: v for item in items if isinstance(item, Tags) for k, v in item.values.items()}
    assert (
        params["params/set"] == '["a", "b", "c"]'
        and params["params/epochs"] == "12"
        and len(params["params/long"]) == 6000
    )
    assert "sys/tags" not in params and tags == {"baseline": "", "with space": "", "neptune.tag.mlflow.note": ""}
    long_artifact = next(i for i in items if isinstance(i, ArtifactItem) and i.local.name == "long.txt")
    assert long_artifact.artifact_dir == "neptune/long_values/params" and long_artifact.local.read_text() == LONG_TEXT
    assert all(len(k) <= 250 for k in params) and len([k for k in params if k.startswith("cfg/a")]) == 2


def test_key_map_lists_every_renamed_key(mapped):
    _, mapping, items = mapped
    key_map = items[-1]
    assert key_map.artifact_dir == "neptune" and key_map.local.name == "key_map.json"
    recorded = json.loads(key_map.local.read_text())
    assert set(recorded["attributes"]) == {LONG_KEY, "weird//key..x:y", *COLLIDING}
    assert len(set(recorded["attributes"].values())) == 4
    assert recorded["tags"] == {"mlflow.note": "neptune.tag.mlflow.note"}


def test_metrics_have_exact_integer_steps_and_original_timestamps(mapped):
    export, _, items = mapped
    assert export.step_multiplier(None) == 100
    chunks = [i for i in items if isinstance(i, MetricChunk)]
    keys = np.concatenate([np.array(c.names)[c.codes] for c in chunks])
    steps = np.concatenate([c.steps for c in chunks])
    stamps = np.concatenate([c.timestamps for c in chunks])
    assert sorted(steps[keys == "metrics/frac"].tolist()) == [50, 125, 200]
    assert sorted(steps[keys == "metrics/loss"].tolist()) == [i * 100 for i in range(30)]
    assert sorted(stamps[keys == "metrics/loss"].tolist()) == [T0_MS + 10 * i for i in range(30)]


def test_files_and_series_become_artifacts_under_the_attribute_path(mapped):
    _, _, items = mapped
    artifacts = {(i.artifact_dir, i.local.name) for i in items if isinstance(i, ArtifactItem)}
    assert {
        ("files/model", "model.bin"), ("files/source", "source"), ("images/pred/step_100", "pred_1.png"),
        ("images/pred/step_200", "pred_2.png"), ("logs/stdout", "series.jsonl"), ("hist/w", "histograms.jsonl"),
    } <= artifacts  # fmt: skip


def test_user_multiplier_must_make_every_step_whole(mapped):
    export, _, _ = mapped
    assert export.step_multiplier(1000) == 1000
    with pytest.raises(InvalidOptionError, match=r"step 1.25 of metrics/frac times the step multiplier 10 "):
        export.step_multiplier(10)


def test_experiment_names_and_templates():
    assert experiment_name("{project}/{experiment}", "ws/p", "exp") == "ws/p/exp"
    assert experiment_name("{project}/{experiment}", "ws/p", None) == "ws/p"
    assert experiment_name("neptune-{experiment}@{project}", "ws/p", "e") == "neptune-e@ws/p"
    with pytest.raises(InvalidOptionError, match="only the fields"):
        check_experiment_template("{team}/{experiment}")


def test_provenance_tags_name_the_export(mapped):
    export, _, _ = mapped
    tags = provenance_tags(export, 100, "loading")
    assert (
        tags["neptune.project"] == "ws/p" and tags["neptune.run_id"] == "r1" and tags["neptune.load_state"] == "loading"
    )
    assert tags["neptune.export_checksum"] == export.checksum and tags["neptune.step_multiplier"] == "100"
    assert len(tags["neptune.run_key"]) == 32


def test_missing_file_is_one_clear_error(tmp_path):
    from neptune_exporter.errors import OutputPathError

    write_rich_export(tmp_path / "data", tmp_path / "files", "ws/p", "r1", points=8)
    next((tmp_path / "files").rglob("model.bin")).unlink()
    export = open_exported_run(tmp_path / "data", tmp_path / "files", "ws/p", "r1")
    with pytest.raises(OutputPathError, match="file of files/model is missing.*fix: check --files-path"):
        list(RunMapping(export, 100, tmp_path / "work").items())


def test_key_map_never_gives_two_originals_one_key_whatever_the_order():
    from neptune_exporter.loaders.base import MLFLOW, KeyMap, map_key

    renamed = map_key("a?b", MLFLOW)  # an invalid key's target ...
    for order in (["a?b", renamed], [renamed, "a?b"]):  # ... also present as a valid original
        keys = KeyMap(MLFLOW)
        mapped = {original: keys(original) for original in order}
        assert len(set(mapped.values())) == 2 and mapped[order[0]] == renamed  # first come keeps it
        assert {original: keys(original) for original in order} == mapped  # stable on repeated calls

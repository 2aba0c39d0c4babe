"""Validation's own mapping rules (no target): key renames checked against the recorded key map, exact steps."""

from __future__ import annotations

import numpy as np
import pytest

from neptune_exporter.errors import InvalidOptionError
from neptune_exporter.validation.mlflow import ATTRIBUTE_KEYS, TAG_KEYS, expected_experiment, param_text
from neptune_exporter.validation.rules import (
    RecordedKeys,
    decimals_needed,
    expected_multiplier,
    run_key,
    scaled,
    step_text,
)
from neptune_exporter.validation.wandb import KEYS as WANDB_KEYS
from neptune_exporter.validation.wandb import config_value, wandb_run_id


def test_keys_a_target_stores_as_they_are():
    assert ATTRIBUTE_KEYS.valid("metrics/loss") and ATTRIBUTE_KEYS.valid("a b:c-d.e") and ATTRIBUTE_KEYS.valid("résumé")
    assert not any(ATTRIBUTE_KEYS.valid(k) for k in ("a?b", "a//b", "a..b", "/a", "a/", "", "k" * 251))
    assert (
        not TAG_KEYS.valid("mlflow.note")
        and TAG_KEYS.storable("neptune.tag.mlflow.note")
        and TAG_KEYS.valid("with space")
    )
    assert not WANDB_KEYS.valid("_step") and not WANDB_KEYS.valid("a:b") and WANDB_KEYS.valid("params/lr")


def test_a_needed_rename_is_accepted_and_used():
    keys = RecordedKeys(ATTRIBUTE_KEYS, {"a?b": "a_b_1234"})
    assert (keys("a?b"), keys("metrics/loss")) == ("a_b_1234", "metrics/loss")
    assert keys.differences("p", "r") == []


def test_a_valid_key_renamed_is_reported_and_its_own_name_expected():
    keys = RecordedKeys(ATTRIBUTE_KEYS, {"metrics/frac": "metrics/fraction"})
    assert keys("metrics/frac") == "metrics/frac"
    ((difference),) = keys.differences("p", "r")
    assert (difference.kind, difference.key, difference.problem, difference.expected, difference.actual) == (
        "key", "metrics/frac", "renamed", "metrics/frac", "metrics/fraction",
    )  # fmt: skip


def test_a_valid_key_may_move_aside_for_a_rename_that_took_its_name():
    keys = RecordedKeys(ATTRIBUTE_KEYS, {"a?b": "a_b", "a_b": "a_b_5678"})
    assert (keys("a?b"), keys("a_b")) == ("a_b", "a_b_5678") and keys.differences("p", "r") == []


def test_an_invalid_key_left_alone_an_invalid_rename_and_a_shared_key_are_reported():
    keys = RecordedKeys(ATTRIBUTE_KEYS, {"x#1": "x..1", "y#1": "y_1", "y%1": "y_1"})
    for original in ("a?b", "x#1", "y#1", "y%1"):
        keys(original)
    assert {(d.key, d.problem) for d in keys.differences("p", "r")} == {
        ("a?b", "not renamed"), ("x#1", "invalid rename"), ("y_1", "shared"),
    }  # fmt: skip


def test_steps_scale_exactly_by_the_smallest_power_of_ten():
    assert decimals_needed(np.array([0, 2_500_000, -1_250_000])) == 2 and decimals_needed(np.array([3])) == 6
    assert expected_multiplier([np.array([1_000_000]), np.array([500_000])], None) == 10
    assert expected_multiplier([np.array([500_000])], 1000) == 1000 and expected_multiplier([], None) == 1
    assert scaled(np.array([1_250_000, -2_000_000]), 100).tolist() == [125, -200]
    with pytest.raises(InvalidOptionError, match="not whole"):
        scaled(np.array([1_250_000]), 10)
    assert [step_text(u) for u in (2_500_000, 100_000_000, 3, -1_500_000, 0)] == ["2.5", "100", "0.000003", "-1.5", "0"]


def test_run_identity_and_value_texts():
    assert len(run_key("ws/p", "r")) == 32 and run_key("ws/p", "r") != run_key("ws/p", "s")
    assert wandb_run_id("team/vision", "RUN-7") == f"run-7-{run_key('team/vision', 'RUN-7')[:12]}"
    assert wandb_run_id("p", "!!!") == run_key("p", "!!!")[:12]
    assert expected_experiment("{project}/{experiment}", "ws/p", None) == "ws/p"
    assert expected_experiment("neptune-{experiment}@{project}", "ws/p", "e") == "neptune-e@ws/p"
    assert param_text("float", float("inf")) == "inf" and param_text("string_set", ["b", "a"]) == '["a", "b"]'
    assert config_value("float", float("nan")) == "NaN" and config_value("string_set", {"b", "a"}) == ["a", "b"]


def test_validation_reads_every_type_from_its_parquet_column():
    from neptune_exporter.model import AttributeType
    from neptune_exporter.rows import value_column as writer_column
    from neptune_exporter.validation.export_view import value_column

    assert {t.value: value_column(t.value) for t in AttributeType} == {t.value: writer_column(t) for t in AttributeType}

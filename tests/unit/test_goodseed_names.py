"""GoodSeed names and steps: run ids GoodSeed accepts, project templates, and float64 steps that read back exactly
(the loader's fast rule agrees with validation's exact decimal rule on every kind of step)."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from neptune_exporter.errors import InvalidOptionError
from neptune_exporter.loaders.goodseed.names import (
    RUN_ID_PATTERN,
    goodseed_key,
    goodseed_run_id,
    project_name,
    real_steps,
)
from neptune_exporter.validation.goodseed import exact_in_real, expected_key, expected_project, expected_run_id, step_of


@pytest.mark.parametrize("run_id", ["RUN-7", "run_1", "exp-7/b", "ü", "-x-", "a" * 129, "sys id #1"])
def test_run_ids_are_accepted_by_goodseed_unique_and_agree_with_validation(run_id):
    mapped = goodseed_run_id("ws/p", run_id)
    assert RUN_ID_PATTERN.match(mapped) and len(mapped) <= 128 and mapped == expected_run_id("ws/p", run_id)
    assert (mapped == run_id) == (RUN_ID_PATTERN.match(run_id) is not None and len(run_id) <= 128)
    assert goodseed_run_id("ws/other", run_id) == run_id or goodseed_run_id("ws/other", run_id) != mapped


@pytest.mark.parametrize(
    ("template", "expected"),
    [(None, "ws/proj"), ("{name}", "proj"), ("migrated/{workspace}-{name}", "migrated/ws-proj")],
)
def test_project_templates(template, expected):
    assert project_name(template, "ws/proj") == expected == expected_project(template, "ws/proj")


@pytest.mark.parametrize("template", ["{nope}", "../{name}", "{project}/", "a//{name}", "{name}\\x", "{"])
def test_bad_project_templates_are_one_clear_error(template):
    with pytest.raises(InvalidOptionError) as raised:
        project_name(template, "ws/proj")
    assert "--goodseed-project-template" in raised.value.message and raised.value.remedy


@pytest.mark.parametrize("path", ["sys/id", "sys/state", "sys/closed_time", "neptune.run_id", "neptune.original/x"])
def test_keys_goodseed_or_the_provenance_write_move_and_others_stay(path):
    assert goodseed_key(path) == "neptune.original/" + path == expected_key(path)
    for kept in ("sys/name", "sys/tags", "/leading", "a//b", "neptune/x", "ünï/λ"):
        assert goodseed_key(kept) == kept == expected_key(kept)


def test_fast_step_rule_agrees_with_the_exact_decimal_rule():
    rng = np.random.default_rng(7)
    edges = [0, 1, 10**6 - 1, 2**33 * 10**6 - 1, 2**33 * 10**6, 2**53 - 1, 2**53, 2**53 + 1, 10**18 - 1]
    samples = np.concatenate(
        [
            np.array(edges + [-e for e in edges], dtype=np.int64),
            rng.integers(-(10**18) + 1, 10**18, 2000, dtype=np.int64),  # any decimal(18,6)
            rng.integers(-(2**40), 2**40, 2000, dtype=np.int64) * 10**6,  # whole steps
            rng.integers(-(10**16), 10**16, 2000, dtype=np.int64),  # fractions near the 2**33 edge
        ]
    )
    steps, exact = real_steps(samples, None)
    for unscaled, step, fast in zip(samples.tolist(), steps.tolist(), exact.tolist(), strict=True):
        assert fast == exact_in_real(unscaled, None), unscaled
        assert step == float(Decimal(unscaled).scaleb(-6)), unscaled
        if fast:
            assert step_of(step, None) == unscaled
    whole = np.array([0, 2**53, 2**53 + 1, 2**60, 999_999_999_999 * 10**6, -(2**62)], dtype=np.int64)
    steps, exact = real_steps(whole, 10**6)
    assert exact.tolist() == [exact_in_real(s, 10**6) for s in whole.tolist()]  # × 10**6: scaled = unscaled
    assert exact.tolist() == [True, True, False, True, False, True]

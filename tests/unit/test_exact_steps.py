"""Float steps become decimal128(18,6) exactly: each float's exact decimal expansion rounded half-even to 6 places,
checked against Python's Decimal (the test may use per-row Decimals; the product never does)."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import pytest

from neptune_exporter.errors import InvalidOptionError, StepOutOfRangeError
from neptune_exporter.model import (
    decimal_array_to_unscaled,
    integer_steps,
    step_multiplier_for,
    step_to_unscaled,
    steps_to_decimal_array,
)
from neptune_exporter.validation.rules import scaled


def exact_millionths(step: float) -> int:
    return int((Decimal(step) * 10**6).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def awkward_steps() -> np.ndarray:
    rng = np.random.default_rng(14)
    ties = (rng.integers(0, 10**12, 20_000) + 0.5) / 1e6  # the float nearest a half-millionth, and its neighbours
    dyadic_ties = (2 * rng.integers(0, 2**30, 5_000) + 1) / 128.0  # k + 0.5 millionths exactly (0.0078125, ...)
    steps = np.concatenate(
        [
            [0.0, -0.0, 0.1, 0.29, 0.57, 0.58, 1e-6, 5e-7, 5e-324, 123456789.123456, 999_999_999_999.0],
            [np.nextafter(1e12, 0), -np.nextafter(1e12, 0), 2.0**39 + 0.5],
            ties,
            np.nextafter(ties, np.inf),
            np.nextafter(ties, -np.inf),
            dyadic_ties,
            -dyadic_ties,
            rng.uniform(-1e12, 1e12, 20_000),
            10 ** rng.uniform(-8, 11.99, 20_000),
        ]
    )
    return steps[np.abs(steps) < 1e12]


def test_every_step_is_its_exact_decimal_expansion_rounded_half_even():
    steps = awkward_steps()
    got = decimal_array_to_unscaled(steps_to_decimal_array(steps)).tolist()
    wrong = [(s, g) for s, g in zip(steps.tolist(), got, strict=True) if g != exact_millionths(s)]
    assert wrong == []
    assert got[:11] == [0, 0, 100_000, 290_000, 570_000, 580_000, 1, 0, 0, 123456789123456, 999_999_999_999_000_000]
    assert exact_millionths(0.0078125) == 7812 and step_to_unscaled(0.0078125) == 7812  # a true tie: to even


@pytest.mark.parametrize("step", [1e12, 1e12 + 1, 1e15, -1e12, 1e300, math.inf, -math.inf, math.nan])
def test_a_step_the_column_cannot_hold_is_refused_naming_the_attribute_and_range(step):
    with pytest.raises(StepOutOfRangeError) as raised:
        steps_to_decimal_array([0.0, step, 1.0], attribute="metrics/a//b")
    error = raised.value
    assert error.attribute == "metrics/a//b"
    assert error.message.startswith(f"step {step!r} of metrics/a//b is outside the steps an export can hold exactly")
    assert "-999999999999.999999 to 999999999999.999999" in error.message
    assert "--attributes '^(?!metrics/a//b$)'" in error.remedy


# ----------------------------------------------------------------------------- integer steps at load

EDGES = np.array([1, -1, 10**13, 123456789123456, 999_999_999_999_999_999, -999_999_999_999_999_999])


@pytest.mark.parametrize("multiplier", [10**6, 10**6 * 9_223, 2 * 10**6, 7 * 10**6])
def test_integer_steps_are_exact_where_step_times_millionths_overflows_int64(multiplier):
    expected = [u * multiplier // 10**6 for u in EDGES.tolist()]
    fits = [abs(e) <= 2**63 - 1 for e in expected]
    inside = EDGES[np.array(fits)]
    assert integer_steps(inside, multiplier).tolist() == [e for e, ok in zip(expected, fits, strict=True) if ok]
    assert scaled(inside, multiplier).tolist() == integer_steps(inside, multiplier).tolist()  # validation's own rule
    if not all(fits):
        with pytest.raises(StepOutOfRangeError, match=r"beyond the integer steps a target holds.*int64"):
            integer_steps(EDGES, multiplier, "metrics/x")
        with pytest.raises(InvalidOptionError, match="beyond int64"):
            scaled(EDGES, multiplier)


def test_a_step_that_does_not_become_whole_is_named_in_exact_decimals():
    with pytest.raises(InvalidOptionError) as raised:
        integer_steps(np.array([10**13, 123456789123456]), 1000, "metrics/fine")
    assert (
        raised.value.message
        == "step 123456789.123456 of metrics/fine times the step multiplier 1000 is not a whole number"
    )


def test_the_automatic_multiplier_is_the_smallest_exact_power_of_ten():
    assert step_multiplier_for([np.array([1, 10**13])]) == 10**6  # steps 0.000001 and 1e7
    assert step_multiplier_for([np.array([1000, 10**16])]) == 1000  # steps 0.001 and 1e10
    assert step_multiplier_for([np.array([999_999_999_999_000_000])]) == 1

"""NQL parser/evaluator and attribute-name filters of the fake Neptune server."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from neptune_exporter.fake_neptune import nql, store
from neptune_exporter.fake_neptune.datasets import make_attribute


def run_with(**attrs: tuple[str, object]) -> store.Run:
    run = store.Run("P-1")
    for path, (type_, value) in attrs.items():
        run.attributes[path.replace("__", "/")] = make_attribute(path.replace("__", "/"), type_, value)
    return run


RUN = run_with(
    sys__name=(store.STRING, "exp-alpha"),
    p__lr=(store.FLOAT, 0.1),
    p__i=(store.INT, 3),
    p__b=(store.BOOL, True),
    p__s=(store.STRING, 'a"b\\c'),
    p__nan=(store.FLOAT, math.nan),
    sys__tags=(store.STRING_SET, {"t1", "two words"}),
    sys__creation_time=(store.DATETIME, datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    m__loss=(store.FLOAT_SERIES, [(0.0, 1.0, 1), (1.0, 0.25, 2)]),
    logs=(store.STRING_SERIES, [(0.0, "first", 1), (1.0, "last line", 2)]),
)


@pytest.mark.parametrize(
    "query, expected",
    [
        ("", True),
        (
            '((`sys/name`:string MATCHES "alp")) OR ((`sys/name`:string MATCHES "b") AND (`sys/name`:string NOT MATCHES "c"))',
            True,
        ),
        ('(`sys/name`:string == "e1") OR (`sys/name`:string == "exp-alpha")', True),
        ('`p/lr`:float > "0.05"', True),
        ('`p/lr`:float > "0.1"', False),
        ('`p/lr`:float >= "0.1"', True),
        ('`p/i`:int <= "3" AND `p/i`:int != "4"', True),
        ('(`p/b`:bool == "True") AND (`p/i`:int < "3")', False),
        ('`p/s`:string == "a\\"b\\\\c"', True),
        ('(`sys/tags`:stringSet CONTAINS "t1")', True),
        ('(`sys/tags`:stringSet CONTAINS "t")', False),  # set membership, not substring
        ('(`sys/tags`:stringSet NOT CONTAINS "bad")', True),
        ('`sys/name`:string CONTAINS "pha"', True),  # substring for strings
        ("NOT (`x` EXISTS)", True),
        ("`p/lr` EXISTS AND NOT `p/lr`:int EXISTS", True),  # typed EXISTS checks the type
        ('`sys/creation_time`:datetime >= "2024-01-02T03:04:05+00:00"', True),
        ('`sys/creation_time`:datetime > "2024-01-02T03:04:05Z"', False),
        ("(`sys/trashed`:bool = false)", False),  # missing attribute: every comparison is false
        ("`m/loss`:floatSeries < 0.5", True),  # series compare by last value; unquoted numbers (neptune-client)
        ('last(`m/loss`:floatSeries) > "0.2"', True),
        ('`logs`:stringSeries MATCHES "^last"', True),
        ('`p/nan`:float == "nan"', False),
        ('`p/nan`:float != "nan"', True),
        ("p/b:bool = true", True),  # bare attribute names
    ],
)
def test_evaluate(query: str, expected: bool) -> None:
    assert nql.evaluate(nql.parse(query), RUN) is expected


@pytest.mark.parametrize(
    "query, position, fragment",
    [
        ("`a` = ", 6, "expected a value"),
        ("`a`:foo = 1", 4, "unknown attribute type 'foo'"),
        ("(`a` = 1", 8, "expected ')'"),
        ("`a` = 1 `b` = 2", 8, "unexpected"),
        ("`a` LIKE 1", 4, "expected an operator"),
        ('`a` = "unterminated', 6, "unexpected character"),
    ],
)
def test_parse_errors_name_the_position(query: str, position: int, fragment: str) -> None:
    with pytest.raises(nql.NQLError) as info:
        nql.parse(query)
    assert info.value.position == position and fragment in str(info.value)


def test_invalid_regex_is_an_nql_error() -> None:
    with pytest.raises(nql.NQLError, match="invalid regex"):
        nql.evaluate(nql.parse('`sys/name`:string MATCHES "("'), RUN)


def test_value_not_fitting_type_is_an_nql_error() -> None:
    with pytest.raises(nql.NQLError, match="does not fit"):
        nql.evaluate(nql.parse('`p/lr`:float > "abc"'), RUN)


def test_name_filter_alternatives_and_types() -> None:
    body = {
        "attributeNameFilter": {
            "mustMatchAny": [
                {"mustMatchRegexes": ["^metrics/"], "mustNotMatchRegexes": ["test"]},
                {"mustMatchRegexes": ["^params/lr$"]},
            ]
        },
        "attributeFilter": [{"attributeType": "floatSeries"}, {"attributeType": "float"}],
    }
    accepts = nql.name_filter_from_body(body).accepts
    assert accepts("metrics/loss", store.FLOAT_SERIES)
    assert not accepts("metrics/test_loss", store.FLOAT_SERIES)
    assert accepts("params/lr", store.FLOAT)
    assert not accepts("params/lr", store.INT)
    assert not accepts("params/lr2", store.FLOAT)


def test_name_filter_exact_names_and_bad_input() -> None:
    accepts = nql.name_filter_from_body({"attributeNamesFilter": ["a", "b"]}).accepts
    assert accepts("a", store.STRING) and not accepts("c", store.STRING)
    with pytest.raises(ValueError, match="invalid attribute-name regex"):
        nql.name_filter_from_body({"attributeNameFilter": {"mustMatchAny": [{"mustMatchRegexes": ["("]}]}})
    with pytest.raises(ValueError, match="unknown attribute type"):
        nql.name_filter_from_body({"attributeFilter": [{"attributeType": "nope"}]})

"""The --where language: parsing, errors with positions, neptune-query Filter and 2.x NQL output."""

from datetime import UTC, datetime

import pytest

from neptune_exporter.errors import InvalidQueryError
from neptune_exporter.exporters.where import (
    And,
    Comparison,
    Exists,
    Not,
    Or,
    parse_where,
    paths_of,
    to_neptune_query_filter,
    to_nql,
)


def test_parses_the_documented_example():
    expr = parse_where('params/lr > 0.01 and sys/tags contains "best"')
    assert expr == And((Comparison("params/lr", ">", 0.01, 0), Comparison("sys/tags", "contains", "best", 21)))


def test_precedence_not_binds_tighter_than_and_than_or():
    expr = parse_where("not a == 1 or b == 2 and c == 3")
    assert isinstance(expr, Or)
    assert isinstance(expr.operands[0], Not)
    assert isinstance(expr.operands[1], And)


def test_parentheses_group():
    expr = parse_where("(a == 1 or b == 2) and c == 3")
    assert isinstance(expr, And)
    assert isinstance(expr.operands[0], Or)


@pytest.mark.parametrize(
    "text, value",
    [
        ("x == 42", 42),
        ("x == -1", -1),
        ("x == 0.5", 0.5),
        ("x == 1e-3", 0.001),
        ("x == true", True),
        ("x == FALSE", False),
        ('x == "a \\"q\\" \\\\ b"', 'a "q" \\ b'),
        ("x == 'it''s'", "it's"),
        ("x == 'żółw ✓'", "żółw ✓"),
        ("x == 2024-01-31", datetime(2024, 1, 31, tzinfo=UTC)),
        ("x == 2024-01-31T12:00:00Z", datetime(2024, 1, 31, 12, tzinfo=UTC)),
        ("x == 2024-01-31T14:00:00+02:00", datetime(2024, 1, 31, 12, tzinfo=UTC)),
    ],
)
def test_literals(text, value):
    expr = parse_where(text)
    assert expr.value == value and type(expr.value) is type(value)


def test_operators_and_aliases():
    assert parse_where("a = 1").operator == "=="
    assert parse_where("a>=1").operator == ">="
    assert parse_where('a not contains "x"').operator == "not contains"
    assert parse_where('a NOT MATCHES "x"').operator == "not matches"


def test_exists_and_backquoted_paths():
    assert parse_where("not exists(params/x)") == Not(Exists("params/x", 4))
    expr = parse_where("`params/odd name (v2)` != 'z'")
    assert expr.path == "params/odd name (v2)"
    assert paths_of(parse_where("a == 1 and (exists(b) or not c > 2)")) == {"a", "b", "c"}


@pytest.mark.parametrize(
    "text, problem, position",
    [
        ("", "empty", 1),
        ("params/lr >", "expected a value", 12),
        ("a > foo", "'foo' is not a value", 5),
        ('a == "x', "string is not closed", 6),
        ("(a == 1", "')'", 8),
        ("a == 1 b == 2", "unexpected 'b'", 8),
        ('a matches "("', "invalid regular expression", 11),
        ("a contains 1", "needs a quoted string", 12),
        ("a ~ 1", "expected an operator", 3),
        ("a > true", "cannot compare true/false", 5),
        ("`a == 1", "backquoted path is not closed", 1),
        ('a == "\\q"', "unknown escape", 7),
    ],
)
def test_errors_name_problem_position_and_fix(text, problem, position):
    with pytest.raises(InvalidQueryError) as info:
        parse_where(text)
    assert problem in info.value.message
    assert f"at position {position}:" in info.value.message
    assert "params/lr > 0.01" in info.value.remedy


def test_neptune_query_filter_uses_known_and_inferred_types():
    expr = parse_where('params/lr > 0.01 and sys/tags contains "best" and p/s == "a\\"b" and p/b == true')
    nql = str(to_neptune_query_filter(expr, {"params/lr": "float"}))
    assert '`params/lr`:float > "0.01"' in nql
    assert '`sys/tags`:stringSet CONTAINS "best"' in nql
    assert '`p/s`:string == "a\\"b"' in nql
    assert '`p/b`:bool == "True"' in nql


def test_fork_attributes_have_known_types():
    nql = str(to_neptune_query_filter(parse_where('sys/forking/parent == "run-parent" and sys/forking/step >= 4')))
    assert '`sys/forking/parent`:string == "run-parent"' in nql and '`sys/forking/step`:float >= "4"' in nql
    assert to_nql(parse_where("sys/forking/step >= 4")) == "`sys/forking/step`:float >= 4"  # no int/float guess


def test_neptune_query_filter_leaves_ambiguous_types_to_neptune_query():
    assert str(to_neptune_query_filter(parse_where("n == 3"))) == '`n` == "3"'
    assert str(to_neptune_query_filter(parse_where("not exists(params/x)"))) == "NOT (`params/x` EXISTS)"


def test_neptune_query_filter_matches_and_datetimes():
    assert (
        str(to_neptune_query_filter(parse_where('sys/name matches "^exp"'))) == '((`sys/name`:string MATCHES "^exp"))'
    )
    nql = str(to_neptune_query_filter(parse_where('sys/creation_time >= "2024-01-02T03:04:05Z"')))
    assert nql.startswith("`sys/creation_time`:datetime >= ")
    text = nql.split(">= ")[1].strip('"')
    assert datetime.fromisoformat(text) == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_nql_for_neptune2():
    expr = parse_where('sys/tags contains "best" and not (p/b == false or p/s != "x") and p/lr > 0.5')
    assert to_nql(expr, {"p/lr": "float"}) == (
        '(`sys/tags`:stringSet CONTAINS "best") AND (NOT ((`p/b`:bool = false) OR (`p/s`:string != "x")))'
        " AND (`p/lr`:float > 0.5)"
    )


def test_nql_tries_numeric_types_when_unknown():
    assert to_nql(parse_where("n >= 2")) == "((`n`:float >= 2) OR (`n`:int >= 2))"
    assert to_nql(parse_where("n != 2")) == "((`n`:float != 2) OR (`n`:int != 2))"
    assert to_nql(parse_where("sys/creation_time > 2024-01-01")) == (
        '`sys/creation_time`:datetime > "2024-01-01T00:00:00.000Z"'
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("params/lr > 0.02", {"AWK-4", "AWK-5", "AWK-6"}),
        ("params/lr != 0.1", {"AWK-5", "AWK-6", "AWK-7"}),
        ('sys/tags contains "wide" or sys/tags contains "ünï"', {"AWK-3", "AWK-8"}),
        ('sys/tags not contains "wide" and exists(params/lr)', {"AWK-4", "AWK-5", "AWK-6", "AWK-7"}),
        ("not exists(params/lr)", {"AWK-1", "AWK-2", "AWK-3", "AWK-8"}),
        ("params/bool == true and params/int < 0", {"AWK-1"}),
        ('sys/name matches "^exp-(al|ga)"', {"AWK-1", "AWK-8"}),
        ("sys/creation_time >= 2024-01-01T05:00:00Z", {"AWK-5", "AWK-6", "AWK-7", "AWK-8"}),
    ],
)
def test_both_translations_select_the_same_runs_on_the_fake_server(text, expected):
    from neptune_exporter.fake_neptune import nql
    from neptune_exporter.fake_neptune.datasets import awkward_workspace

    runs = awkward_workspace().project("workspace/awkward").runs
    expr = parse_where(text)
    for query in (to_nql(expr), str(to_neptune_query_filter(expr))):
        assert {r.sys_id for r in runs if nql.evaluate(nql.parse(query), r)} == expected

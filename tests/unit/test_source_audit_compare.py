"""The source audit's comparison rules on plain facts: what differs, how it is named, what is not a difference."""

from __future__ import annotations

from datetime import UTC, datetime

from neptune_exporter.exporters.audit_facts import RunFacts, SeriesFacts, normal
from neptune_exporter.validation.report import RunValidation
from neptune_exporter.validation.source_audit import SourceAuditReport, compare_run

T0 = normal(datetime(2024, 1, 1, tzinfo=UTC))
T1 = normal(datetime(2024, 1, 2, tzinfo=UTC))


def facts(modified=T0, **series: SeriesFacts) -> RunFacts:
    run = RunFacts("r", atoms={"sys/modification_time": modified, "p/nan": float("nan"), "sys/tags": ["a", "b"]})
    run.types = {"sys/modification_time": "datetime", "p/nan": "float", "sys/tags": "string_set"}
    run.types.update({path: "float_series" for path in series})
    run.series = dict(series)
    return run


def found(source: RunFacts, export: RunFacts, unavailable=()) -> list[tuple]:
    return [(d.kind, d.key, d.problem, d.expected, d.actual) for d in compare_run("p", source, export, unavailable)]


def test_equal_facts_nan_and_set_order_included_have_no_differences():
    export = facts(m=SeriesFacts(3, 0.0, 2.0, 1.5))
    export.atoms["sys/tags"] = normal({"b", "a"})
    assert found(facts(m=SeriesFacts(3, 0.0, 2.0, 1.5)), export) == []


def test_names_types_and_attributes_on_one_side_only():
    source, export = facts(m=SeriesFacts(None, None, 1.0, 2.0)), facts()
    export.types["extra"] = "int"
    export.types["p/nan"] = "int"
    assert found(source, export) == [
        ("attribute", "m", "missing from export", "float_series", None),
        ("attribute", "extra", "not on the server", None, "int"),
        ("attribute", "p/nan", "type", "float", "int"),
    ]


def test_an_empty_series_on_the_server_needs_no_rows():
    assert found(facts(m=SeriesFacts(count=0)), facts()) == []


def test_a_shorter_series_is_lost_points_unless_the_run_changed_on_the_server_since():
    source, export = SeriesFacts(5, 0.0, 4.0, 9.0), SeriesFacts(4, 0.0, 3.0, 8.0)
    assert found(facts(m=source), facts(m=export)) == [
        ("series", "m", "count", 5, 4),
        ("series", "m", "last step", 4.0, 3.0),
        ("series", "m", "last value", 9.0, 8.0),
    ]
    assert found(facts(T1, m=source), facts(m=export), unavailable=("count",)) == [
        ("atom", "sys/modification_time", "newer on the server", T1, T0),
        (
            "series",
            "m",
            "source has more",
            4.0,
            "3.0 (last step 4 on the server, 3 in the export; 5 points on the server, 4 in the export)",
        ),
    ]


def test_figures_the_source_cannot_give_are_not_compared_and_the_report_says_so():
    assert (
        found(
            facts(m=SeriesFacts(None, None, 4.0, 9.0)), facts(m=SeriesFacts(7, 1.0, 4.0, 9.0)), ("count", "first step")
        )
        == []
    )
    report = SourceAuditReport(
        "neptune3",
        [RunValidation("p", "gone", None, checked={"not_on_server": 1})],
        not_compared=["series count: not available without a full download; use --deep"],
    )
    assert report.ok and report.to_json()["runs_not_on_server"] == ["p/gone"]
    markdown = report.to_markdown()
    assert "## In the export, no longer on the server\n\n- `p/gone`" in markdown
    assert "## Not compared\n\n- series count: not available without a full download; use --deep\n" in markdown


def test_the_servers_total_of_series_points_is_compared_where_it_reports_one():
    source, export = facts(m=SeriesFacts(None, None, 2.0, 1.5)), facts(m=SeriesFacts(3, 0.0, 2.0, 1.5))
    export.series_points = 3
    assert found(source, export) == []  # no total reported: nothing to compare
    source.series_points = 3
    assert found(source, export) == []
    source.series_points = 4  # a point lost mid-series: the tail is the same
    assert found(source, export) == [("run", "series points", "series points (all series together)", 4, 3)]
    changed = facts(T1, m=SeriesFacts(None, None, 2.0, 1.5))
    changed.series_points = 4  # points logged on the server after the export
    assert found(changed, export)[-1] == ("run", "series points", "source has more series points", 4, 3)

"""The fake's system attributes with the real clients: archived filters, diagnostics counts, archive-flag variants."""

from __future__ import annotations

import pytest

from neptune_exporter.exporters.neptune2 import Neptune2Source
from neptune_exporter.exporters.neptune3 import Neptune3Source
from neptune_exporter.fake_neptune import store
from neptune_exporter.fake_neptune.datasets import archive_run, generate_workspace, set_archived_paths
from neptune_exporter.selection import RunSelection
from neptune_exporter.settings import Settings

pytestmark = pytest.mark.integration

PROJECT = "workspace/sandbox"
RUNS = 10
ARCHIVED = {"run-00001", "run-00004", "run-00007"}
EVERY = {f"run-{i:05d}" for i in range(RUNS)}
DIAGNOSTICS = "sys/diagnostics/attributes/"
# the 3.x type names of neptune-query's diagnostics counters, written out here independently of fake_neptune/system.py
COUNTER_OF_TYPE = {
    "bool": "bool_count",
    "int": "int_count",
    "float": "float_count",
    "string": "string_count",
    "string_set": "string_set_count",
    "float_series": "float_series_count",
    "string_series": "string_series_count",
    "histogram_series": "histogram_series_count",
    "file": "file_ref_count",
    "file_series": "file_ref_series_count",
}
COUNTERS = [*sorted({*COUNTER_OF_TYPE.values(), "histogram_count"}), "total_count", "total_series_datapoints"]


def sandbox(variant: str = "both") -> store.Workspace:
    """10 small generated runs, three of them archived; the 3.x API reports the archive flag(s) of `variant`."""
    ws = generate_workspace(runs=RUNS, params=5, metrics=2, points=40, string_series=1, histograms=1, files=1)
    for run_id in ARCHIVED:
        archive_run(ws, PROJECT, run_id)
    set_archived_paths(ws, variant)
    return ws


def expected_counts(run: store.Run) -> dict[str, int]:
    """Counts of what the run holds (user attributes of 3.x types; sys/* not counted), from the store itself."""
    counts = dict.fromkeys(COUNTERS, 0)
    for path, attr in run.attributes.items():
        if path.startswith("sys/") or attr.type not in COUNTER_OF_TYPE and attr.type != "datetime":
            continue
        counts["total_count"] += 1
        if attr.type in COUNTER_OF_TYPE:
            counts[COUNTER_OF_TYPE[attr.type]] += 1
        if attr.series is not None:
            counts["total_series_datapoints"] += len(attr.series)
    return counts


def fetched_counts(project_id: str) -> dict[str, dict[str, int]]:
    import neptune_query.runs as nq_runs

    table = nq_runs.fetch_runs_table(project=project_id, attributes=[DIAGNOSTICS + c for c in COUNTERS])
    return {
        str(run_id): {c: int(row[DIAGNOSTICS + c]) for c in COUNTERS} for run_id, row in table.to_dict("index").items()
    }


def test_ne_archived_true_lists_every_non_archived_run(fake_factory, use_neptune_query):
    import neptune_query.runs as nq_runs
    from neptune_query.filters import Attribute, Filter

    fake = fake_factory(sandbox())
    use_neptune_query(fake)
    not_archived = Filter.ne(Attribute("sys/archived", type="bool"), True)
    assert sorted(nq_runs.list_runs(project=PROJECT, runs=not_archived)) == sorted(EVERY - ARCHIVED)
    archived = Filter.eq(Attribute("sys/archived", type="bool"), True)
    assert sorted(nq_runs.list_runs(project=PROJECT, runs=archived)) == sorted(ARCHIVED)


def test_ne_archived_on_a_server_without_sys_archived_matches_nothing(fake_factory, use_neptune_query):
    """The missing-attribute rule (fake_neptune/README.md): a comparison with an attribute a run lacks is false."""
    import neptune_query.runs as nq_runs
    from neptune_query.filters import Attribute, Filter

    fake = fake_factory(sandbox("trashed"))
    use_neptune_query(fake)
    assert nq_runs.list_runs(project=PROJECT, runs=Filter.ne(Attribute("sys/archived", type="bool"), True)) == []
    not_archived = ~Filter.eq(Attribute("sys/archived", type="bool"), True)  # NOT of a false comparison is true
    assert sorted(nq_runs.list_runs(project=PROJECT, runs=not_archived)) == sorted(EVERY)  # sys/archived says nothing
    not_trashed = Filter.ne(Attribute("sys/trashed", type="bool"), True)  # here only sys/trashed tells them apart
    assert sorted(nq_runs.list_runs(project=PROJECT, runs=not_trashed)) == sorted(EVERY - ARCHIVED)


def test_missing_attribute_comparisons_are_false_and_their_negation_true(awkward_fake, use_neptune_query):
    import neptune_query.runs as nq_runs
    from neptune_query.filters import Attribute, Filter

    use_neptune_query(awkward_fake)
    lr = Attribute("params/lr", type="float")  # held by run-parent 0.1, run-child 0.05, AWK-7 0.01 (run-trashed 0.5)
    listed = set(nq_runs.list_runs(project="workspace/awkward"))
    assert listed == {"run-basic", "run-empty", "run-wide", "run-parent", "run-child", "AWK-7", "run-gamma"}
    assert set(nq_runs.list_runs(project="workspace/awkward", runs=Filter.ne(lr, 0.1))) == {"run-child", "AWK-7"}
    assert set(nq_runs.list_runs(project="workspace/awkward", runs=Filter.lt(lr, 1.0))) == {
        "run-parent",
        "run-child",
        "AWK-7",
    }
    assert set(nq_runs.list_runs(project="workspace/awkward", runs=~Filter.eq(lr, 0.1))) == listed - {"run-parent"}


def test_diagnostics_counts_match_the_content_and_follow_appends(fake_factory, use_neptune_query):
    fake = fake_factory(sandbox())
    use_neptune_query(fake)
    project = fake.workspace.project(PROJECT)
    visible = {r.custom_run_id: r for r in project.runs if not r.trashed}
    fetched = fetched_counts(PROJECT)
    assert fetched == {run_id: expected_counts(run) for run_id, run in visible.items()}
    first = fetched["run-00000"]
    assert (first["float_count"], first["int_count"], first["string_count"], first["bool_count"]) == (2, 1, 1, 1)
    assert (first["float_series_count"], first["string_series_count"], first["histogram_series_count"]) == (2, 1, 1)
    assert (first["file_ref_count"], first["total_count"], first["total_series_datapoints"]) == (
        1,
        10,
        2 * 40 + 100 + 10,
    )

    fake.append_points(PROJECT, "run-00000", "metrics/m000", [40.0, 41.0, 42.0], [0.5, 0.25, 0.125])
    fake.append_points(PROJECT, "run-00000", "metrics/new", [0.0, 1.0], [1.0, 2.0])
    fake.set_attribute(PROJECT, "run-00002", "params/extra", "string_set", {"a", "b"})
    after = fetched_counts(PROJECT)
    assert after["run-00000"] == {
        **first,
        "float_series_count": 3,
        "total_count": 11,
        "total_series_datapoints": first["total_series_datapoints"] + 3 + 2,
    }
    assert after["run-00002"] == {**fetched["run-00002"], "string_set_count": 1, "total_count": 11}
    assert after == {run_id: expected_counts(run) for run_id, run in visible.items()}


@pytest.mark.parametrize("variant", store.ARCHIVED_PATH_VARIANTS)
def test_archived_runs_follow_include_archived_whatever_flag_the_3x_server_reports(fake_factory, variant):
    fake = fake_factory(sandbox(variant))
    source = Neptune3Source(fake.api_token, Settings())
    default = {ref.run_id: ref.archived for ref in source.list_runs(PROJECT, RunSelection())}
    assert default == dict.fromkeys(sorted(EVERY - ARCHIVED), False)
    every = {ref.run_id: ref.archived for ref in source.list_runs(PROJECT, RunSelection(include_archived=True))}
    assert every == {run_id: run_id in ARCHIVED for run_id in EVERY}
    chosen = RunSelection(runs_regex="run-0000[0-4]", include_archived=True)
    assert {ref.run_id for ref in source.list_runs(PROJECT, chosen)} == {f"run-0000{i}" for i in range(5)}


def test_archived_runs_follow_include_archived_on_2x(fake_factory, monkeypatch):
    """2.x reports sys/trashed only (its API has no sys/archived), whatever the 3.x variant."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    fake = fake_factory(sandbox("archived"))
    source = Neptune2Source(fake.api_token, Settings(workers=2))
    try:
        default = {ref.sys_id: ref.archived for ref in source.list_runs(PROJECT, RunSelection())}
        every = {ref.sys_id: ref.archived for ref in source.list_runs(PROJECT, RunSelection(include_archived=True))}
    finally:
        source.close()
    archived_sys_ids = {f"SANDBOX-{int(run_id[-1]) + 1}" for run_id in ARCHIVED}
    all_sys_ids = {f"SANDBOX-{i + 1}" for i in range(RUNS)}
    assert default == dict.fromkeys(all_sys_ids - archived_sys_ids, False)
    assert every == {sys_id: sys_id in archived_sys_ids for sys_id in all_sys_ids}

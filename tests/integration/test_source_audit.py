"""Issue 15 point 1: the export compared with the live Neptune server (`validate --against neptune3|neptune2`), real
clients over HTTP against the fake server: a clean export has no differences; each damage to the export on disk and
each change on the server is named precisely; the audit reads series tails, never every point."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from neptune_exporter.export import ExportOptions
from neptune_exporter.export_runner import run_export
from neptune_exporter.fake_neptune import FakeNeptune, datasets
from neptune_exporter.fake_neptune.store import Workspace
from neptune_exporter.model import resolve_file_value
from neptune_exporter.selection import RunSelection
from neptune_exporter.settings import Settings
from neptune_exporter.storage.manifest import manifest_path
from neptune_exporter.storage.parquet import run_part_paths
from neptune_exporter.validation.source_audit import AuditOptions, run_source_audit

pytestmark = pytest.mark.integration
PROJECT = "workspace/sandbox"
SETTINGS = Settings(source_retry_timeout_s=5)
SOURCES = ("neptune3", "neptune2")
POINTS = 50
EXPORTED_POINTS = POINTS + 100 + 10  # besides one float series: the other, 100 log lines, 10 histograms
# the export names runs by the id each source names them with: 3.x custom run id, 2.x sys id
RUN = {"neptune3": "run-00001", "neptune2": "SANDBOX-2"}
OTHER_RUN = {"neptune3": "run-00002", "neptune2": "SANDBOX-3"}


def workspace():
    return datasets.generate_workspace(runs=3, params=4, metrics=2, points=POINTS, files=1, file_size=1024)


@pytest.fixture(scope="module", params=SOURCES)
def exported(request, tmp_path_factory):
    """(source, fake server, clean export root) per source; the server stays up for the module, unchanged."""
    yield from exported_from(request.param, workspace(), tmp_path_factory.mktemp(f"audit-{request.param}"))


def exported_from(source: str, workspace: Workspace, root: Path):
    """Serves `workspace` on a fake server and exports it from `source` into `root`: (source, fake, root)."""
    with FakeNeptune(workspace, port=0) as fake, pytest.MonkeyPatch.context() as patch:
        patch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the 2.x client's OAuth on the fake's plain http
        export(source, fake, root)
        yield source, fake, root


def export(source: str, fake: FakeNeptune, root: Path) -> None:
    options = ExportOptions(
        source=source,
        projects=(PROJECT,),
        data_path=str(root / "data"),
        files_path=str(root / "files"),
        api_token=fake.api_token,
        workers=1,
        runs=RunSelection(),
    )
    assert {r.status for r in run_export(options, SETTINGS)} == {"complete"}


def audit(source: str, fake: FakeNeptune, root: Path):
    options = AuditOptions(source, str(root / "data"), str(root / "files"), (PROJECT,), api_token=fake.api_token)
    return run_source_audit(options, SETTINGS)


@pytest.fixture
def copy(exported, tmp_path):
    """A private copy of the clean export (each test damages its own)."""
    source, fake, root = exported
    shutil.copytree(root, tmp_path / "export")
    return source, fake, tmp_path / "export"


def differences(report) -> list[tuple]:
    return [(d.run_id, d.kind, d.key, d.problem, d.expected, d.actual) for d in report.differences]


def rewrite_run(root: Path, run_id: str, change) -> None:
    """Rewrite every part of a run with `change(table) -> table` (the manifest is left as it was)."""
    for part in run_part_paths(root / "data", PROJECT, run_id):
        pq.write_table(change(pq.read_table(part)), part)


def middle_row_of(table: pa.Table, path: str) -> int:
    rows = pc.indices_nonzero(pc.equal(table["attribute_path"], path)).to_pylist()
    return rows[len(rows) // 2]


def last_row_of(table: pa.Table, path: str) -> int:
    rows = pc.indices_nonzero(pc.equal(table["attribute_path"], path)).to_pylist()
    return rows[-1]


def test_a_clean_export_has_no_differences(exported):
    source, fake, root = exported
    report = audit(source, fake, root)
    assert report.ok, differences(report)
    assert len(report.runs) == 3
    checked = report.runs[0].checked
    assert (checked["series"], checked["files"]) == (3 if source == "neptune2" else 4, 1)
    expected_notes = [] if source == "neptune2" else ["series count", "series first step"]
    expected_notes += ["series values before the last point", "single files", "file series, file sets and artifacts"]
    assert [note.split(":")[0] for note in report.not_compared] == expected_notes
    assert "## Not compared" in report.to_markdown()
    assert "- single files: size only (the server reports no hash); use --deep for content" in report.to_markdown()


def test_a_changed_last_value_is_named(copy):
    source, fake, root = copy

    def change(table: pa.Table) -> pa.Table:
        row = last_row_of(table, "metrics/m000")
        values = table["float_value"].to_pylist()
        values[row] = 123.5
        return table.set_column(table.schema.get_field_index("float_value"), "float_value", pa.array(values))

    server_last = float(fake.workspace.project(PROJECT).run(RUN[source]).attributes["metrics/m000"].series.last()[1])
    rewrite_run(root, RUN[source], change)
    report = audit(source, fake, root)
    assert differences(report) == [(RUN[source], "series", "metrics/m000", "last value", server_last, 123.5)]


def test_a_missing_last_point_is_named(copy):
    source, fake, root = copy
    rewrite_run(
        root, RUN[source], lambda t: t.take([i for i in range(t.num_rows) if i != last_row_of(t, "metrics/m001")])
    )
    report = audit(source, fake, root)
    last = float(POINTS - 1)
    if source == "neptune2":
        expected = [("count", POINTS, POINTS - 1), ("last step", last, last - 1)]
    else:
        expected = [("last step", last, last - 1)]
    found = [(problem, e, a) for run, kind, key, problem, e, a in differences(report)]
    assert found[: len(expected)] == expected
    assert found[len(expected)][0] == "last value"
    series = {(RUN[source], "series", "metrics/m001")}
    assert {(run, kind, key) for run, kind, key, *_ in differences(report)[: len(expected) + 1]} == series
    # 3.x: the server's count of the run's points (sys/diagnostics) shows it too
    total = EXPORTED_POINTS + POINTS
    counted = [("series points (all series together)", total, total - 1)] if source == "neptune3" else []
    assert [(problem, e, a) for run, kind, key, problem, e, a in differences(report)[len(expected) + 1 :]] == counted


def test_a_point_missing_mid_series_is_found_without_deep_by_the_servers_counts(copy):
    """3.x gives no count per series, but its run's sys/diagnostics total; 2.x counts each series."""
    source, fake, root = copy
    rewrite_run(
        root, RUN[source], lambda t: t.take([i for i in range(t.num_rows) if i != middle_row_of(t, "metrics/m001")])
    )
    report = audit(source, fake, root)
    if source == "neptune2":
        assert differences(report) == [(RUN[source], "series", "metrics/m001", "count", POINTS, POINTS - 1)]
    else:
        total = EXPORTED_POINTS + POINTS
        assert differences(report) == [
            (RUN[source], "run", "series points", "series points (all series together)", total, total - 1)
        ]


def test_a_missing_run_is_named(copy):
    source, fake, root = copy
    manifest_path(root / "data", PROJECT, RUN[source]).unlink()
    for part in run_part_paths(root / "data", PROJECT, RUN[source]):
        part.unlink()
    report = audit(source, fake, root)
    assert differences(report) == [(RUN[source], "run", RUN[source], "missing from export", "complete", None)]


def test_a_deleted_part_is_named(copy):
    source, fake, root = copy
    (part,) = run_part_paths(root / "data", PROJECT, RUN[source])
    part.unlink()
    report = audit(source, fake, root)
    relative = part.relative_to(root / "data").as_posix()
    assert differences(report) == [(RUN[source], "part", relative, "missing from export", "present", None)]


def test_a_truncated_file_is_named(copy):
    source, fake, root = copy
    table = pa.concat_tables(pq.read_table(part) for part in run_part_paths(root / "data", PROJECT, RUN[source]))
    row = last_row_of(table, "files/f000")
    local = resolve_file_value(root / "files", PROJECT, table["file_value"][row].as_py())
    local.write_bytes(local.read_bytes()[:300])
    report = audit(source, fake, root)
    assert differences(report) == [(RUN[source], "file", "files/f000", "size", 1024, 300)]


def test_a_changed_atom_is_named(copy):
    source, fake, root = copy

    def change(table: pa.Table) -> pa.Table:
        row = last_row_of(table, "params/p002")
        values = table["string_value"].to_pylist()
        values[row] = "edited"
        return table.set_column(table.schema.get_field_index("string_value"), "string_value", pa.array(values))

    rewrite_run(root, RUN[source], change)
    report = audit(source, fake, root)
    assert differences(report) == [(RUN[source], "atom", "params/p002", "value", "value-1-2", "edited")]


def test_runs_the_server_no_longer_has_are_listed_not_errors(copy):
    source, fake, root = copy
    shutil.copy(
        manifest_path(root / "data", PROJECT, RUN[source]),
        manifest_path(root / "data", PROJECT, RUN[source]).with_name("gone-run.manifest.json"),
    )
    # a stored run the server does not list: its manifest names another run id
    text = manifest_path(root / "data", PROJECT, RUN[source]).with_name("gone-run.manifest.json")
    text.write_text(text.read_text().replace(f'"{RUN[source]}"', '"gone-run"'))
    report = audit(source, fake, root)
    assert report.ok, differences(report)
    assert [f"{run.project_id}/{run.run_id}" for run in report.not_on_server] == [f"{PROJECT}/gone-run"]
    assert "## In the export, no longer on the server" in report.to_markdown()


@pytest.mark.parametrize("source", SOURCES)
def test_points_appended_on_the_server_are_reported_as_source_has_more(source, tmp_path, monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    with FakeNeptune(workspace(), port=0) as fake:
        export(source, fake, tmp_path)
        datasets.append_points(
            fake.workspace, PROJECT, RUN[source], "metrics/m000", [50.0, 51.0, 52.0], [1.0, 2.0, 3.0]
        )
        report = audit(source, fake, tmp_path)
    # the server's derived system attributes follow the change too: sys/ping_time (both), the datapoint count (3.x)
    *counted, modified, pinged, difference = [d for d in report.differences if d.kind != "run"]
    totals = [(d.kind, d.key, d.problem, d.expected, d.actual) for d in report.differences if d.kind == "run"]
    more = ("run", "series points", "source has more series points", 2 * POINTS + 113, 2 * POINTS + 110)
    assert totals == ([more] if source == "neptune3" else [])
    assert (modified.kind, modified.key, modified.problem) == ("atom", "sys/modification_time", "newer on the server")
    assert modified.expected > modified.actual
    assert (pinged.kind, pinged.key, pinged.problem) == ("atom", "sys/ping_time", "value")
    assert (pinged.expected, pinged.actual) == (modified.expected, modified.actual)
    datapoints = "sys/diagnostics/attributes/total_series_datapoints"
    exported_points = 2 * POINTS + 100 + 10  # 2 float series, 100 log lines, 10 histograms
    expected_counted = (
        [("atom", datapoints, "value", exported_points + 3, exported_points)] if source == "neptune3" else []
    )
    assert [(d.kind, d.key, d.problem, d.expected, d.actual) for d in counted] == expected_counted
    assert (difference.run_id, difference.kind, difference.key, difference.problem) == (
        RUN[source],
        "series",
        "metrics/m000",
        "source has more",
    )
    assert difference.expected == 52.0
    counts = f"; {POINTS + 3} points on the server, {POINTS} in the export" if source == "neptune2" else ""
    assert difference.actual == f"49.0 (last step 52 on the server, 49 in the export{counts})"


# ----------------------------------------------------------------------------- request log: tails, never every point

BIG = {"runs": 100, "metrics": 20, "points": 20_000}
POINT_ENDPOINTS = {"neptune3": ("v3.float_series",), "neptune2": ("v2.float_series_values",)}


@pytest.mark.parametrize("source", SOURCES)
def test_the_audit_reads_series_tails_only(source, monkeypatch):
    """100 runs × 20 float series × 20,000 points: the server side of the audit reads one-point tails (3.x: batched
    `fetch_metrics(tail_limit=1)`, ≤ 8 points of response each; 2.x: the first and the last point of each series)."""
    from neptune_exporter.validation.source_audit import make_reader

    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    ws = datasets.generate_workspace(params=2, string_series=0, histograms=0, files=0, **BIG)
    with FakeNeptune(ws, port=0) as fake:
        options = AuditOptions(source, "unused", "unused", (PROJECT,), api_token=fake.api_token)
        reader = make_reader(options, SETTINGS)
        run_ids = reader.run_ids(PROJECT, RunSelection())
        facts = list(reader.read(PROJECT, run_ids))
        log = fake.requests.summary()
    assert len(facts) == BIG["runs"]
    assert {len(f.series) for f in facts} == {BIG["metrics"]}
    assert {s.last_step for f in facts for s in f.series.values()} == {BIG["points"] - 1.0}
    series = BIG["runs"] * BIG["metrics"]
    (endpoint,) = POINT_ENDPOINTS[source]
    requests, sent = log["by_endpoint"][endpoint], log["bytes"][endpoint]
    if source == "neptune2":
        assert requests == 2 * series  # first point (with the count) and last point of each series
    else:
        assert requests <= series // 50  # neptune-query packs the tail requests of many series into one
    print(f"{source}: {requests} point requests, {sent} bytes for {series} series")
    assert sent < series * 400  # bytes: a few points per series, not 20,000 (a full read is > 100 bytes a point)


# ----------------------------------------------------------------------------- run selection: export's own


def test_the_audit_selects_runs_as_export_does(copy):
    """`--where` (as `export` takes it): only the matching run is compared; the other exported runs are outside the
    selection (not "no longer on the server"); the matching run's export deleted is named as missing."""
    source, fake, root = copy
    selection = RunSelection(where='params/p002 == "value-1-2"')
    options = AuditOptions(
        source, str(root / "data"), str(root / "files"), (PROJECT,), runs=selection, api_token=fake.api_token
    )
    report = run_source_audit(options, SETTINGS)
    assert report.ok, differences(report)
    assert [run.run_id for run in report.runs] == [RUN[source]] and report.not_on_server == []
    manifest_path(root / "data", PROJECT, RUN[source]).unlink()
    for part in run_part_paths(root / "data", PROJECT, RUN[source]):
        part.unlink()
    report = run_source_audit(options, SETTINGS)
    assert differences(report) == [(RUN[source], "run", RUN[source], "missing from export", "complete", None)]


def test_the_2x_audit_lists_runs_past_one_page(monkeypatch):
    """2.x: the audit lists runs with the exporter's windowed listing (here 2 runs a window for 3 runs)."""
    import neptune_exporter.exporters.neptune2.source as neptune2_source
    from neptune_exporter.validation.source_audit import make_reader

    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    monkeypatch.setattr(neptune2_source, "WINDOW_RUNS", 2)
    with FakeNeptune(workspace(), port=0) as fake:
        reader = make_reader(
            AuditOptions("neptune2", "unused", "unused", (PROJECT,), api_token=fake.api_token), SETTINGS
        )
        assert reader.run_ids(PROJECT, RunSelection()) == ["SANDBOX-1", "SANDBOX-2", "SANDBOX-3"]

"""Issue 15 point 1, `--deep`: every point and every single file's bytes re-read from the server (real clients over
HTTP against the fake) and compared with the export; each change the tail audit cannot see is named precisely, and
memory stays bounded by the read window, not the series."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from neptune_exporter.fake_neptune import FakeNeptune, datasets
from neptune_exporter.model import resolve_file_value
from neptune_exporter.settings import Settings
from neptune_exporter.storage.parquet import run_part_paths
from neptune_exporter.validation.source_audit import AuditOptions, run_source_audit
from tests.integration.test_source_audit import PROJECT, RUN, SOURCES, differences, export, exported_from, rewrite_run

pytestmark = pytest.mark.integration
POINTS = 300
DEEP_SETTINGS = Settings(source_retry_timeout_s=5, series_batch_rows=64)  # several windows per series


def workspace():
    return datasets.generate_workspace(runs=2, params=2, metrics=2, points=POINTS, files=1, file_size=2048)


@pytest.fixture(scope="module", params=SOURCES)
def exported(request, tmp_path_factory):
    yield from exported_from(request.param, workspace(), tmp_path_factory.mktemp(f"deep-{request.param}"))


@pytest.fixture
def copy(exported, tmp_path):
    source, fake, root = exported
    shutil.copytree(root, tmp_path / "export")
    return source, fake, tmp_path / "export"


def audit(source, fake, root, deep):
    options = AuditOptions(
        source, str(root / "data"), str(root / "files"), (PROJECT,), deep=deep, api_token=fake.api_token
    )
    return run_source_audit(options, DEEP_SETTINGS)


def change_value(path: str, column: str, step: float, value) -> Callable[[pa.Table], pa.Table]:
    def change(table: pa.Table) -> pa.Table:
        at = pc.and_(pc.equal(table["attribute_path"], path), pc.equal(table["step"].cast(pa.float64()), step))
        (row,) = pc.indices_nonzero(at).to_pylist()
        values = table[column].to_pylist()
        values[row] = value
        return table.set_column(table.schema.get_field_index(column), column, pa.array(values, table[column].type))

    return change


def test_deep_on_a_clean_export_finds_nothing_and_says_what_it_read(exported):
    source, fake, root = exported
    report = audit(source, fake, root, deep=True)
    assert report.ok, differences(report)
    checked = report.runs[0].checked
    histograms = 10 if source == "neptune3" else 0  # the 2.x client has no histogram series
    assert checked["points"] == 2 * POINTS + 100 + histograms  # 2 float series, 100 string points, 10 histograms
    assert checked["files_hashed"] == 1
    assert report.not_compared == [
        "file series, file sets and artifacts: not compared (neither the file names nor the content)"
    ]
    shallow = audit(source, fake, root, deep=False)
    assert "single files: size only (the server reports no hash); use --deep for content" in shallow.not_compared
    assert any(note.startswith("series values before the last point") for note in shallow.not_compared)


def test_a_changed_float_in_the_middle_is_named_by_deep_only(copy):
    source, fake, root = copy
    rewrite_run(root, RUN[source], change_value("metrics/m000", "float_value", 150.0, 123.5))
    assert audit(source, fake, root, deep=False).ok  # the tail audit cannot see it
    report = audit(source, fake, root, deep=True)
    ((run, kind, key, problem, server, exported),) = differences(report)
    assert (run, kind, key, problem, exported) == (RUN[source], "point", "metrics/m000", "value at step 150", 123.5)
    assert isinstance(server, float) and server != 123.5


def test_a_changed_string_point_is_named_by_deep_only(copy):
    source, fake, root = copy
    rewrite_run(root, RUN[source], change_value("logs/s000", "string_value", 40.0, "tampered"))
    assert audit(source, fake, root, deep=False).ok
    report = audit(source, fake, root, deep=True)
    ((run, kind, key, problem, server, exported),) = differences(report)
    assert (run, kind, key, problem, exported) == (RUN[source], "point", "logs/s000", "value at step 40", "tampered")
    assert server != "tampered"


def test_a_missing_middle_point_is_counted_with_its_step(copy):
    source, fake, root = copy

    def drop(table: pa.Table) -> pa.Table:
        at = pc.and_(pc.equal(table["attribute_path"], "metrics/m001"), pc.equal(table["step"].cast(pa.float64()), 7.0))
        return table.filter(pc.invert(at))

    rewrite_run(root, RUN[source], drop)
    report = audit(source, fake, root, deep=True)
    found = [(d.kind, d.key, d.problem, d.expected, d.actual) for d in report.differences]
    assert ("point", "metrics/m001", "1 point(s) only on the server", 1, "steps 7") in found


def test_a_changed_file_byte_of_the_same_size_is_named_by_deep_only(copy):
    source, fake, root = copy
    table = pa.concat_tables(pq.read_table(part) for part in run_part_paths(root / "data", PROJECT, RUN[source]))
    rows = pc.indices_nonzero(pc.equal(table["attribute_path"], "files/f000")).to_pylist()
    local = resolve_file_value(root / "files", PROJECT, table["file_value"][rows[-1]].as_py())
    original = local.read_bytes()
    local.write_bytes(original[:100] + bytes([original[100] ^ 0xFF]) + original[101:])
    assert audit(source, fake, root, deep=False).ok  # same size: the size check cannot see it
    report = audit(source, fake, root, deep=True)
    ((run, kind, key, problem, server, exported),) = differences(report)
    assert (run, kind, key, problem) == (RUN[source], "file", "files/f000", "content (sha256)")
    assert server == hashlib.sha256(original).hexdigest()
    assert exported == hashlib.sha256(local.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- bounded memory

LARGE = 2_000_000
MEASURE = textwrap.dedent(
    """
    import dataclasses, json, sys, tracemalloc
    from neptune_exporter.settings import Settings
    from neptune_exporter.validation.source_audit import AuditOptions, run_source_audit

    source, data, files, token = sys.argv[1:5]
    settings = Settings(source_retry_timeout_s=30, series_batch_rows=20_000)
    options = AuditOptions(source, data, files, ("workspace/sandbox",), api_token=token)
    run_source_audit(options, settings)  # warm-up: the clients' imports and caches are not the deep read's memory
    tracemalloc.start()
    report = run_source_audit(dataclasses.replace(options, deep=True), settings)
    _, peak = tracemalloc.get_traced_memory()
    print(json.dumps({"ok": report.ok, "points": report.runs[0].checked["points"], "peak": peak}))
    """
)


def test_a_deep_audit_of_a_two_million_point_series_stays_within_a_fixed_memory_bound(tmp_path, monkeypatch):
    """3.x, one run with one 2M-point float series read in 100 windows of 20,000 points: the deep audit's Python
    allocation peak (tracemalloc: numpy, pandas and the client's objects) stays below half the series' own size
    (2M × 16 bytes of step + value = 32 MB); measured ~11 MB, the same at 200k and 1M points."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    ws = datasets.generate_workspace(runs=1, params=1, metrics=1, points=LARGE, string_series=0, histograms=0, files=0)
    with FakeNeptune(ws, port=0) as fake:
        export("neptune3", fake, tmp_path)
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                MEASURE,
                "neptune3",
                str(tmp_path / "data"),
                str(tmp_path / "files"),
                fake.api_token,
            ],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=Path(__file__).resolve().parents[2],
        )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(result)
    assert result["ok"] and result["points"] == LARGE
    assert result["peak"] < 16 * 1024 * 1024  # half the series' raw size; a whole-series read would exceed it

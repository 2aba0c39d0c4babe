"""`summarize` figures over our exports and peer exports, and the rich rendering."""

from __future__ import annotations

from rich.console import Console

from neptune_exporter.errors import TerminalError
from neptune_exporter.rows import parameter_rows, series_rows
from neptune_exporter.storage.manifest import Manifest, write_manifest
from neptune_exporter.storage.parquet import AttributeStats, RunWriter
from neptune_exporter.storage.summary import render_summary, summarize
from tests.unit.fixtures.peer_export import PROJECT as PEER_PROJECT
from tests.unit.fixtures.peer_export import write_peer_run

BOOM = TerminalError("boom", "export it again", attribute="m/loss").to_record()  # a failed run's first error


def write_run(data_root, project, run_id, points, status="complete", errors=()):
    stats = AttributeStats()
    with RunWriter(data_root, project, run_id, 10**9) as writer:
        for batch in (
            parameter_rows(project, run_id, [("params/lr", "float", 0.1), ("model/ckpt", "file", "p/ckpt")]),
            series_rows(project, run_id, "m/loss", "float_series", list(range(points)), [0.0] * points, None),
            series_rows(project, run_id, "logs", "string_series", [0, 1], ["a", "b"], None),
        ):
            writer.write(batch)
            stats.add(batch)
        parts = writer.close()
    files = [{"attribute_path": "model/ckpt", "path": "p/ckpt", "size": 1000, "sha256": "0" * 64, "step": None}]
    write_manifest(
        data_root,
        Manifest(
            status=status,
            source={"project_id": project, "run_id": run_id},
            parts=parts,
            attributes=stats.by_path,
            files=files,
            errors=list(errors),
        ),
    )
    return parts


def test_summary_counts_runs_types_points_files_bytes_and_failures(tmp_path):
    parts_a = write_run(tmp_path, "ws/a", "r1", 100)
    parts_b = write_run(tmp_path, "ws/a", "r2", 10, status="failed", errors=[BOOM])
    write_peer_run(tmp_path)  # acme/vision, derived manifest: 5 metric + 2 file-series points, 3 file rows
    summary = summarize(tmp_path)
    (peer, ours) = summary["projects"]
    assert peer["project_id"] == PEER_PROJECT and ours["project_id"] == "ws/a"
    assert (ours["runs"], ours["runs_complete"], ours["runs_failed"]) == (2, 1, 1)
    assert ours["attributes_by_type"] == {"file": 2, "float": 2, "float_series": 2, "string_series": 2}
    assert ours["points"] == 100 + 2 + 10 + 2
    assert ours["files"] == 2 and ours["file_bytes"] == 2000
    assert ours["parquet_bytes"] == sum(p.bytes for p in parts_a + parts_b)
    assert ours["bytes"] == ours["parquet_bytes"] + 2000
    assert ours["failures"] == [
        {
            "run_id": "r2",
            "error_type": "TerminalError",
            "message": "boom",
            "attribute": "m/loss",
            "remedy": "export it again",
        }
    ]
    assert (peer["runs_derived"], peer["points"], peer["files"], peer["rows"]) == (1, 7, 3, 15)
    assert summary["total"]["runs"] == 3 and summary["total"]["points"] == ours["points"] + 7
    assert summary["total"]["attributes_by_type"]["float_series"] == 3
    assert [p["project_id"] for p in summarize(tmp_path, projects=["ws/a"])["projects"]] == ["ws/a"]


def test_render_summary_shows_projects_totals_and_failures(tmp_path):
    write_run(tmp_path, "ws/a", "r2", 10, status="failed", errors=[BOOM])
    console = Console(record=True, width=160)
    console.print(render_summary(summarize(tmp_path)))
    text = console.export_text()
    assert "ws/a" in text and "total" in text and "float_series" in text
    assert "r2: TerminalError: boom (attribute m/loss) — fix: export it again" in text
    empty = Console(record=True, width=100)
    empty.print(render_summary(summarize(tmp_path / "none")))
    assert "No exported runs" in empty.export_text()

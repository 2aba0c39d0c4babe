"""storage/integrity.py: every part checked against its manifest (missing, size, sha256, rows), hashed once per
version of the file, and every reader (summary, open_exported_run, the planner) refusing or redoing a damaged run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from rich.console import Console

from neptune_exporter.errors import DamagedExportError
from neptune_exporter.model import RunRef, iso_utc_ms
from neptune_exporter.rows import parameter_rows, series_rows
from neptune_exporter.storage import integrity
from neptune_exporter.storage.exported_run import open_exported_run
from neptune_exporter.storage.incremental import plan_runs
from neptune_exporter.storage.manifest import Manifest, manifest_path, read_manifest, write_manifest
from neptune_exporter.storage.summary import render_summary, summarize
from tests.load_exports import MODIFIED, write_export
from tests.unit.fixtures.peer_export import write_peer_run

PROJECT = "ws/p"


def export_run(data: Path, run_id: str, points: int = 4000) -> Manifest:
    """A run in several parts (small part size), our format."""
    chunks = [list(range(start, start + 1000)) for start in range(0, points, 1000)]  # a part each
    batches = [parameter_rows(PROJECT, run_id, [("params/lr", "float", 0.1)])] + [
        series_rows(PROJECT, run_id, "m/loss", "float_series", steps, [0.5] * len(steps), None) for steps in chunks
    ]
    return write_export(data, data.parent / "files", PROJECT, run_id, batches, part_target_bytes=4096)


def overwrite_middle(path: Path, data: bytes = b"\xff" * 16) -> None:
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        handle.write(data)


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


@pytest.fixture
def hashes(monkeypatch) -> list[Path]:
    """Every file integrity hashes, in order."""
    seen: list[Path] = []
    real = integrity.file_sha256

    def counting(path: Path) -> str:
        seen.append(Path(path))
        return real(path)

    monkeypatch.setattr(integrity, "file_sha256", counting)
    return seen


def test_a_sound_run_is_hashed_once_then_read_from_the_cache(tmp_path, hashes):
    manifest = export_run(tmp_path / "data", "r1")
    assert len(manifest.parts) > 1
    assert integrity.damaged_parts(tmp_path / "data", manifest) == []
    assert len(hashes) == len(manifest.parts)
    cache = json.loads(integrity.cache_path(tmp_path / "data", manifest).read_text())
    assert sorted(cache["parts"]) == sorted(p.path for p in manifest.parts)
    assert {e["sha256"] for e in cache["parts"].values()} == {p.sha256 for p in manifest.parts}
    assert integrity.run_state(tmp_path / "data", manifest) == (integrity.VERIFIED, [])
    assert len(hashes) == len(manifest.parts)  # second read: sizes and stat only
    touched = tmp_path / "data" / manifest.parts[0].path
    os.utime(touched)  # same bytes, new mtime: hashed again, still sound
    assert integrity.damaged_parts(tmp_path / "data", manifest) == []
    assert hashes[len(manifest.parts) :] == [touched]


def test_truncated_overwritten_missing_and_miscounted_parts_are_each_named(tmp_path):
    data = tmp_path / "data"
    manifest = export_run(data, "r1")
    integrity.damaged_parts(data, manifest)  # cached while sound: damage must still be seen
    first, second, third = (data / p.path for p in manifest.parts[:3])
    truncate(first)
    overwrite_middle(second)
    third.unlink()
    damage = integrity.damaged_parts(data, manifest)
    by_path = {d.path: d.problem for d in damage}
    assert list(by_path) == [p.path for p in manifest.parts[:3]]
    assert by_path[manifest.parts[0].path] == (
        f"{first.stat().st_size:,} bytes, the manifest records {manifest.parts[0].bytes:,} (truncated or replaced)"
    )
    assert by_path[manifest.parts[1].path] == "its sha256 differs from the manifest's (overwritten or corrupted)"
    assert by_path[manifest.parts[2].path] == integrity.MISSING
    assert integrity.describe_damage(damage).startswith(f"3 part(s) differ from the manifest: {damage[0].describe()}")

    other = export_run(data, "r2")
    miscounted = Manifest.from_json({**other.to_json(), "parts": [{**other.parts[0].to_json(), "rows": 1}]})
    assert [d.problem for d in integrity.damaged_parts(data, miscounted)] == [
        f"{other.parts[0].rows} rows, the manifest records 1"
    ]


def test_readers_refuse_or_report_a_damaged_run_and_read_peer_runs_unverified(tmp_path):
    data = tmp_path / "data"
    sound, damaged = export_run(data, "sound"), export_run(data, "damaged")
    overwrite_middle(data / damaged.parts[1].path)
    write_peer_run(data)

    with pytest.raises(DamagedExportError) as refused:
        open_exported_run(data, tmp_path / "files", PROJECT, "damaged")
    line = str(refused.value)
    assert "\n" not in line and refused.value.run == "damaged"
    assert f"the export of run 'damaged' ({PROJECT}) is damaged: 1 part(s) differ" in line
    assert damaged.parts[1].path in line and "fix: export the run again" in line
    assert open_exported_run(data, tmp_path / "files", PROJECT, "damaged", verify=False).checksum == damaged.checksum
    assert open_exported_run(data, tmp_path / "files", PROJECT, "sound").checksum == sound.checksum

    figures = summarize(data)
    ours = next(p for p in figures["projects"] if p["project_id"] == PROJECT)
    assert (ours["runs"], ours["runs_complete"], ours["runs_damaged"], ours["runs_unverified"]) == (2, 1, 1, 0)
    assert ours["damaged"] == [{"run_id": "damaged", "parts": [integrity.damaged_parts(data, damaged)[0].describe()]}]
    assert (figures["total"]["runs_unverified"], figures["total"]["runs_damaged"]) == (1, 1)
    console = Console(width=250, record=True)
    console.print(render_summary(figures))
    text = console.export_text()
    assert f"{PROJECT} damaged: {damaged.parts[1].path}: its sha256 differs" in text
    assert "1 run(s) unverified: exported without manifests" in text


def test_the_planner_redoes_exactly_the_damaged_runs(tmp_path):
    data = tmp_path / "data"
    for run_id in ("a", "b", "c"):
        manifest = export_run(data, run_id)
        manifest.options = {"fingerprint": "fp"}
        manifest.source["modification_time"] = iso_utc_ms(MODIFIED)
        write_manifest(data, manifest)
    truncate(data / read_manifest(manifest_path(data, PROJECT, "a")).parts[0].path)
    overwrite_middle(data / read_manifest(manifest_path(data, PROJECT, "c")).parts[-1].path)
    runs = [RunRef(PROJECT, run_id, f"SYS-{run_id}", modification_time=MODIFIED) for run_id in ("a", "b", "c")]
    plans = plan_runs(runs, data, "fp")
    assert [(p.run.run_id, p.action) for p in plans] == [("a", "redo"), ("b", "skip"), ("c", "redo")]
    assert plans[0].reason.startswith("1 part(s) differ from the manifest: ") and "truncated" in plans[0].reason
    assert "sha256 differs" in plans[2].reason

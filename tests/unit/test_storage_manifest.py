"""Manifest JSON round trip, atomic write, checksum and watermarks."""

from __future__ import annotations

import json

import pytest

from neptune_exporter.model import AttributeType, sanitize_name
from neptune_exporter.storage.manifest import (
    Manifest,
    PartInfo,
    compute_checksum,
    manifest_path,
    read_manifest,
    write_manifest,
)

SOURCE = {
    "kind": "neptune3",
    "project_id": "ws/p",
    "run_id": "r-1",
    "modification_time": "2024-01-01T00:00:00.000+00:00",
}
PARTS = [PartInfo("ws_p-x/r_part_0.parquet", 10, 1000, "a" * 64), PartInfo("ws_p-x/r_part_1.parquet", 5, 500, "b" * 64)]
FILES = [{"attribute_path": "model/ckpt", "path": "ws_p/r/ckpt.bin", "size": 3, "sha256": "c" * 64, "step": None}]


def sample() -> Manifest:
    return Manifest(
        status="complete",
        source=dict(SOURCE),
        options={"fingerprint": "f", "json": {"source": "neptune3"}},
        parts=list(PARTS),
        attributes={
            "m/loss": {"type": "float_series", "count": 15, "last_step": 14.5},
            "params/lr": {"type": "float", "count": 1, "last_step": None},
            "odd/thing": {"type": "notebook", "count": 1, "last_step": None},
        },
        files=list(FILES),
        single_value_parts=["ws_p-x/r_part_0.parquet"],
    )


def test_manifest_is_written_atomically_next_to_parts_and_read_back(tmp_path):
    path = write_manifest(tmp_path, sample())
    assert path == manifest_path(tmp_path, "ws/p", "r-1")
    assert path.parent.name == sanitize_name("ws/p") and path.name == sanitize_name("r-1") + ".manifest.json"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    data = json.loads(path.read_text())
    assert data["status"] == "complete" and data["format_version"] == 2 and data["exported_at"]
    assert set(data["source"]) >= {"kind", "server", "sys_id", "custom_run_id", "experiment_name", "fork_parent"}
    back = read_manifest(path)
    assert back.parts == PARTS and back.files == FILES and back.attributes == sample().attributes
    assert back.checksum == compute_checksum(PARTS, FILES) and back.is_complete()
    assert back.single_value_parts == ["ws_p-x/r_part_0.parquet"]


def test_checksum_is_deterministic_and_tracks_rows_and_files():
    base = compute_checksum(PARTS, FILES)
    assert base == compute_checksum(list(reversed(PARTS)), FILES)
    assert base != compute_checksum([PARTS[0]], FILES)
    assert base != compute_checksum([PARTS[0], PartInfo(PARTS[1].path, 5, 500, "d" * 64)], FILES)
    assert base != compute_checksum(PARTS, [dict(FILES[0], sha256="e" * 64)])
    # a rename (the part 0 restore) does not change the checksum
    assert base == compute_checksum([PartInfo("elsewhere_part_0.parquet", 10, 1000, "a" * 64), PARTS[1]], FILES)


def test_watermarks_come_from_attribute_stats():
    marks = sample().watermarks()
    assert marks["m/loss"].attribute_type is AttributeType.FLOAT_SERIES
    assert (marks["m/loss"].last_step, marks["m/loss"].count) == (14.5, 15)
    assert marks["params/lr"].last_step is None
    assert "odd/thing" not in marks


def test_missing_or_broken_manifest_reads_as_absent(tmp_path):
    assert read_manifest(tmp_path / "nope.manifest.json") is None
    broken = tmp_path / "x.manifest.json"
    broken.write_text("{not json")
    assert read_manifest(broken) is None


def test_a_replacing_write_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path):
    from neptune_exporter.storage.manifest import replacing

    path = tmp_path / "errors.jsonl"
    path.write_text("old\n")
    with pytest.raises(OSError, match="No space left"), replacing(path) as handle:
        handle.write("new, half written\n")
        raise OSError(28, "No space left on device")
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["errors.jsonl"]
    with replacing(path) as handle:
        handle.write("new\n")
    assert path.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["errors.jsonl"]

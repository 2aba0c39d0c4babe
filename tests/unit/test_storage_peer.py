"""Compatibility with the peer tool neptune-ai/neptune-exporter, both directions, on a fixture built from its published layout."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from neptune_exporter.model import PARQUET_SCHEMA, sanitize_name
from neptune_exporter.rows import parameter_rows, series_rows
from neptune_exporter.storage.exported_run import list_stored_runs
from neptune_exporter.storage.manifest import Manifest, write_manifest
from neptune_exporter.storage.parquet import RunWriter, read_run_batches
from tests.unit.fixtures.peer_export import CREATED, PEER_SCHEMA, PROJECT, RUN, peer_name, write_peer_run


def test_sanitized_names_match_the_peer():
    for identifier in (PROJECT, RUN, "ünï/cøde", "a b.c", "plain-id_1"):
        assert sanitize_name(identifier) == peer_name(identifier)


def test_peer_export_is_read_and_its_manifest_derived(tmp_path):
    write_peer_run(tmp_path)
    (stored,) = list(list_stored_runs(tmp_path))
    manifest = stored.manifest
    assert (stored.project_id, stored.run_id) == (PROJECT, RUN)
    assert manifest.derived and manifest.status == "complete"
    assert manifest.source["custom_run_id"] == RUN
    assert manifest.source["experiment_name"] == "baseline"
    assert manifest.source["creation_time"] == CREATED.isoformat()
    assert (manifest.source["fork_parent"], manifest.source["fork_step"]) == ("exp-6", 12.0)
    assert manifest.attributes["metrics/acc"] == {"type": "float_series", "count": 5, "last_step": 4.5}
    assert manifest.attributes["params/lr"] == {"type": "float", "count": 1, "last_step": None}
    assert manifest.attributes["images/pred"] == {"type": "file_series", "count": 2, "last_step": 1.0}
    assert [p.rows for p in manifest.parts] == [8, 7]
    assert len(manifest.checksum) == 64
    rows = [row for batch in read_run_batches(tmp_path, PROJECT, RUN) for row in batch.to_pylist()]
    assert len(rows) == 15
    assert [r["float_value"] for r in rows if r["attribute_path"] == "metrics/acc"] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert next(r for r in rows if r["attribute_path"] == "sys/tags")["string_set_value"] == ["x", "y"]
    assert list(list_stored_runs(tmp_path, projects=["other/project"])) == []
    assert [s.run_id for s in list_stored_runs(tmp_path, runs_regex="^exp-7")] == [RUN]


def test_peer_export_without_part_zero_is_incomplete(tmp_path):
    write_peer_run(tmp_path, with_part_zero=False)
    (stored,) = list(list_stored_runs(tmp_path))
    assert stored.manifest.status == "failed"
    assert stored.manifest.errors[0]["error_type"] == "IncompleteExport"


def peer_reader_rows(data_root: Path) -> dict[str, list[dict]]:
    """What the peer's reader sees: runs = `*_part_0.parquet`, parts = `<prefix>_part_*.parquet` read with its schema."""
    runs = {}
    for folder in sorted(p for p in data_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for marker in folder.glob("*_part_0.parquet"):
            prefix = marker.stem.replace("_part_0", "")
            parts = sorted(folder.glob(f"{prefix}_part_*.parquet"), key=lambda p: int(p.stem.rsplit("_part_", 1)[1]))
            runs[prefix] = [row for part in parts for row in pq.read_table(part, schema=PEER_SCHEMA).to_pylist()]
    return runs


def test_our_export_is_what_the_peer_reader_expects(tmp_path):
    with RunWriter(tmp_path, PROJECT, RUN, 3_000) as writer:
        writer.write(
            parameter_rows(PROJECT, RUN, [("params/lr", "float", 0.01), ("sys/tags", "string_set", {"b", "a"})])
        )
        for start in range(0, 3000, 500):
            steps = list(range(start, start + 500))
            writer.write(series_rows(PROJECT, RUN, "m/loss", "float_series", steps, [0.5] * 500, steps))
        parts = writer.close()
    write_manifest(tmp_path, Manifest(status="complete", source={"project_id": PROJECT, "run_id": RUN}, parts=parts))
    assert len(parts) > 1
    seen = peer_reader_rows(tmp_path)
    assert list(seen) == [peer_name(RUN)]  # the manifest is not mistaken for a run or a part
    rows = seen[peer_name(RUN)]
    assert len(rows) == 3002
    lr = next(r for r in rows if r["attribute_path"] == "params/lr")
    assert (lr["step"], lr["timestamp"], lr["float_value"]) == (None, None, 0.01)
    assert next(r for r in rows if r["attribute_path"] == "sys/tags")["string_set_value"] == ["a", "b"]
    assert pq.ParquetFile(tmp_path / parts[0].path).schema_arrow.equals(PARQUET_SCHEMA)
    assert PARQUET_SCHEMA.equals(PEER_SCHEMA)
    assert pq.ParquetFile(tmp_path / parts[0].path).metadata.row_group(0).column(0).compression == "SNAPPY"


def test_file_paths_follow_the_peer_rule_and_never_escape(tmp_path):
    from neptune_exporter.errors import CorruptPartError
    from neptune_exporter.model import file_value_path, project_files_dir, resolve_file_value
    from tests.unit.fixtures.peer_export import CHECKPOINT, write_peer_files

    write_peer_files(tmp_path)
    assert project_files_dir(tmp_path, PROJECT) == tmp_path / peer_name(PROJECT)  # the peer's files_directory
    local = resolve_file_value(tmp_path, PROJECT, {"path": CHECKPOINT[0]})
    assert local == tmp_path / peer_name(PROJECT) / CHECKPOINT[0] and local.read_bytes() == CHECKPOINT[1]
    assert file_value_path(tmp_path, PROJECT, local) == CHECKPOINT[0]
    assert (
        resolve_file_value(tmp_path, PROJECT, None) is None
        and resolve_file_value(tmp_path, PROJECT, {"path": None}) is None
    )
    for escaping in ("../other/x", "/etc/passwd", "a/../../x"):
        with pytest.raises(
            CorruptPartError, match="points outside its files folder.*fix: file_value.path must be relative"
        ):
            resolve_file_value(tmp_path, PROJECT, escaping)
    with pytest.raises(ValueError, match="not under the project's files folder"):
        file_value_path(tmp_path, PROJECT, tmp_path / "elsewhere" / "x")


def test_loaders_refuse_file_rows_of_the_older_path_format(tmp_path):
    from neptune_exporter.errors import OutputPathError
    from neptune_exporter.loaders.base import open_exported_run

    with RunWriter(tmp_path / "data", PROJECT, RUN, 10_000) as writer:
        writer.write(parameter_rows(PROJECT, RUN, [("model/ckpt", "file", f"{peer_name(PROJECT)}/ckpt.bin")]))
        parts = writer.close()
    old = Manifest(status="complete", source={"project_id": PROJECT, "run_id": RUN}, parts=parts, format_version=1)
    write_manifest(tmp_path / "data", old)
    exported = open_exported_run(tmp_path / "data", tmp_path / "files", PROJECT, RUN)
    with pytest.raises(OutputPathError, match="older version.*fix: export the run again"):
        exported.local_file("model/ckpt", {"path": f"{peer_name(PROJECT)}/ckpt.bin"})

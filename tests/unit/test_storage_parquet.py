"""RunWriter → reader round trip of every attribute type, part rolling, numbering, atomic rename and abort."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neptune_exporter.errors import CorruptPartError
from neptune_exporter.model import PARQUET_SCHEMA, decimal_array_to_float, part_file_name, sanitize_name
from neptune_exporter.rows import empty_batch, parameter_rows, series_rows
from neptune_exporter.storage.exported_run import list_stored_runs
from neptune_exporter.storage.parquet import (
    RunWriter,
    project_dir,
    read_run_batches,
    run_part_paths,
)

PROJECT, RUN = "ws/proj", "run/1 ünï"
WHEN = datetime(2024, 5, 1, 12, 30, 45, 123000, tzinfo=UTC)


def every_type_batches() -> list[pa.RecordBatch]:
    params = parameter_rows(
        PROJECT,
        RUN,
        [
            ("params/lr", "float", 0.125),
            ("params/epochs", "int", 2**40),
            ("params/name", "string", "zażółć"),
            ("params/flag", "bool", False),
            ("sys/creation_time", "datetime", WHEN),
            ("sys/tags", "string_set", {"b", "a"}),
            ("model/weights", "file", "ws_proj/run/weights.bin"),
            ("data/set", "file_set", "ws_proj/run/set"),
            ("data/art", "artifact", "ws_proj/run/art"),
        ],
    )
    metric = series_rows(
        PROJECT, RUN, "metrics/loss", "float_series", [0.1, 0.29, 3.0], [1.5, math.nan, math.inf], [1000, 2000, 3000]
    )
    text = series_rows(PROJECT, RUN, "logs/out", "string_series", [1, 2], ["hello", "wörld"], [10, 20])
    hist = series_rows(
        PROJECT,
        RUN,
        "hist/w",
        "histogram_series",
        [5],
        [{"type": "COUNTING", "edges": [0.0, 1.0, 2.0], "values": [3.0, 4.0]}],
        [50],
    )
    images = series_rows(
        PROJECT, RUN, "img/x", "file_series", [0, 1], ["ws_proj/run/0.png", "ws_proj/run/1.png"], [7, 8]
    )
    return [params, metric, text, hist, images]


def rows_by_path(data_root) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for batch in read_run_batches(data_root, PROJECT, RUN):
        assert batch.schema.equals(PARQUET_SCHEMA)
        for row in batch.to_pylist():
            rows.setdefault(row["attribute_path"], []).append(row)
    return rows


def test_every_attribute_type_round_trips(tmp_path):
    with RunWriter(tmp_path, PROJECT, RUN, 50 * 1024 * 1024) as writer:
        for batch in every_type_batches():
            writer.write(batch)
        parts = writer.close()
    assert [p.path for p in parts] == [f"{sanitize_name(PROJECT)}/{part_file_name(RUN, 0)}"]
    assert parts[0].rows == 9 + 3 + 2 + 1 + 2
    rows = rows_by_path(tmp_path)
    assert rows["params/lr"][0]["float_value"] == 0.125
    assert rows["params/epochs"][0]["int_value"] == 2**40
    assert rows["params/name"][0]["string_value"] == "zażółć"
    assert rows["params/flag"][0]["bool_value"] is False
    assert rows["sys/creation_time"][0]["datetime_value"] == WHEN
    assert rows["sys/tags"][0]["string_set_value"] == ["a", "b"]
    assert rows["model/weights"][0]["file_value"] == {"path": "ws_proj/run/weights.bin"}
    assert rows["data/set"][0]["attribute_type"] == "file_set"
    assert rows["data/art"][0]["file_value"] == {"path": "ws_proj/run/art"}
    # parameters carry neither step nor timestamp (peer layout)
    assert all(rows[p][0]["step"] is None and rows[p][0]["timestamp"] is None for p in ("params/lr", "sys/tags"))
    loss = rows["metrics/loss"]
    assert [str(r["step"]) for r in loss] == ["0.100000", "0.290000", "3.000000"]
    assert loss[0]["float_value"] == 1.5 and math.isnan(loss[1]["float_value"]) and loss[2]["float_value"] == math.inf
    assert [r["timestamp"] for r in loss] == [datetime(1970, 1, 1, 0, 0, s, tzinfo=UTC) for s in (1, 2, 3)]
    assert [r["string_value"] for r in rows["logs/out"]] == ["hello", "wörld"]
    assert rows["hist/w"][0]["histogram_value"] == {"type": "COUNTING", "edges": [0.0, 1.0, 2.0], "values": [3.0, 4.0]}
    assert [r["file_value"]["path"] for r in rows["img/x"]] == ["ws_proj/run/0.png", "ws_proj/run/1.png"]


def metric_batch(start: int, n: int = 500) -> pa.RecordBatch:
    steps = list(range(start, start + n))
    return series_rows(PROJECT, RUN, "m/loss", "float_series", steps, [s * 0.5 for s in steps], steps)


def test_parts_roll_near_target_size_and_rename_lowest_last(tmp_path):
    writer = RunWriter(tmp_path, PROJECT, RUN, part_target_bytes=4_000)
    for i in range(12):
        writer.write(metric_batch(i * 500))
    parts = writer.close()
    assert len(parts) >= 4
    assert [p.path.rsplit("_part_", 1)[1] for p in parts] == [f"{i}.parquet" for i in range(len(parts))]
    assert sum(p.rows for p in parts) == 6000
    on_disk = run_part_paths(tmp_path, PROJECT, RUN, include_tmp=True)
    assert [p.name for p in on_disk] == [p.path.split("/")[1] for p in parts]  # no tmp files left
    for info in parts:
        assert pq.ParquetFile(tmp_path / info.path).metadata.num_rows == info.rows
        assert (tmp_path / info.path).stat().st_size == info.bytes
    steps = []
    for batch in read_run_batches(tmp_path, PROJECT, RUN, columns=["step"]):
        assert batch.schema.names == ["step"]
        steps.extend(decimal_array_to_float(batch.column(0)).tolist())
    assert steps == [float(s) for s in range(6000)]


def test_new_parts_are_numbered_after_existing_ones(tmp_path):
    with RunWriter(tmp_path, PROJECT, RUN, 10**9) as first:
        first.write(metric_batch(0))
        first.close()
    second = RunWriter(tmp_path, PROJECT, RUN, 10**9)
    assert second.first_index == 1
    second.write(metric_batch(500))
    parts = second.close()
    assert parts[0].path.endswith(part_file_name(RUN, 1))


def test_abort_removes_only_what_this_writer_wrote(tmp_path):
    with RunWriter(tmp_path, PROJECT, RUN, 10**9) as first:
        first.write(metric_batch(0))
        kept = first.close()
    second = RunWriter(tmp_path, PROJECT, RUN, 2_000)
    for i in range(4):
        second.write(metric_batch(500 + i * 500))
    assert len(run_part_paths(tmp_path, PROJECT, RUN, include_tmp=True)) > 1
    second.abort()
    assert [p.relative_to(tmp_path).as_posix() for p in run_part_paths(tmp_path, PROJECT, RUN, include_tmp=True)] == [
        kept[0].path
    ]


def test_context_manager_aborts_on_exception(tmp_path):
    with pytest.raises(RuntimeError):
        with RunWriter(tmp_path, PROJECT, RUN, 10**9) as writer:
            writer.write(metric_batch(0))
            raise RuntimeError("source broke")
    assert run_part_paths(tmp_path, PROJECT, RUN, include_tmp=True) == []


class DiskFullWriter:
    """A ParquetWriter on a full disk: the file exists (its header written), then every write and close fails."""

    def __init__(self, sink, *args, **kwargs):
        sink.write(b"PAR1")

    def write_table(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    def close(self):
        raise OSError(28, "No space left on device")


def test_a_failing_disk_leaves_no_tmp_part_even_when_closing_fails_again(tmp_path, monkeypatch):
    import neptune_exporter.storage.parquet as parquet

    monkeypatch.setattr(parquet.pq, "ParquetWriter", DiskFullWriter)
    with pytest.raises(OSError, match="No space left"):
        with RunWriter(tmp_path, PROJECT, RUN, 10**9) as writer:
            writer.write(metric_batch(0))
            writer.close()  # the flush opens a part (its file created), then the write fails
    assert list(project_dir(tmp_path, PROJECT).iterdir()) == []

    def no_file_handle(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(parquet.pa, "OSFile", no_file_handle)
    with pytest.raises(OSError, match="No space left"):
        with RunWriter(tmp_path, PROJECT, RUN, 10**9) as writer:
            writer.write(metric_batch(0))
            writer.close()
    assert list(project_dir(tmp_path, PROJECT).iterdir()) == []


def test_empty_batch_still_creates_part_zero(tmp_path):
    writer = RunWriter(tmp_path, PROJECT, RUN, 10**9)
    writer.write(empty_batch())
    parts = writer.close()
    assert [(p.rows, p.path.endswith("_part_0.parquet")) for p in parts] == [(0, True)]
    assert pq.read_table(tmp_path / parts[0].path).schema.equals(PARQUET_SCHEMA)


def test_batches_with_other_column_order_are_conformed_and_bad_types_refused(tmp_path):
    batch = metric_batch(0)
    shuffled = pa.RecordBatch.from_arrays(list(reversed(batch.columns)), names=list(reversed(batch.schema.names)))
    with RunWriter(tmp_path, PROJECT, RUN, 10**9) as writer:
        writer.write(shuffled)
        with pytest.raises(CorruptPartError, match="int_value"):
            writer.write(pa.RecordBatch.from_arrays([pa.array(["x"])], names=["int_value"]))
        writer.close()
    assert sum(b.num_rows for b in read_run_batches(tmp_path, PROJECT, RUN)) == 500


def test_reader_uses_only_manifest_listed_parts(tmp_path):
    from neptune_exporter.storage.manifest import Manifest, write_manifest

    with RunWriter(tmp_path, PROJECT, RUN, 10**9) as writer:
        writer.write(metric_batch(0))
        parts = writer.close()
    write_manifest(tmp_path, Manifest(status="complete", source={"project_id": PROJECT, "run_id": RUN}, parts=parts))
    with RunWriter(tmp_path, PROJECT, RUN, 10**9) as stray:  # e.g. an interrupted incremental export
        stray.write(metric_batch(500))
        stray.close()
    assert sum(b.num_rows for b in read_run_batches(tmp_path, PROJECT, RUN)) == 500
    (stored,) = list(list_stored_runs(tmp_path))
    assert [p.name for p in stored.parts] == [part_file_name(RUN, 0)]
    assert stored.project_dir == project_dir(tmp_path, PROJECT)


def test_corrupt_part_raises_with_remedy(tmp_path):
    folder = project_dir(tmp_path, PROJECT)
    folder.mkdir(parents=True)
    (folder / part_file_name(RUN, 0)).write_bytes(b"not parquet")
    with pytest.raises(CorruptPartError, match="cannot read Parquet part") as info:
        list(read_run_batches(tmp_path, PROJECT, RUN))
    assert "export the run again" in info.value.remedy


def test_small_batches_are_coalesced_into_few_row_groups(tmp_path):
    with RunWriter(tmp_path, PROJECT, RUN, 50 * 1024 * 1024) as writer:
        for i in range(2000):
            writer.write(series_rows(PROJECT, RUN, f"m/{i}", "float_series", [0, 1, 2], [1.0, 2.0, 3.0], None))
        (part,) = writer.close()
    metadata = pq.ParquetFile(tmp_path / part.path).metadata
    assert (metadata.num_rows, metadata.num_row_groups) == (6000, 1)


def test_dictionaries_only_on_repeating_columns_and_values_read_back(tmp_path):
    steps = list(range(5000))
    values = [i * 0.001 + 0.5 for i in steps]  # no repeats: a dictionary there would be wasted work
    with RunWriter(tmp_path, PROJECT, RUN, 50 * 1024 * 1024) as writer:
        for name in ("m/a", "m/b"):
            writer.write(series_rows(PROJECT, RUN, name, "float_series", steps, values, [1000 + s for s in steps]))
        (part,) = writer.close()
    row_group = pq.ParquetFile(tmp_path / part.path).metadata.row_group(0)
    encodings = {
        row_group.column(i).path_in_schema: row_group.column(i).encodings for i in range(row_group.num_columns)
    }
    dictionary = {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}
    for column in ("project_id", "run_id", "attribute_path", "step", "timestamp"):
        assert dictionary & set(encodings[column]), column
    assert not dictionary & set(encodings["float_value"])
    rows = rows_by_path(tmp_path)
    assert [r["float_value"] for r in rows["m/b"]] == values
    assert [float(r["step"]) for r in rows["m/a"]] == [float(s) for s in steps]

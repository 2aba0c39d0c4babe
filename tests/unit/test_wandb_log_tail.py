"""Reading a `.wandb` log from a block in its middle, and the tail-first summary check that relies on it."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2 as pb

from neptune_exporter.storage import wandb_log
from neptune_exporter.storage.wandb_log import iter_records, read_summary_keys

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
KEYS = ("neptune.load_state", "neptune.export_checksum")


def chunk(kind: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF
    return struct.pack("<IHB", crc, len(payload), kind) + payload


def write_log(path: Path, records: list[pb.Record]) -> list[int]:
    """A log in W&B's block format (records split across blocks as the writer does); each record's start offset."""
    out, starts = bytearray(struct.pack("<4sHB", b":W&B", 0xBEE1, 0)), []
    for record in records:
        data, kind_first = record.SerializeToString(), True
        starts.append(len(out))
        while True:
            room = BLOCK - len(out) % BLOCK
            if room < 7:
                out += bytes(room)
                if kind_first:
                    starts[-1] = len(out)
                continue
            piece, data = data[: room - 7], data[room - 7 :]
            kind = (FULL if not data else FIRST) if kind_first else (LAST if not data else MIDDLE)
            out += chunk(kind, piece)
            kind_first = False
            if not data:
                break
    path.write_bytes(bytes(out))
    return starts


def history(step: int, width: int = 40) -> pb.Record:
    record = pb.Record(num=step)
    record.history.step.num = step
    for i in range(width):
        record.history.item.add(key=f"metrics/m{i:03d}", value_json=json.dumps(step + i / 7))
    return record


def summary(updates: dict | None = None, removes: tuple[str, ...] = ()) -> pb.Record:
    record = pb.Record()
    for key, value in (updates or {}).items():
        record.summary.update.add(key=key, value_json=json.dumps(value))
    for key in removes:
        record.summary.remove.add(key=key)
    return record


def exit_record() -> pb.Record:
    record = pb.Record()
    record.exit.exit_code = 0
    return record


def full_read(path: Path) -> tuple[bool, dict]:
    """The reference: every record decoded from the start."""
    finished, values = False, {}
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            values.update({i.key: json.loads(i.value_json) for i in record.summary.update if i.key in KEYS})
            for item in record.summary.remove:
                values.pop(item.key, None)
        finished = finished or kind == "exit"
    return finished, values


def test_reading_from_any_block_gives_the_records_that_start_there_or_later(tmp_path):
    records = [history(step, width=5 + (step % 20) * 120) for step in range(40)]  # some span whole blocks
    path = tmp_path / "run.wandb"
    starts = write_log(path, records)
    assert path.stat().st_size > 10 * BLOCK and max(len(r.SerializeToString()) for r in records) > BLOCK
    for block in range(path.stat().st_size // BLOCK + 1):
        expected = [r.num for r, start in zip(records, starts, strict=True) if start >= block * BLOCK]
        assert [r.num for r in iter_records(path, block)] == expected, block


def test_a_finished_load_is_read_from_the_tail_alone(tmp_path, monkeypatch):
    path = tmp_path / "run.wandb"
    write_log(
        path,
        [history(step) for step in range(3000)]
        + [summary({KEYS[0]: "complete"}), summary({KEYS[1]: "abc"}), exit_record()],
    )
    assert path.stat().st_size > 4 * wandb_log.SUMMARY_TAIL_BYTES
    blocks_read = []
    real_chunks = wandb_log._chunks
    monkeypatch.setattr(
        wandb_log, "_chunks", lambda p, h, start=0: blocks_read.append(start) or real_chunks(p, h, start)
    )
    found = read_summary_keys(path, KEYS)
    assert blocks_read == [path.stat().st_size // BLOCK - wandb_log.SUMMARY_TAIL_BYTES // BLOCK]  # nothing before
    assert found == (True, {KEYS[0]: "complete", KEYS[1]: "abc"}) == full_read(path)


@pytest.mark.parametrize("case", ["keys set early", "one key set early", "key removed late", "no exit", "empty"])
def test_whatever_the_tail_holds_the_answer_is_the_full_reads(tmp_path, case):
    path = tmp_path / "run.wandb"
    early = {"keys set early": {KEYS[0]: "complete", KEYS[1]: "abc"}, "one key set early": {KEYS[1]: "abc"}}.get(
        case, {}
    )
    late = {
        "one key set early": [summary({KEYS[0]: "complete"})],
        "key removed late": [summary({KEYS[0]: "complete", KEYS[1]: "abc"}), summary(removes=(KEYS[1],))],
        "no exit": [summary({KEYS[0]: "complete", KEYS[1]: "abc"})],
    }.get(case, [])
    body = [] if case == "empty" else [summary(early)] + [history(step) for step in range(3000)] + late
    write_log(path, body + ([] if case == "no exit" else [exit_record()]))
    assert read_summary_keys(path, KEYS) == full_read(path)
    both = {KEYS[0]: "complete", KEYS[1]: "abc"}
    expected = {
        "keys set early": (True, both),
        "one key set early": (True, both),
        "key removed late": (True, {KEYS[0]: "complete"}),
        "no exit": (False, both),
        "empty": (True, {}),
    }[case]
    assert read_summary_keys(path, KEYS) == expected

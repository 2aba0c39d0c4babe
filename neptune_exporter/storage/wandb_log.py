"""Read an offline W&B `.wandb` transaction log back (run, config, history, summary, artifacts), streamed: the
on-disk format a W&B target writes, read by the loader (is a run complete?) and by validation (what does it hold?)."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from wandb.proto import wandb_internal_pb2 as pb

from neptune_exporter.errors import TargetError

_BLOCK_SIZE = 32768
_HEADER_SIZE = 7  # crc32 (4) + length (2) + chunk type (1)
SUMMARY_TAIL_BYTES = 8 * _BLOCK_SIZE  # read first when looking for a finished load's last summary keys
_FILE_HEADER = struct.Struct("<4sHB")
_CHUNK_HEADER = struct.Struct("<IHB")
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_TYPE_CRC = [zlib.crc32(bytes([t])) & 0xFFFFFFFF for t in range(5)]


def _corrupt(path: Path, why: str) -> TargetError:
    return TargetError(
        f"W&B log {path} is corrupt: {why}",
        "delete that offline run folder and load the run again",
    )


def _chunks(path: Path, handle: BinaryIO, start_block: int = 0) -> Iterator[tuple[int, bytes]]:
    """(chunk type, payload) of every chunk from block `start_block` on; stops quietly at a torn tail (a killed
    writer). Chunks never cross a block boundary, so any block is a place to start reading."""
    size = path.stat().st_size
    handle.seek(start_block * _BLOCK_SIZE)
    offset = _FILE_HEADER.size if start_block == 0 else 0  # the first block starts with the file header
    while block := handle.read(_BLOCK_SIZE):
        last_block = handle.tell() >= size
        while offset + _HEADER_SIZE <= len(block):
            crc, length, chunk_type = _CHUNK_HEADER.unpack_from(block, offset)
            if chunk_type == 0 and length == 0:
                break  # zero padding to the end of the block
            payload = block[offset + _HEADER_SIZE : offset + _HEADER_SIZE + length]
            valid = len(payload) == length and chunk_type <= _LAST
            if not valid or zlib.crc32(payload, _TYPE_CRC[chunk_type]) & 0xFFFFFFFF != crc:
                if last_block:
                    return
                raise _corrupt(path, f"bad chunk at byte {handle.tell() - len(block) + offset}")
            yield chunk_type, payload
            offset += _HEADER_SIZE + length
        offset = 0


def iter_records(path: Path | str, start_block: int = 0) -> Iterator[pb.Record]:
    """Every complete record of a `.wandb` log, read block by block (memory does not grow with the log); from
    `start_block` on, the first record that starts in that block or later comes first."""
    path = Path(path)
    with path.open("rb") as handle:
        header = handle.read(_FILE_HEADER.size)
        if len(header) < _FILE_HEADER.size:
            return
        ident, magic, version = _FILE_HEADER.unpack(header)
        if ident != b":W&B" or magic != 0xBEE1 or version != 0:
            raise _corrupt(path, "not a W&B transaction log")
        pending: bytes | None = None  # None: inside a record that started before start_block
        for chunk_type, payload in _chunks(path, handle, start_block):
            if chunk_type in (_FIRST, _FULL):
                pending = payload
            elif pending is not None:
                pending += payload
            if chunk_type in (_FULL, _LAST) and pending is not None:
                record = pb.Record()
                record.ParseFromString(pending)
                pending = b""
                yield record


def items_to_dict(items) -> dict[str, Any]:
    """Config/summary/history items → dict; nested keys become nested dicts, flat keys keep their '/'."""
    out: dict[str, Any] = {}
    for item in items:
        value = json.loads(item.value_json)
        if item.nested_key:
            node = out
            for part in item.nested_key[:-1]:
                node = node.setdefault(part, {})
            node[item.nested_key[-1]] = value
        else:
            out[item.key] = value
    return out


def history_row(record: pb.Record) -> dict[str, Any]:
    """One history record as a dict with `_step`."""
    row = items_to_dict(record.history.item)
    if record.history.HasField("step"):
        row.setdefault("_step", record.history.step.num)
    return row


def iter_history(path: Path | str) -> Iterator[dict[str, Any]]:
    """History rows of a `.wandb` log in the order they were logged."""
    for record in iter_records(path):
        if record.WhichOneof("record_type") == "history":
            yield history_row(record)


@dataclass
class ArtifactEntry:
    """One file inside a logged artifact."""

    path: str
    digest: str  # base64 md5, as W&B computes it
    size: int
    local_path: str = ""  # staged copy (offline runs keep it until `wandb sync`)


@dataclass
class LoggedArtifact:
    """An artifact the run logged."""

    name: str
    type: str
    digest: str
    metadata: dict
    entries: list[ArtifactEntry]


@dataclass
class WandbRunLog:
    """Everything but the history of one offline run."""

    path: Path
    run_id: str = ""
    project: str = ""
    entity: str = ""
    name: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)
    forked: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[LoggedArtifact] = field(default_factory=list)
    history_rows: int = 0
    exit_code: int | None = None

    @property
    def finished(self) -> bool:
        """True when the writer reached `run.finish()` (an exit record exists)."""
        return self.exit_code is not None


def _apply_run(log: WandbRunLog, run: pb.RunRecord) -> None:
    log.run_id, log.project, log.entity = run.run_id, run.project, run.entity
    log.name, log.group, log.tags, log.forked = run.display_name, run.run_group, list(run.tags), run.forked
    log.config.update(items_to_dict(run.config.update))


def _artifact(record: pb.ArtifactRecord) -> LoggedArtifact:
    entries = [ArtifactEntry(e.path, e.digest, e.size, e.local_path) for e in record.manifest.contents]
    metadata = json.loads(record.metadata or "{}")
    return LoggedArtifact(record.name, record.type, record.digest, metadata, entries)


def read_run_log(path: Path | str) -> WandbRunLog:
    """Run facts, config, summary and artifacts of a `.wandb` log (history only counted)."""
    log = WandbRunLog(path=Path(path))
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            _apply_run(log, record.run)
        elif kind == "config":
            log.config.update(items_to_dict(record.config.update))
        elif kind == "summary":
            log.summary.update(items_to_dict(record.summary.update))
            for item in record.summary.remove:
                log.summary.pop(item.key, None)
        elif kind == "history":
            log.history_rows += 1
        elif kind == "artifact":
            log.artifacts.append(_artifact(record.artifact))
        elif kind == "exit":
            log.exit_code = record.exit.exit_code
    return log


def read_summary_keys(path: Path | str, keys: tuple[str, ...]) -> tuple[bool, dict[str, Any]]:
    """Whether the log reached `run.finish()` (an exit record) and the last summary value of each of `keys`.

    Only the log's tail is decoded when it settles everything (the exit record and each key's last update are
    written at the end of a load); otherwise the whole log is. Nothing but summary and exit records is kept."""
    path = Path(path)
    tail_block = max(0, path.stat().st_size - SUMMARY_TAIL_BYTES) // _BLOCK_SIZE
    finished, values, settled = _summary_keys_from(path, set(keys), tail_block)
    if tail_block and not (finished and settled >= set(keys)):
        finished, values, _ = _summary_keys_from(path, set(keys), 0)
    return finished, values


def _summary_keys_from(path: Path, wanted: set[str], start_block: int) -> tuple[bool, dict[str, Any], set[str]]:
    """(exit record seen, last values of the wanted keys, wanted keys updated or removed) from `start_block` on."""
    values: dict[str, Any] = {}
    settled: set[str] = set()
    finished = False
    for record in iter_records(path, start_block):
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            for item in record.summary.update:
                if item.key in wanted:
                    values[item.key] = json.loads(item.value_json)
                    settled.add(item.key)
            for item in record.summary.remove:
                if item.key in wanted:
                    values.pop(item.key, None)
                    settled.add(item.key)
        elif kind == "exit":
            finished = True
    return finished, values, settled


def find_offline_runs(wandb_dir: Path | str, run_id: str) -> list[Path]:
    """Offline run folders of one W&B run id under a `--wandb-dir` (oldest first)."""
    root = Path(wandb_dir) / "wandb"
    return sorted(p for p in root.glob(f"offline-run-*-{run_id}") if p.is_dir())


def run_log_path(run_folder: Path) -> Path | None:
    """The `.wandb` log inside an offline run folder, if written."""
    logs = sorted(run_folder.glob("run-*.wandb"))
    return logs[0] if logs else None

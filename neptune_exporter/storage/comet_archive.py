"""Comet offline archives (`<experiment key>.zip`, written by comet_ml's OfflineExperiment): `experiment.json`
(key, project, workspace, tags), `messages.json` (one JSON message a line) and the logged files, read back plainly."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXPERIMENT_FILE = "experiment.json"
MESSAGES_FILE = "messages.json"
LOAD_STATE = "neptune.load_state"
CHECKSUM = "neptune.export_checksum"


class UnreadableArchive(Exception):
    """Not a whole offline archive: no zip, or its experiment.json / messages.json missing or damaged."""


def read_meta(archive: zipfile.ZipFile) -> dict:
    """The archive's experiment.json."""
    try:
        return json.loads(archive.read(EXPERIMENT_FILE))
    except (KeyError, ValueError, zipfile.BadZipFile, OSError) as error:
        raise UnreadableArchive(f"{EXPERIMENT_FILE}: {error}") from None


def iter_messages(archive: zipfile.ZipFile, types: tuple[str, ...] | None = None) -> Iterator[dict]:
    """Messages in logged order as {"type", "payload"}; only these types when given (others are not decoded)."""
    needles = None if types is None else [f'"type":"{t}"'.encode() for t in types]
    try:
        with archive.open(MESSAGES_FILE) as raw:
            for line in raw:
                if needles is not None and not any(n in line for n in needles):
                    continue
                message = json.loads(line)
                if types is None or message.get("type") in types:
                    yield message
    except (KeyError, ValueError, zipfile.BadZipFile, EOFError, OSError) as error:
        raise UnreadableArchive(f"{MESSAGES_FILE}: {error}") from None


def read_others(archive: zipfile.ZipFile) -> dict[str, Any]:
    """The experiment's "others" (`log_other`), last value per key."""
    return {m["payload"]["key"]: m["payload"]["value"] for m in iter_messages(archive, ("log_other",))}


@dataclass(frozen=True)
class ArchiveState:
    """What an archive path holds: absent, incomplete (unreadable or unfinished: redo), or complete, with its
    export checksum (a complete one of another checksum is an older export's: kept aside, never deleted)."""

    state: str  # "absent" | "incomplete" | "complete"
    checksum: str | None = None
    others: dict[str, Any] | None = None
    why: str = ""


def archive_state(path: Path) -> ArchiveState:
    """Complete = a readable zip with experiment.json and messages.json whose others say neptune.load_state
    complete (the loader logs it last, after every value, before the archive is closed)."""
    if not path.exists():
        return ArchiveState("absent")
    try:
        with zipfile.ZipFile(path) as archive:
            meta = read_meta(archive)
            others = read_others(archive)
    except (UnreadableArchive, zipfile.BadZipFile, OSError) as error:
        return ArchiveState("incomplete", why=str(error))
    if meta.get("customer_error_reported"):  # comet_ml could not write every message
        return ArchiveState("incomplete", why=str(meta.get("customer_error_message")))
    if others.get(LOAD_STATE) != "complete":
        return ArchiveState("incomplete", why=f"{LOAD_STATE} is {others.get(LOAD_STATE)!r}")
    return ArchiveState("complete", checksum=str(others.get(CHECKSUM)), others=others)

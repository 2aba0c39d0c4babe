"""Exported files on disk: safe names, staging folders, publish (atomic move + size + sha256) and hashing."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from neptune_exporter.errors import OutputPathError, TerminalError
from neptune_exporter.model import file_value_path, project_files_dir, sanitize_name

HASH_CHUNK = 1 << 20
_CLEAN_PART = re.compile(r"[A-Za-z0-9_-]{1,100}")


@dataclass
class ExportedFile:
    """A file written under the files root by an export."""

    attribute_path: str
    relative_path: str  # as stored in file_value.path: relative to <files>/<project-dir>/ (model.file_value_path)
    size: int
    sha256: str
    step: float | None = None


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- safe names


def disk_part(part: str) -> str:
    """One attribute-path segment as a folder name: kept when plain ASCII, else sanitized + hash (collision-free)."""
    if _CLEAN_PART.fullmatch(part):
        return part
    name = sanitize_name(part)
    if len(name.encode("utf-8")) > 200:
        safe, digest = name.rsplit("-", 1)
        name = safe.encode("utf-8")[:150].decode("utf-8", "ignore") + "-" + digest
    return name


def file_leaf(source_path: str) -> str:
    """A safe file name from the storage path's last segment, extension kept."""
    base = source_path.rstrip("/").rsplit("/", 1)[-1]
    safe = "".join(c if (c.isalnum() or c in "._-") else "_" for c in base).lstrip(".")
    if len(safe.encode("utf-8")) > 150:
        stem, dot, ext = safe.rpartition(".")
        ext = ext[:16] if dot else ""
        safe = safe.encode("utf-8")[:120].decode("utf-8", "ignore") + (f".{ext}" if ext else "")
    return safe or "file"


def safe_relative(path: str) -> Path:
    """An attribute path as a relative folder that cannot leave the run's folder ('..' and '.' escaped)."""
    parts = []
    for part in path.split("/"):
        if part in ("", ".", ".."):
            part = part.replace(".", "_") or "_"
        parts.append(part.replace("\\", "_"))
    return Path(*parts)


# ----------------------------------------------------------------------------- staging → publish


STAGING_PREFIX = ".staging-"


def run_files_dir(files_root: Path | str, project_id: str, run_id: str, scope: str | None = None) -> Path:
    """`<files>/<project-dir>[/<scope>]/<run-file>`: where an export puts a run's files and stages their downloads."""
    return project_files_dir(files_root, project_id) / (scope or "") / sanitize_name(run_id)


def remove_staging_leftovers(folder: Path) -> list[Path]:
    """Delete the `.staging-*` folders a killed export left in a run's files folder (the run is being exported
    again, by the one export that holds the data path's lock); the folders removed."""
    if not folder.is_dir():
        return []
    leftovers = [Path(entry.path) for entry in os.scandir(folder) if entry.name.startswith(STAGING_PREFIX)]
    for leftover in leftovers:
        shutil.rmtree(leftover, ignore_errors=True)
    return leftovers


@contextmanager
def staging_dir(parent: Path, prefix: str = STAGING_PREFIX) -> Iterator[Path]:
    """A fresh folder `<parent>/<prefix><uuid>` for downloads, removed with whatever is left in it on exit."""
    staging = parent / f"{prefix}{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(
    staged: Path, target: Path, files_root: Path, project_id: str, attribute_path: str, step: float | None = None
) -> ExportedFile:
    """Move a downloaded file into its final place (atomic rename) and record its project-relative path, size, sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    size, digest = staged.stat().st_size, file_sha256(staged)
    os.replace(staged, target)
    return ExportedFile(attribute_path, file_value_path(files_root, project_id, target), size, digest, step)


def unpack_zip(archive: Path, target: Path) -> list[Path]:
    """Extract a zip into target (refusing members that would land outside it); the files written."""
    written = []
    root = target.resolve()
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.infolist():
            if member.is_dir():
                continue
            destination = (target / member.filename).resolve()
            if root not in destination.parents:
                raise TerminalError(
                    f"file set archive member {member.filename!r} points outside its folder",
                    "report this server response; the exporter refuses to write outside the files folder",
                )
            destination.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(member) as source, open(destination, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
            written.append(destination)
    return sorted(written)


def require_writable_folder(folder: Path, what: str, option: str) -> None:
    """The folder exists (created when missing) and takes a file; OutputPathError naming `what` and the `option`
    that points elsewhere otherwise (a target's own folder: W&B's offline runs, ZenML's local store)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OutputPathError(
            f"the {what} {folder} is not writable ({error.strerror or error})",
            f"pass {option} pointing at a folder you can write to",
        ) from None

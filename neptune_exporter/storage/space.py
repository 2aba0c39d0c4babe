"""A full disk as a clear per-run error: which folder, how much room is left there, and what to do."""

from __future__ import annotations

import shutil
from pathlib import Path

from neptune_exporter.errors import DiskFullError, disk_full_cause


def free_bytes(folder: Path) -> int | None:
    """Free bytes on the disk of `folder` (or of its nearest existing parent); None when that cannot be read."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def device_of(folder: Path) -> int | None:
    """The device (disk) holding `folder` or its nearest existing parent."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return candidate.stat().st_dev
    return None


def full_folders(error: OSError, folders: dict[str, Path]) -> dict[str, Path]:
    """The folders on the full disk: the one holding the error's file when it names one, else those on the disk with
    the least room (usually both, on one disk)."""
    target = Path(error.filename).resolve() if isinstance(error.filename, str) and error.filename else None
    for option, folder in folders.items():
        if target is not None and target.is_relative_to(folder.resolve()):
            return {option: folder}
    fullest = min(folders.values(), key=lambda folder: free_bytes(folder) or 0)
    return {option: folder for option, folder in folders.items() if device_of(folder) == device_of(fullest)}


def disk_full_error(error: BaseException, folders: dict[str, Path], run: str | None = None) -> DiskFullError | None:
    """A DiskFullError when a full disk is behind `error` (`errors.disk_full_cause`) while writing under `folders`
    ({option: folder}, e.g. {"--data-path": ...}); None for any other error."""
    full = disk_full_cause(error)
    if full is None:
        return None
    on_it = full_folders(full, folders)
    free = free_bytes(next(iter(on_it.values())))
    room = f"{free / 2**20:.1f} MiB free" if free is not None else "free space unknown"
    named = " and ".join(f"{option} {folder}" for option, folder in on_it.items())
    options = " / ".join(on_it)
    return DiskFullError(
        f"the disk of {named} ran out of space ({room} now)",
        f"free space on that disk, or pass {options} a folder on a disk with more room, then run the same command "
        "again (complete runs are kept)",
        run=run,
    )

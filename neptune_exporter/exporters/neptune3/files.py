"""One Neptune 3.x run's files: downloads in collision-free groups, moved to their final place and recorded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neptune_exporter.errors import TerminalError
from neptune_exporter.exporters.neptune3.frames import present
from neptune_exporter.model import project_files_dir, sanitize_name
from neptune_exporter.storage.files import ExportedFile, disk_part, file_leaf, publish, staging_dir

FILES_PER_DOWNLOAD = 100


def step_label(step: float) -> str:
    return f"step_{step:.6f}".rstrip("0").rstrip(".")


def _staging_key(attribute: str, step: float | None) -> tuple:
    """Where neptune-query would put a download (its path sanitization): files sharing a key go in separate calls."""
    parts = tuple("".join(c if (c.isalnum() or c in "_-") else "_" for c in p) for p in attribute.split("/"))
    return parts, step


def collision_free_groups(files: list, size: int) -> Iterator[list]:
    """Groups of at most `size` files whose download targets cannot collide."""
    pending = list(files)
    while pending:
        group: list = []
        keys: set[tuple] = set()
        rest: list = []
        for item in pending:
            key = _staging_key(item.attribute_path, item.step)
            if key in keys or len(group) >= size:
                rest.append(item)
            else:
                keys.add(key)
                group.append(item)
        yield group
        pending = rest


@dataclass
class FileDownloads:
    """Downloads of one run's neptune-query File objects, moved to their final place and recorded (size, sha256)."""

    files_root: Path
    project: str
    run_id: str
    errors: Callable[[str | None], AbstractContextManager[None]]  # around each call: token, typed errors
    files: list[ExportedFile] = field(default_factory=list)

    def run_folder(self) -> Path:
        return project_files_dir(self.files_root, self.project) / sanitize_name(self.run_id)

    def final_path(self, attribute: str, step: float | None, source_path: str) -> Path:
        folder = self.run_folder().joinpath(*(disk_part(p) for p in attribute.split("/") if p))
        leaf = file_leaf(source_path)
        return folder / (f"{step_label(step)}-{leaf}" if step is not None else leaf)

    def download(self, files: list) -> dict[tuple[str, float | None], ExportedFile]:
        """Download neptune-query File objects, move them to their final place, record size and sha256."""
        stored: dict[tuple[str, float | None], ExportedFile] = {}
        for group in collision_free_groups(files, FILES_PER_DOWNLOAD):
            with staging_dir(self.run_folder()) as staging:  # `.staging-*` in the run's folder, as 2.x
                downloaded = self.download_group(group, staging)
                for item in group:
                    key = (item.attribute_path, None if item.step is None else float(item.step))
                    stored[key] = self.place(item, downloaded.get(key))
        return stored

    def download_group(self, group: list, staging: Path) -> dict[tuple[str, float | None], Path]:
        from neptune_query import runs as nq_runs

        with self.errors(group[0].attribute_path if len(group) == 1 else None):
            frame = nq_runs.download_files(files=group, destination=staging)
        result: dict[tuple[str, float | None], Path] = {}
        for attribute in frame.columns:
            for (_, step), local in frame[attribute].items():
                if present(local):
                    result[(attribute, None if not present(step) else float(step))] = Path(local)
        return result

    def place(self, item: Any, local: Path | None) -> ExportedFile:
        step = None if item.step is None else float(item.step)
        if local is None or not local.exists():
            raise TerminalError(
                f"file {item.path!r} of {item.attribute_path!r} is missing from Neptune storage",
                "exclude the attribute (--attributes / --exclude files) to export the rest of the run",
                run=self.run_id,
                attribute=item.attribute_path,
            )
        target = self.final_path(item.attribute_path, step, item.path)
        exported = publish(local, target, self.files_root, self.project, item.attribute_path, step)
        self.files.append(exported)
        return exported

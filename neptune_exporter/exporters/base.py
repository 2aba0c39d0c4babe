"""The verbs every source implements (selections live in selection.py, watermarks in storage/manifest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeGuard

import pyarrow as pa

from neptune_exporter.errors import InvalidTokenError, ProjectNotFoundError, TerminalError, disk_full_cause
from neptune_exporter.model import ProjectId, RunRef
from neptune_exporter.selection import AttributeSelection, RunSelection
from neptune_exporter.storage.files import ExportedFile
from neptune_exporter.storage.manifest import Watermark


@dataclass
class RunContent:
    """What a source yields for one run: batches to write and files it downloaded (filled as it streams)."""

    batches: Iterator[pa.RecordBatch]
    files: list[ExportedFile] = field(default_factory=list)
    # extra provenance the source learned while reading (e.g. fork parent), merged into the manifest
    source_facts: dict = field(default_factory=dict)
    # attributes that could not be exported (their error names them); the run's others are, and the run is failed
    attribute_errors: list[TerminalError] = field(default_factory=list)


def attribute_failure(error: BaseException) -> TypeGuard[TerminalError]:
    """True when an error reading one attribute fails that attribute only: a terminal error that is not a full disk
    nor a refused token or project (a full disk, a refused token, a transient error or an interrupt stop the whole run
    as before; transient ones go through the one retry policy)."""
    run_wide = (InvalidTokenError, ProjectNotFoundError)
    return isinstance(error, TerminalError) and not isinstance(error, run_wide) and disk_full_cause(error) is None


ProgressCallback = Callable[[int, int], None]  # (points, bytes) added since the last call


class Source(Protocol):
    """A Neptune generation: same verbs for neptune3 (neptune-query) and neptune2 (neptune)."""

    kind: str  # "neptune3" | "neptune2"
    server: str  # base URL the token points to (for manifests)

    def check_access(self, project_id: ProjectId) -> None:
        """Fail fast with InvalidTokenError / ProjectNotFoundError before any work starts."""

    def list_projects(self, workspace: str) -> list[ProjectId]:
        """Projects of a workspace, or UnsupportedError when the API cannot list them."""

    def list_runs(self, project_id: ProjectId, selection: RunSelection) -> list[RunRef]:
        """Runs of a project matching the selection, each with its modification time."""

    def export_run(
        self,
        run: RunRef,
        attributes: AttributeSelection,
        files_root: Path,
        watermarks: dict[str, Watermark] | None = None,
        progress: ProgressCallback | None = None,
    ) -> RunContent:
        """Stream a run's rows (only points after the watermarks when given) and download its files."""


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of at most `size` items."""
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch

"""The verbs every source implements, and the selection options they share."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

import pyarrow as pa

from neptune_exporter.errors import InvalidRegexError
from neptune_exporter.model import AttributeKind, AttributeType, ProjectId, RunRef


def compile_regex(pattern: str | None, option: str) -> re.Pattern | None:
    """Compile a user regex or raise InvalidRegexError naming the option."""
    if pattern is None or pattern == "":
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InvalidRegexError(
            f"{option} {pattern!r} is not a valid regular expression: {exc}",
            f"correct the pattern given to {option} (Python `re` syntax; escape special characters like '.' '(' '[')",
        ) from None


@dataclass(frozen=True)
class RunSelection:
    """Which runs to export from a project."""

    runs_regex: str | None = None  # matched (re.search) against run id / custom run id / sys id
    experiments_regex: str | None = None  # 3.x experiment name
    where: str | None = None  # the tool's expression language (exporters/where.py)
    query: str | None = None  # raw NQL (2.x only)
    modified_after: datetime | None = None
    include_archived: bool = False
    run_ids: tuple[str, ...] = ()  # exact run ids, when given


@dataclass(frozen=True)
class AttributeSelection:
    """Which attributes of a run to export."""

    regex: str | None = None  # re.search on the attribute path
    names: tuple[str, ...] = ()  # exact paths (union with regex when both given)
    include_kinds: frozenset[AttributeKind] = frozenset(AttributeKind)
    exclude_kinds: frozenset[AttributeKind] = frozenset()
    include_previews: bool = False

    def kinds(self) -> frozenset[AttributeKind]:
        return frozenset(self.include_kinds) - frozenset(self.exclude_kinds)

    def to_json(self) -> dict:
        return {
            "regex": self.regex,
            "names": sorted(self.names),
            "kinds": sorted(k.value for k in self.kinds()),
            "include_previews": self.include_previews,
        }


@dataclass
class Watermark:
    """What an earlier export already holds of one attribute (the incremental resume point)."""

    attribute_type: AttributeType
    last_step: float | None  # None: nothing exported yet or not a series
    count: int = 0


@dataclass
class ExportedFile:
    """A file written under the files root by an export."""

    attribute_path: str
    relative_path: str  # as stored in file_value.path: relative to <files>/<project-dir>/ (model.file_value_path)
    size: int
    sha256: str
    step: float | None = None


@dataclass
class RunContent:
    """What a source yields for one run: batches to write and files it downloaded (filled as it streams)."""

    batches: Iterator[pa.RecordBatch]
    files: list[ExportedFile] = field(default_factory=list)
    # extra provenance the source learned while reading (e.g. fork parent), merged into the manifest
    source_facts: dict = field(default_factory=dict)


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


def matches_kind(attribute_type: AttributeType, selection: AttributeSelection) -> bool:
    """True when the attribute's kind is selected."""
    from neptune_exporter.model import KIND_OF_TYPE

    return KIND_OF_TYPE[attribute_type] in selection.kinds()


def matches_path(path: str, selection: AttributeSelection, pattern: re.Pattern | None) -> bool:
    """True when the path is selected by the exact names and/or regex (no filter → all)."""
    if not selection.names and pattern is None:
        return True
    return path in selection.names or (pattern is not None and pattern.search(path) is not None)


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

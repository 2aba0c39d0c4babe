"""One Neptune 3.x run streamed: the attribute table, parameters, series read backwards in windows, files."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from neptune_exporter.errors import StepOutOfRangeError, TerminalError
from neptune_exporter.exporters.base import ProgressCallback, attribute_failure, chunked
from neptune_exporter.exporters.neptune3.client import SERIES_PER_REQUEST, fetch_float_points, neptune_errors
from neptune_exporter.exporters.neptune3.discovery import archived_too
from neptune_exporter.exporters.neptune3.files import FILES_PER_DOWNLOAD, FileDownloads
from neptune_exporter.exporters.neptune3.frames import (
    SeriesChunk,
    float_series_chunks,
    parameter_value,
    present,
    series_values,
    split_series_frame,
)
from neptune_exporter.model import AttributeType, RunRef
from neptune_exporter.rows import parameter_rows, series_rows
from neptune_exporter.selection import AttributeSelection, compile_regex, matches_kind, matches_path
from neptune_exporter.settings import Settings
from neptune_exporter.storage.files import ExportedFile
from neptune_exporter.storage.manifest import Watermark

if TYPE_CHECKING:
    from neptune_query.filters import KNOWN_TYPES_LITERAL, BaseAttributeFilter


PARAMETER_TYPES: tuple[KNOWN_TYPES_LITERAL, ...] = ("float", "int", "string", "bool", "datetime", "string_set")
SERIES_TYPES: tuple[KNOWN_TYPES_LITERAL, ...] = ("float_series", "string_series", "histogram_series")
FILE_TYPES: tuple[KNOWN_TYPES_LITERAL, ...] = ("file", "file_series")
ALL_TYPES = PARAMETER_TYPES + SERIES_TYPES + FILE_TYPES

# The fork relation (3.x): the parent's run id (custom run id, else sys id — how runs are named here) and the
# fork step. Exported as ordinary parameter rows when selected, and always put in the manifest's source facts.
FORK_PARENT_ATTRIBUTES = ("sys/forking/parent", "sys/fork/parent")
FORK_STEP_ATTRIBUTES = ("sys/forking/step", "sys/fork/step")
FORK_ATTRIBUTES = FORK_PARENT_ATTRIBUTES + FORK_STEP_ATTRIBUTES


@dataclass
class RunExport:
    """State of one run's streamed export: what it selects, where files go, what it found."""

    settings: Settings
    run: RunRef
    selection: AttributeSelection
    files_root: Path
    watermarks: dict[str, Watermark]
    progress: ProgressCallback | None
    use_token: Callable[[], None] = lambda: None  # makes this source's token neptune-query's before each call
    files: list[ExportedFile] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    attribute_errors: list = field(default_factory=list)  # RunContent.attribute_errors
    downloads: FileDownloads = field(init=False)

    def __post_init__(self) -> None:
        self.downloads = FileDownloads(self.files_root, self.project, self.run.run_id, self.errors, self.files)

    # ---------------------------------------------------------------- plumbing

    @property
    def project(self) -> str:
        return self.run.project_id

    def runs_argument(self):
        """A filter selecting exactly this run by sys/id (archived runs included)."""
        from neptune_query.filters import Attribute, Filter

        by_id = Filter.eq(Attribute("sys/id", type="string"), self.run.sys_id)
        return by_id & archived_too() if self.run.archived else by_id

    @contextmanager
    def errors(self, attribute: str | None = None):
        """Around every neptune-query call: this source's token, typed errors naming the run and attribute."""
        with neptune_errors(project=self.project, run=self.run.run_id, attribute=attribute):
            self.use_token()
            yield

    def report(self, batch: pa.RecordBatch, extra_bytes: int = 0) -> pa.RecordBatch:
        if self.progress is not None:
            self.progress(batch.num_rows, batch.nbytes + extra_bytes)
        return batch

    def lower_bound(self, path: str) -> float | None:
        """First step to fetch: just above the watermark's last step (None: from the start)."""
        mark = self.watermarks.get(path)
        if mark is None or mark.last_step is None:
            return None
        return float(np.nextafter(float(mark.last_step), np.inf))

    # ---------------------------------------------------------------- the stream

    def batches(self) -> Iterator[pa.RecordBatch]:
        found = self.selected_attributes()
        yield from self.parameter_batches(found.get("parameters", []))
        yield from self.series_batches(dict.fromkeys(found.get("float_series", []), "float_series"))
        other = {path: t for t in ("string_series", "histogram_series") for path in found.get(t, [])}
        yield from self.series_batches(other)  # one fetch_series for both kinds
        yield from self.file_batches(found.get("file", []))
        yield from self.file_series_batches(found.get("file_series", []))

    def selected_types(self) -> list[KNOWN_TYPES_LITERAL]:
        return [t for t in ALL_TYPES if matches_kind(AttributeType(t), self.selection)]

    def selected_attributes(self) -> dict[str, list]:
        """One table read: {"parameters": [(path, type, value)], "<series type>": [paths], "file": [File]}.

        The fork attributes are read whatever the selection, for the source facts; rows only when selected.
        """
        pattern = compile_regex(self.selection.regex, "--attributes")
        types = self.selected_types()
        found: dict[str, list] = {}
        frame = self.attribute_table()
        if frame.empty:
            return found
        for position, column in enumerate(frame.columns):
            path, _, type_name = column.rpartition(":")
            value = frame.iat[0, position]
            self.note_fork_fact(path, value)
            if type_name not in types or not matches_path(path, self.selection, pattern):
                continue
            if type_name in PARAMETER_TYPES:
                found.setdefault("parameters", []).append((path, type_name, value))
            elif type_name == "file":
                if present(value):
                    found.setdefault("file", []).append(value)
            else:
                found.setdefault(type_name, []).append(path)
        return found

    def attribute_table(self) -> pd.DataFrame:
        """The run's row of selected types plus the fork attributes, columns `path:type` (names batched per request)."""
        from neptune_query import runs as nq_runs
        from neptune_query.filters import Attribute, AttributeFilter

        types = self.selected_types()
        names = list(self.selection.names) if self.selection.names and not self.selection.regex else None
        wanted: BaseAttributeFilter = AttributeFilter(name=list(FORK_ATTRIBUTES))
        if types:
            wanted = AttributeFilter(name=names, type=types) | wanted
        with self.errors():
            return nq_runs.fetch_runs_table(
                project=self.project,
                runs=self.runs_argument(),
                # neptune-query takes any BaseAttributeFilter (an `a | b` alternative too) but annotates AttributeFilter
                attributes=wanted,  # type: ignore[arg-type]
                sort_by=Attribute("sys/creation_time", type="datetime"),
                type_suffix_in_column_names=True,
            )

    # ---------------------------------------------------------------- parameters

    def parameter_batches(self, items: list[tuple[str, str, Any]]) -> Iterator[pa.RecordBatch]:
        for chunk in chunked(sorted(items, key=lambda item: item[0]), self.settings.attributes_per_request):
            rows = []
            for path, type_name, raw in chunk:
                if not present(raw) and type_name != "float":
                    continue
                rows.append((path, type_name, parameter_value(type_name, raw)))
            if rows:
                yield self.report(parameter_rows(self.project, self.run.run_id, rows))

    def note_fork_fact(self, path: str, value: Any) -> None:
        """`fork_parent` (the parent's run id) and `fork_step` for the manifest, from the fork attributes."""
        if path in FORK_PARENT_ATTRIBUTES and present(value):
            self.facts["fork_parent"] = str(value)
        elif path in FORK_STEP_ATTRIBUTES and present(value):
            self.facts["fork_step"] = float(value)

    # ---------------------------------------------------------------- series

    def fetch_points(self, metrics: bool, names: list[str], step_range: tuple, limit: int) -> dict[str, SeriesChunk]:
        """The last `limit` points (per series) within the step range, as arrays: float series (`metrics`) straight
        from neptune-query's request, string and histogram series through `fetch_series`' frame."""
        from neptune_query import runs as nq_runs

        with self.errors(attribute=names[0] if len(names) == 1 else None):
            if metrics:
                previews = self.selection.include_previews
                points = fetch_float_points(self.project, self.run.sys_id, names, step_range, limit, previews)
                return float_series_chunks(points)
            frame = nq_runs.fetch_series(
                project=self.project,
                runs=self.runs_argument(),
                attributes=list(names),
                include_time="absolute",
                step_range=step_range,
                lineage_to_the_root=False,
                tail_limit=limit,
            )
        return split_series_frame(frame)

    def fetch_isolated(self, metrics: bool, names: list[str], step_range: tuple, limit: int) -> dict[str, SeriesChunk]:
        """`fetch_points`, where a terminal error fails only the series it belongs to (a shared request is asked
        again name by name to find it): recorded for that attribute, the run's others are exported. A transient
        error, a full disk or a refused token propagates (the one retry policy retries the run)."""
        try:
            return self.fetch_points(metrics, names, step_range, limit)
        except TerminalError as error:
            if not attribute_failure(error):
                raise
            if len(names) == 1:
                self.attribute_errors.append(error)  # names its attribute (`errors(attribute=...)`)
                return {}
        found: dict[str, SeriesChunk] = {}
        for name in names:
            found.update(self.fetch_isolated(metrics, [name], step_range, limit))
        return found

    def series_windows(self, metrics: bool, names: list[str]) -> Iterator[SeriesChunk]:
        """Every point after the watermarks, in requests of ≤ series_batch_rows points (windows from the end).

        neptune-query only limits from the tail, so series are read backwards in rounds: a window holds the
        last points below the previous window. Series whose previous windows start at the same step (logged
        together) share every request; each chunk is in ascending step order.
        """
        by_bound: dict[float | None, list[str]] = {}
        for name in names:
            by_bound.setdefault(self.lower_bound(name), []).append(name)
        rows = max(1, self.settings.series_batch_rows)
        for low, group_names in by_bound.items():
            pending: dict[str, float | None] = dict.fromkeys(sorted(group_names))
            while pending:
                pending = yield from self.window_round(metrics, low, pending, rows)

    def window_round(
        self, metrics: bool, low: float | None, pending: dict[str, float | None], rows: int
    ) -> Generator[SeriesChunk, None, dict[str, float | None]]:
        """One window per pending series (name → first step already read, exclusive; None: none read yet).

        Returns the series that may have earlier points, with their new exclusive bound.
        """
        by_high: dict[float | None, list[str]] = {}
        for name, high in pending.items():
            by_high.setdefault(high, []).append(name)
        more: dict[str, float | None] = {}
        for high, shared in by_high.items():
            top = None if high is None else float(np.nextafter(high, -np.inf))
            if top is not None and low is not None and top < low:
                continue
            for group in chunked(shared, SERIES_PER_REQUEST):
                limit = max(1, rows // len(group))
                # One point more than the window: when it comes, the series goes on below (that point is left for
                # the next window); when not, the series is done, with no last request that would find nothing.
                chunks = self.fetch_isolated(metrics, group, (low, top), limit + 1)
                for name in group:
                    chunk = chunks.get(name)
                    if chunk is None:
                        continue
                    if len(chunk) > limit:
                        chunk = chunk.tail(limit)
                        more[name] = float(chunk.steps[0])
                    yield chunk
        return more

    def series_batches(self, types: dict[str, str]) -> Iterator[pa.RecordBatch]:
        """Rows of the series named in `types` (path → type; float series, or string and histogram ones, together)."""
        metrics = any(t == "float_series" for t in types.values())
        failed: set[str] = set()
        for chunk in self.series_windows(metrics, list(types)):
            type_name = types[chunk.path]
            if chunk.path in failed:
                continue
            try:
                batch = series_rows(
                    self.project,
                    self.run.run_id,
                    chunk.path,
                    type_name,
                    chunk.steps,
                    series_values(type_name, chunk.values),
                    chunk.timestamps_ms,
                )
            except StepOutOfRangeError as error:  # this series only: the run's others are exported
                failed.add(chunk.path)
                self.attribute_errors.append(error)
                continue
            yield self.report(batch)

    # ---------------------------------------------------------------- files

    def file_batches(self, files: list) -> Iterator[pa.RecordBatch]:
        for chunk in chunked(sorted(files, key=lambda f: f.attribute_path), FILES_PER_DOWNLOAD):
            stored = self.downloads.download(chunk)
            rows = [(f.attribute_path, "file", stored[(f.attribute_path, None)].relative_path) for f in chunk]
            yield self.report(parameter_rows(self.project, self.run.run_id, rows), sum(s.size for s in stored.values()))

    def file_series_batches(self, names: list[str]) -> Iterator[pa.RecordBatch]:
        for chunk in self.series_windows(False, names):
            for start in range(0, len(chunk), FILES_PER_DOWNLOAD):
                part = slice(start, start + FILES_PER_DOWNLOAD)
                files = list(chunk.values[part])
                stored = self.downloads.download(files)
                steps = chunk.steps[part]
                paths = [stored[(chunk.path, float(step))].relative_path for step in steps]
                batch = series_rows(
                    self.project, self.run.run_id, chunk.path, "file_series", steps, paths, chunk.timestamps_ms[part]
                )
                yield self.report(batch, sum(s.size for s in stored.values()))

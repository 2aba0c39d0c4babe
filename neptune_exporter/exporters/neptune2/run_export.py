"""One Neptune 2.x run streamed: atoms, series pages fetched ahead, files, on bounded workers through a bounded queue."""

from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import chain, compress
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from neptune_exporter.errors import TerminalError
from neptune_exporter.exporters.base import ProgressCallback, RunContent, attribute_failure, chunked
from neptune_exporter.exporters.neptune2.attributes import (
    ATOM_TYPES,
    SourceAttribute,
    atom_value,
    run_attributes,
    select_attributes,
)
from neptune_exporter.exporters.neptune2.client import typed_error
from neptune_exporter.exporters.neptune2.pages import (
    PageReader,
    SeriesPage,
    client_pages,
    exact_page,
    float_pages,
    joined,
)
from neptune_exporter.model import AttributeType, RunRef, project_files_dir, sanitize_name
from neptune_exporter.rows import parameter_rows, series_rows
from neptune_exporter.selection import AttributeSelection
from neptune_exporter.settings import Settings
from neptune_exporter.storage.files import publish, safe_relative, staging_dir, unpack_zip
from neptune_exporter.storage.manifest import Watermark

log = logging.getLogger(__name__)
SERIES_PAGE_POINTS = 1000  # points per series request: what the client itself asks for
PREFETCH_PAGES = 4  # series pages requested ahead, per series being read


class RunReader(Protocol):
    """What a run's export needs of its source (Neptune2Source)."""

    @property
    def settings(self) -> Settings: ...

    def open_run(self, run: RunRef) -> Any: ...

    def atom_values(self, run: RunRef, paths: list[str]) -> dict[str, Any]: ...


_DONE = object()


class RunExport:
    """Streams one run: atoms first, then series and files from bounded workers through a bounded queue."""

    def __init__(
        self,
        source: RunReader,
        run: RunRef,
        selection: AttributeSelection,
        files_root: Path,
        watermarks: dict[str, Watermark],
        progress: ProgressCallback | None,
        content: RunContent,
    ):
        self.source, self.run, self.selection = source, run, selection
        self.files_root, self.watermarks, self.content = files_root, watermarks, content
        self.progress = progress or (lambda points, size: None)
        self.settings = source.settings
        self.project_files = project_files_dir(files_root, run.project_id)  # file_value.path is relative to it
        self.run_dir = Path(run.scope or "", sanitize_name(run.run_id))  # under project_files (the peer's places)
        self.stop = threading.Event()
        # series pages fetched ahead (threads start on first use; shut down when the run's batches end)
        self.page_pool = ThreadPoolExecutor(
            max_workers=max(1, self.settings.workers), thread_name_prefix="neptune2-page"
        )
        self.files_lock = threading.Lock()

    def batches(self) -> Iterator[pa.RecordBatch]:
        handle = self.source.open_run(self.run)
        try:
            try:
                found = run_attributes(handle)
            except Exception as exc:  # noqa: BLE001 - mapped to a typed error
                raise typed_error(exc, run=self.run.run_id) from exc
            chosen = select_attributes(found, self.selection)
            atoms = [a for a in chosen if a.neptune_type in ATOM_TYPES]
            jobs: list[tuple[str | None, Callable[[], Iterator[pa.RecordBatch]]]] = [
                (None, partial(self._atom_batches, chunk))
                for chunk in chunked(atoms, self.settings.attributes_per_request)
            ]
            jobs += [(a.path, partial(self._attribute_batches, a)) for a in chosen if a.neptune_type not in ATOM_TYPES]
            yield from self._concurrent(jobs)
        finally:
            self.stop.set()
            self.page_pool.shutdown(wait=True, cancel_futures=True)
            handle.stop()

    def _atom_batches(self, atoms: list[SourceAttribute]) -> Iterator[pa.RecordBatch]:
        """One batch of atom values (one table read of ≤ attributes_per_request attributes)."""
        values = self.source.atom_values(self.run, [a.path for a in atoms])
        items = []
        for atom in atoms:
            value = values.get(atom.path)
            if value is None:
                value = self._atom_alone(atom)
            if value is not None:
                items.append((atom.path, atom.attribute_type, atom_value(atom.attribute_type, value)))
        yield parameter_rows(self.run.project_id, self.run.run_id, items)

    def _atom_alone(self, atom: SourceAttribute) -> Any:
        """An atom the runs table returned no value for, read by itself; when that fails too, or returns no value
        either, an error entry for the attribute (never left out silently). None when there is no value."""
        try:
            value = atom.handle.fetch()
        except Exception as exc:  # noqa: BLE001 - mapped to a typed error: this attribute's, or the run's
            error = typed_error(exc, run=self.run.run_id, attribute=atom.path)
            if not attribute_failure(error):
                raise error from exc
            self._attribute_error(error)
            return None
        if value is None:
            self._attribute_error(
                TerminalError(
                    f"Neptune returned no value for the {atom.neptune_type} attribute {atom.path}, neither in the "
                    "runs table nor read by itself",
                    "check the attribute in the Neptune app; leave it out (--attributes) to have the run complete",
                    run=self.run.run_id,
                    attribute=atom.path,
                )
            )
        return value

    def _attribute_error(self, error: TerminalError) -> None:
        with self.files_lock:
            self.content.attribute_errors.append(error)

    def _concurrent(
        self, jobs: list[tuple[str | None, Callable[[], Iterator[pa.RecordBatch]]]]
    ) -> Iterator[pa.RecordBatch]:
        """Run the jobs (atom chunks, one per other attribute) on ≤ settings.workers threads; yield batches as they come."""
        if not jobs:
            return
        workers = max(1, self.settings.workers)
        results: queue.Queue = queue.Queue(maxsize=2 * workers)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="neptune2-attr")
        try:
            for attribute_path, job in jobs:
                pool.submit(self._work, attribute_path, job, results)
            pending = len(jobs)
            while pending:
                item = results.get()
                if item is _DONE:
                    pending -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    self.progress(item.num_rows, item.nbytes)
                    yield item
        finally:
            self.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def _work(
        self, attribute_path: str | None, job: Callable[[], Iterator[pa.RecordBatch]], results: queue.Queue
    ) -> None:
        if self.stop.is_set():
            return
        try:
            for batch in job():
                if not self._put(results, batch):
                    return
        except Exception as exc:  # noqa: BLE001 - recorded for its attribute, or handed to the consumer to raise
            error = typed_error(exc, run=self.run.run_id, attribute=attribute_path)
            if attribute_path is not None and attribute_failure(error):
                self._attribute_error(error)
            else:
                self._put(results, error)
        except BaseException as exc:  # noqa: BLE001 - an interrupt: handed to the consumer thread, which raises it
            self._put(results, typed_error(exc, run=self.run.run_id, attribute=attribute_path))
        finally:
            self._put(results, _DONE)

    def _put(self, results: queue.Queue, item: Any) -> bool:
        """Put unless the consumer stopped; False when it did."""
        while not self.stop.is_set():
            try:
                results.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _attribute_batches(self, attribute: SourceAttribute) -> Iterator[pa.RecordBatch]:
        kind = attribute.attribute_type
        if kind in (AttributeType.FLOAT_SERIES, AttributeType.STRING_SERIES):
            yield from self._series(attribute)
        elif kind is AttributeType.FILE:
            yield self._file(attribute)
        elif kind is AttributeType.FILE_SERIES:
            yield from self._file_series(attribute)
        elif kind is AttributeType.FILE_SET:
            yield self._file_set(attribute)
        elif kind is AttributeType.ARTIFACT:
            yield self._artifact(attribute)

    # ---- series

    def _series(self, attribute: SourceAttribute) -> Iterator[pa.RecordBatch]:
        last_step = self._last_step(attribute)
        buffered: list[SeriesPage] = []
        count = 0
        for page in self._series_pages(attribute, last_step):
            buffered.append(page)
            count += len(page)
            if count >= self.settings.series_batch_rows:
                yield self._series_batch(attribute, buffered)
                buffered, count = [], 0
        if buffered:
            yield self._series_batch(attribute, buffered)

    def _last_step(self, attribute: SourceAttribute) -> float | None:
        mark = self.watermarks.get(attribute.path)
        return None if mark is None else mark.last_step

    def _series_pages(self, attribute: SourceAttribute, last_step: float | None) -> Iterator[SeriesPage]:
        """Pages of points with step > last_step, the next pages fetched ahead in parallel (order kept); float
        series without the client's point objects (`pages.float_pages`).

        Resumes at the watermark's offset when the series is append-only."""
        read = (
            float_pages(attribute.handle)
            if attribute.attribute_type is AttributeType.FLOAT_SERIES
            else client_pages(attribute.handle)
        )
        offset = self._resume_offset(read, attribute, last_step)
        first = read(offset, SERIES_PAGE_POINTS)
        for page in chain([first], self._prefetched(read, offset + len(first), first.total)):
            if self.stop.is_set():
                return
            if last_step is not None:
                keep = page.steps > last_step
                values = page.values[keep] if isinstance(page.values, np.ndarray) else list(compress(page.values, keep))
                page = SeriesPage(page.total, page.steps[keep], values, page.timestamps[keep])
            if len(page):
                yield page

    def _prefetched(self, read: PageReader, start: int, total: int) -> Iterator[SeriesPage]:
        """The pages from `start` to `total`, PREFETCH_PAGES requests in flight at most."""
        window: deque = deque()
        for offset in range(start, total, SERIES_PAGE_POINTS):
            count = min(SERIES_PAGE_POINTS, total - offset)
            window.append(self.page_pool.submit(exact_page, read, offset, count))
            if len(window) >= PREFETCH_PAGES:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    def _resume_offset(self, read: PageReader, attribute: SourceAttribute, last_step: float | None) -> int:
        """Offset of the first new point when the point at (count - 1) carries the watermark's step, else 0."""
        mark = self.watermarks.get(attribute.path)
        if last_step is None or mark is None or mark.count <= 0:
            return 0
        probe = read(mark.count - 1, 1)
        return mark.count if len(probe) and probe.steps[0] == last_step else 0

    def _series_batch(self, attribute: SourceAttribute, buffered: list[SeriesPage]) -> pa.RecordBatch:
        page = joined(buffered)
        values: Any = page.values
        if attribute.attribute_type is AttributeType.FLOAT_SERIES:
            values = pa.array(np.asarray(values, dtype=np.float64), pa.float64())
        return series_rows(
            self.run.project_id,
            self.run.run_id,
            attribute.path,
            attribute.attribute_type,
            page.steps,
            values,
            page.timestamps,
        )

    # ---- files

    def _attribute_dir(self, attribute: SourceAttribute) -> Path:
        return self.run_dir / safe_relative(attribute.path)

    def _staging(self):
        return staging_dir(self.project_files / self.run_dir)

    def _publish(self, attribute: SourceAttribute, staged: Path, relative: Path, step: float | None = None) -> str:
        """Move a downloaded file into place (atomic rename), record it, return its relative path."""
        exported = publish(
            staged, self.project_files / relative, self.files_root, self.run.project_id, attribute.path, step
        )
        with self.files_lock:
            self.content.files.append(exported)
        self.progress(0, exported.size)
        return exported.relative_path

    def _file(self, attribute: SourceAttribute) -> pa.RecordBatch:
        with self._staging() as staging:
            attribute.handle.download(destination=str(staging), progress_bar=False)
            downloaded = _only_file(staging, attribute.path)
            rel = self._publish(attribute, downloaded, self._attribute_dir(attribute) / downloaded.name)
        return parameter_rows(self.run.project_id, self.run.run_id, [(attribute.path, AttributeType.FILE, rel)])

    def _file_series(self, attribute: SourceAttribute) -> Iterator[pa.RecordBatch]:
        last_step = self._last_step(attribute)
        with self._staging() as staging:
            attribute.handle.download(destination=str(staging), progress_bar=False)
            images = sorted((p for p in staging.iterdir() if p.is_file()), key=lambda p: int(p.stem))
            steps, paths = [], []
            for image in images:
                step = float(int(image.stem))
                if last_step is not None and step <= last_step:
                    continue
                paths.append(self._publish(attribute, image, self._attribute_dir(attribute) / image.name, step))
                steps.append(step)
        if steps:
            yield series_rows(
                self.run.project_id, self.run.run_id, attribute.path, AttributeType.FILE_SERIES, steps, paths, None
            )

    def _file_set(self, attribute: SourceAttribute) -> pa.RecordBatch:
        with self._staging() as staging:
            archive = staging / "file_set.zip"
            attribute.handle.download(destination=str(archive), progress_bar=False)
            unpacked = staging / "files"
            members = unpack_zip(archive, unpacked)
            target_dir = self._attribute_dir(attribute)
            paths = [self._publish(attribute, m, target_dir / m.relative_to(unpacked.resolve())) for m in members]
        items = [(attribute.path, AttributeType.FILE_SET, p) for p in paths]
        return parameter_rows(self.run.project_id, self.run.run_id, items)

    def _artifact(self, attribute: SourceAttribute) -> pa.RecordBatch:
        """The artifact's file list (hash, size, type, metadata) as files_list.json, plus reachable contents."""
        listing = attribute.handle.fetch_files_list()
        target_dir = self._attribute_dir(attribute)
        with self._staging() as staging:
            list_file = staging / "files_list.json"
            entries = [entry.to_dto() for entry in listing]
            payload = {"hash": attribute.handle.fetch_hash(), "files": entries}
            list_file.write_text(json.dumps(payload, indent=1, sort_keys=True))
            rel = self._publish(attribute, list_file, target_dir / "files_list.json")
            for entry in listing:
                self._artifact_content(attribute, entry, staging, target_dir)
        return parameter_rows(self.run.project_id, self.run.run_id, [(attribute.path, AttributeType.ARTIFACT, rel)])

    def _artifact_content(self, attribute: SourceAttribute, entry: Any, staging: Path, target_dir: Path) -> None:
        """Copy one artifact file when its storage is reachable from here (local paths, configured S3)."""
        from neptune.internal.artifacts.types import ArtifactDriversMap

        staged = staging / "content" / safe_relative(entry.file_path)
        staged.parent.mkdir(parents=True, exist_ok=True)
        try:
            ArtifactDriversMap.match_type(entry.type).download_file(staged, entry)
        except Exception as exc:  # noqa: BLE001 - content is best effort; the file list is the record
            log.warning(
                "artifact %s file %s not reachable (%s); its hash and size are in files_list.json",
                attribute.path,
                entry.file_path,
                exc,
            )
            return
        if staged.is_symlink():  # the Local driver links to the original: export a copy of its bytes
            original = staged.resolve()
            staged.unlink()
            shutil.copyfile(original, staged)
        if staged.is_file():
            self._publish(attribute, staged, target_dir / "content" / safe_relative(entry.file_path))


def _only_file(folder: Path, attribute_path: str) -> Path:
    files = [p for p in folder.iterdir() if p.is_file()]
    if len(files) != 1:
        raise TerminalError(
            f"downloading file attribute {attribute_path} produced {len(files)} files",
            "re-run the export; report it if it persists",
        )
    return files[0]

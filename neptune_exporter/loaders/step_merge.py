"""External merge of series points by step: spill step-sorted chunks to Arrow files, read them back k-way in order."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

STEP_COLUMN = "step"


def _sorted_by_step(table: pa.Table) -> pa.Table:
    return table.take(pa.compute.sort_indices(table, sort_keys=[(STEP_COLUMN, "ascending")]))


class _Cursor:
    """Reads one step-sorted spill file block by block; `window` holds loaded rows not yet emitted."""

    def __init__(self, path: Path):
        self._source = pa.OSFile(str(path), "rb")  # plain reads: a memory map would keep every page read in RSS
        self._reader = ipc.open_file(self._source)
        self._next = 0
        self.window: pa.Table = self._reader.schema.empty_table()

    @property
    def exhausted(self) -> bool:
        return self._next >= self._reader.num_record_batches

    def load_next(self, min_rows: int = 1) -> None:
        """Append file batches to the window until at least `min_rows` more rows (or the file ends)."""
        loaded = [self.window] if len(self.window) else []
        added = 0
        while added < min_rows and not self.exhausted:
            batch = self._reader.get_batch(self._next)
            self._next += 1
            loaded.append(pa.Table.from_batches([batch]))
            added += batch.num_rows
        if loaded:
            self.window = pa.concat_tables(loaded).combine_chunks() if len(loaded) > 1 else loaded[0]

    def steps(self) -> np.ndarray:
        return self.window.column(STEP_COLUMN).to_numpy()

    def safe_bound(self) -> int | None:
        """Largest step whose rows are all in the window (None: unbounded, the file is fully loaded)."""
        return None if self.exhausted else int(self.steps()[-1]) - 1

    def take_through(self, bound: int | None) -> pa.Table:
        """Remove and return the window rows with step <= bound."""
        count = len(self.window) if bound is None else int(np.searchsorted(self.steps(), bound, side="right"))
        taken, self.window = self.window.slice(0, count), self.window.slice(count)
        return taken

    def close(self) -> None:
        self._source.close()


class StepSpill:
    """Collects rows with an int64 `step` column in bounded memory, then yields them in step order.

    Rows are buffered up to `chunk_rows`/`chunk_bytes`, sorted and spilled to an Arrow file (in batches of
    `block_rows`); `merged()` reads the files back together, `merge_rows` rows shared among them, and yields
    tables in increasing step order in which all rows of one step are in the same table. Memory stays near
    one chunk while reading and near `merge_rows` (plus one file batch per spill file) while merging.
    """

    def __init__(
        self,
        schema: pa.Schema,
        directory: Path | str | None = None,
        *,
        chunk_rows: int = 1_000_000,
        chunk_bytes: int = 128 * 1024 * 1024,
        block_rows: int = 4_096,
        merge_rows: int = 500_000,
    ):
        self.schema = schema
        self._tmp = tempfile.TemporaryDirectory(prefix="step-spill-", dir=directory)
        self._chunk_rows, self._chunk_bytes, self._block_rows = chunk_rows, chunk_bytes, block_rows
        self._merge_rows = merge_rows
        self._buffer: list[pa.Table] = []
        self._buffered_rows = self._buffered_bytes = 0
        self._files: list[Path] = []
        self.rows = 0

    def __enter__(self) -> StepSpill:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add(self, table: pa.Table | pa.RecordBatch) -> None:
        """Buffer rows (any step order); spills a sorted chunk when the buffer is full."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if not len(table):
            return
        self._buffer.append(table.select(self.schema.names).cast(self.schema))
        self._buffered_rows += len(table)
        self._buffered_bytes += table.nbytes
        self.rows += len(table)
        if self._buffered_rows >= self._chunk_rows or self._buffered_bytes >= self._chunk_bytes:
            self._spill()

    def _take_buffer(self) -> pa.Table:
        table = pa.concat_tables(self._buffer) if self._buffer else self.schema.empty_table()
        self._buffer, self._buffered_rows, self._buffered_bytes = [], 0, 0
        return _sorted_by_step(table)

    def _spill(self) -> None:
        table = self._take_buffer()
        path = Path(self._tmp.name) / f"chunk-{len(self._files):06d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, self.schema) as writer:
            for batch in table.to_batches(max_chunksize=self._block_rows):
                writer.write_batch(batch)
        self._files.append(path)

    def merged(self) -> Iterator[pa.Table]:
        """Step-ordered tables; a step never spans two tables."""
        if not self._files:
            yield from self._split_by_step(self._take_buffer())
            return
        if self._buffered_rows:
            self._spill()
        cursors = [_Cursor(path) for path in self._files]
        try:
            yield from self._merge(cursors)
        finally:
            for cursor in cursors:
                cursor.close()

    def _split_by_step(self, table: pa.Table) -> Iterator[pa.Table]:
        """Slices of about block_rows rows, cut only between steps."""
        steps = table.column(STEP_COLUMN).to_numpy()
        start = 0
        while start < len(table):
            end = min(start + self._block_rows, len(table))
            end = int(np.searchsorted(steps, steps[end - 1], side="right"))
            yield table.slice(start, end - start)
            start = end

    def _merge(self, cursors: list[_Cursor]) -> Iterator[pa.Table]:
        live = list(cursors)
        per_cursor = max(1, self._merge_rows // len(cursors))
        while live:
            for cursor in live:
                if not len(cursor.window) and not cursor.exhausted:
                    cursor.load_next(per_cursor)
            live = [c for c in live if len(c.window) or not c.exhausted]
            if not live:
                return
            bounds = [c.safe_bound() for c in live]
            finite = [b for b in bounds if b is not None]
            bound = min(finite) if finite else None
            pieces = [c.take_through(bound) for c in live]
            pieces = [p for p in pieces if len(p)]
            if pieces:
                yield _sorted_by_step(pa.concat_tables(pieces))
            else:  # the lowest windows hold a single step only: read further into them
                for cursor, cursor_bound in zip(live, bounds, strict=True):
                    if cursor_bound == bound:
                        cursor.load_next(per_cursor)

    def close(self) -> None:
        """Remove the spill files."""
        self._buffer = []
        self._tmp.cleanup()

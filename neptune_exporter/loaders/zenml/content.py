"""An exported run written for ZenML in one pass: single values as metadata, and into the run's folder of the
artifact store one folder per artifact: series as Parquet (exact steps), files as exported, long values whole."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from neptune_exporter.errors import CorruptPartError
from neptune_exporter.loaders.base import SINGLE_VALUE_TYPES, ExportedRun, format_step, rows_with_points, single_values
from neptune_exporter.loaders.zenml.names import ZenmlKeyMap, artifact_name, key_map
from neptune_exporter.model import AttributeType, decimal_array_to_unscaled, iso_utc_ms
from neptune_exporter.rows import value_column

METADATA_VALUE_LIMIT = 65_535  # ZenML skips (with a warning) a metadata value whose JSON is longer
ENTRY_LIMIT = METADATA_VALUE_LIMIT  # JSON characters of one dict logged under a key (ZenML merges a key's dicts)
ARTIFACT_MAP = "neptune.artifacts"  # metadata: artifact name → its facts (attribute, type, count)
LONG_VALUE_PREFIX = 1_000  # characters of a long value kept in its metadata entry, before the pointer
SERIES_KINDS = {
    t.value: t for t in (AttributeType.FLOAT_SERIES, AttributeType.STRING_SERIES, AttributeType.HISTOGRAM_SERIES)
}
FILE_KINDS = {
    t.value for t in (AttributeType.FILE, AttributeType.FILE_SET, AttributeType.ARTIFACT, AttributeType.FILE_SERIES)
}
SINGLE_VALUE_KINDS = set(SINGLE_VALUE_TYPES.to_pylist())


@dataclass
class ArtifactFolder:
    """One attribute's artifact: its folder in the artifact store and what it holds (points, files or characters)."""

    attribute: str
    attribute_type: str
    folder: Path
    name: str
    count: int = 0
    parts: int = 0

    def facts(self) -> dict[str, Any]:
        """What validation reads back of it: the Neptune attribute, its type, and its points, files or characters."""
        return {"attribute": self.attribute, "type": self.attribute_type, "count": self.count}


def metadata_value(attribute_type: str, value: Any) -> Any:
    """A single value as ZenML metadata: native JSON; datetimes ISO 8601 UTC (ms), string sets sorted lists."""
    if attribute_type == AttributeType.DATETIME.value:
        return iso_utc_ms(value)
    if attribute_type == AttributeType.STRING_SET.value:
        return sorted(value)
    if attribute_type == AttributeType.FLOAT.value:
        return float(value)
    return value


def long_value_pointer(text: str, artifact: str) -> str:
    """The metadata entry of a value too long for ZenML metadata: its start and where the whole value is."""
    return f"{text[:LONG_VALUE_PREFIX]} …[truncated: {len(text)} chars, whole value in artifact {artifact}]"


def split_entries(items: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """`items` as dicts whose JSON is at most ENTRY_LIMIT characters each (one item alone may be longer: the caller
    keeps single values within the limit)."""
    entries: list[dict[str, Any]] = [{}]
    size = 2  # `{}`
    for key, value in items:
        item = len(json.dumps({key: value})) - 2  # `"key": value`; a dict's JSON is {item, item, ...}
        if entries[-1] and size + 2 + item > ENTRY_LIMIT:
            entries.append({})
            size = 2
        size += item + (2 if entries[-1] else 0)
        entries[-1][key] = value
    return entries


@dataclass
class RunContent:
    """What one run puts into ZenML: metadata values and artifact folders, written under `folder`."""

    export: ExportedRun
    folder: Path
    model: str
    keys: ZenmlKeyMap = field(default_factory=key_map)
    values: dict[str, Any] = field(default_factory=dict)  # attribute path → metadata value (long ones: a pointer)
    artifacts: dict[str, ArtifactFolder] = field(default_factory=dict)
    points: int = 0
    files: int = 0
    _writers: dict[str, pq.ParquetWriter] = field(default_factory=dict, repr=False)  # attribute → its open part

    def read(self) -> RunContent:
        """One pass over the run's parts (bounded memory: series are written batch by batch, each attribute's
        Parquet file left open only while consecutive batches hold its points)."""
        try:
            for batch in self.export.batches():
                batch = rows_with_points(batch)  # a series row with no value holds no point
                types = batch.column("attribute_type")
                present = pc.unique(types).to_pylist()
                written: set[str] = set()
                for kind in present:
                    rows = batch if len(present) == 1 else batch.filter(pc.equal(types, kind))
                    if kind in SERIES_KINDS:
                        written |= self._series(rows, SERIES_KINDS[kind])
                    elif kind in FILE_KINDS:
                        self._files(rows)
                    elif kind in SINGLE_VALUE_KINDS:
                        self._values(rows)
                self._close_writers(keep=written)
        finally:
            self._close_writers(keep=set())
        return self

    def _artifact(self, attribute: str, attribute_type: str) -> ArtifactFolder:
        if attribute not in self.artifacts:
            folder = self.folder / f"a{len(self.artifacts)}"
            folder.mkdir(parents=True)
            name = artifact_name(self.model, attribute)
            self.artifacts[attribute] = ArtifactFolder(attribute, attribute_type, folder, name)
        return self.artifacts[attribute]

    # ---------------------------------------------------------------- single values
    def _values(self, rows: pa.RecordBatch) -> None:
        for path, attribute_type, value in single_values(rows):
            self._value(path, attribute_type, metadata_value(attribute_type, value))

    def _value(self, path: str, attribute_type: str, value: Any) -> None:
        if len(json.dumps({path: value})) <= METADATA_VALUE_LIMIT:
            self.values[path] = value
            return
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        artifact = self._artifact(path, attribute_type)
        (artifact.folder / ("value.txt" if isinstance(value, str) else "value.json")).write_bytes(text.encode())
        artifact.count = len(text)
        self.values[path] = long_value_pointer(text, artifact.name)

    def metadata_calls(self) -> list[dict[str, Any]]:
        """The values as `log_metadata` calls: one metadata entry per namespace (`params/lr` → `params`:
        {`lr`: ...}), split into dicts of at most 65,535 JSON characters (ZenML merges the dicts of one key when
        read back); a name with no namespace under it is an entry of its own (else `""` in its namespace). The
        artifacts' facts (attribute, type, count) go the same way under `neptune.artifacts`, by artifact name: one
        entry per run, not one per artifact (each entry costs ZenML two commits)."""
        namespaces = {path.partition("/")[0] for path in self.values if "/" in path}
        chunks: dict[str, list[Any]] = {}
        grouped: dict[str, list[tuple[str, Any]]] = {}
        for path, value in sorted(self.values.items()):
            head, _, rest = path.partition("/")
            if head in namespaces:
                grouped.setdefault(self.keys(head), []).append((rest, value))
            else:
                chunks[self.keys(head)] = [value]
        grouped[ARTIFACT_MAP] = [(a.name, a.facts()) for a in self.artifacts.values()]
        chunks.update({key: split_entries(items) for key, items in grouped.items() if items})
        depth = max((len(entries) for entries in chunks.values()), default=0)
        return [{k: entries[i] for k, entries in chunks.items() if i < len(entries)} for i in range(depth)]

    # ---------------------------------------------------------------- series
    def _series(self, rows: pa.RecordBatch, series_type: AttributeType) -> set[str]:
        """Each attribute's points of this batch appended to its Parquet file; the attributes written."""
        if rows.column("step").null_count:
            raise CorruptPartError(
                f"run {self.export.run_id!r}: a series row of {rows.column('attribute_path')[0]} has no step",
                "re-export the run; the part file is not a valid export",
                run=self.export.run_id,
            )
        runs = pc.run_end_encode(rows.column("attribute_path"))
        paths = runs.values.to_pylist()
        if len(set(paths)) < len(paths):  # an attribute's points are not contiguous: group them (stable sort)
            rows = rows.take(pc.sort_indices(rows.column("attribute_path")))
            runs = pc.run_end_encode(rows.column("attribute_path"))
            paths = runs.values.to_pylist()
        start = 0
        for path, end in zip(paths, runs.run_ends.to_pylist(), strict=True):
            self._series_part(path, series_type, rows.slice(start, end - start))
            start = end
        return set(paths)

    def _series_part(self, path: str, series_type: AttributeType, rows: pa.RecordBatch) -> None:
        artifact = self._artifact(path, series_type.value)
        table = pa.table(
            {
                "step": rows.column("step"),
                "timestamp": rows.column("timestamp"),
                "value": rows.column(value_column(series_type)),
            }
        )
        writer = self._writers.get(path)
        if writer is None:
            where = artifact.folder / f"part-{artifact.parts:05d}.parquet"
            writer = self._writers[path] = pq.ParquetWriter(where, table.schema, use_dictionary=False)
            artifact.parts += 1
        writer.write_table(table)
        artifact.count += rows.num_rows
        self.points += rows.num_rows

    def _close_writers(self, keep: set[str]) -> None:
        """Close the Parquet files of attributes with no points in the last batch (a later batch opens a new part)."""
        for path in [p for p in self._writers if p not in keep]:
            self._writers.pop(path).close()

    # ---------------------------------------------------------------- files
    def _files(self, rows: pa.RecordBatch) -> None:
        if not rows.num_rows:
            return
        steps = decimal_array_to_unscaled(rows.column("step")).tolist()  # a single file has none: 0, unused
        for path, attribute_type, value, step in zip(
            rows.column("attribute_path").to_pylist(),
            rows.column("attribute_type").to_pylist(),
            rows.column("file_value").to_pylist(),
            steps,
            strict=True,
        ):
            local = self.export.local_file(path, value)
            if local is None:  # a row naming no file (the peer tool writes them) holds nothing to load
                continue
            artifact = self._artifact(path, attribute_type)
            where = artifact.folder
            if attribute_type == AttributeType.FILE_SERIES.value:
                where = where / f"step_{format_step(step)}"
            copy_into(local, where)
            artifact.count += 1
            self.files += 1


def copy_into(local: Path, folder: Path) -> None:
    """`local` (a file or a folder tree) copied byte for byte to `folder/<its name>`."""
    folder.mkdir(parents=True, exist_ok=True)
    if local.is_dir():
        shutil.copytree(local, folder / local.name, dirs_exist_ok=True)
    else:
        shutil.copyfile(local, folder / local.name)

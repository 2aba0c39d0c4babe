"""One pass over a run's export for W&B: parameters → config, files → artifact lists, series → a step spill."""

from __future__ import annotations

import math
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_exporter.errors import CorruptPartError, NeptuneExporterError
from neptune_exporter.loaders.base import WANDB, ExportedRun, KeyMap, format_step, integer_steps, rows_with_points
from neptune_exporter.loaders.step_merge import StepSpill
from neptune_exporter.loaders.wandb.names import WandbKeyMap
from neptune_exporter.model import AttributeType, as_utc, decimal_array_to_unscaled
from neptune_exporter.rows import value_column

MAX_TAG_LENGTH = 64
NON_FINITE_CONFIG = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
HISTORY_TYPES = (AttributeType.FLOAT_SERIES, AttributeType.HISTOGRAM_SERIES, AttributeType.STRING_SERIES)
SINGLE_FILE_TYPES = (AttributeType.FILE, AttributeType.FILE_SET, AttributeType.ARTIFACT)
SPILL_SCHEMA = pa.schema(
    [
        pa.field("step", pa.int64()),
        pa.field("key", pa.int32()),
        pa.field("timestamp", pa.int64()),
        pa.field("float_value", pa.float64()),
        pa.field("string_value", pa.string()),
        pa.field(
            "histogram_value",
            pa.struct([pa.field("edges", pa.list_(pa.float64())), pa.field("values", pa.list_(pa.float64()))]),
        ),
    ]
)


@dataclass
class RunContent:
    """A run read from its export, ready to log: config, tags, file artifacts, series spilled by step."""

    config: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # spill key index → W&B key
    key_types: list[AttributeType] = field(default_factory=list)
    originals: list[str] = field(default_factory=list)
    files: dict[str, list[tuple[Path, str]]] = field(
        default_factory=dict
    )  # attribute → [(local file/dir, name in artifact)]
    file_types: dict[str, AttributeType] = field(default_factory=dict)
    file_count: int = 0
    min_unscaled_step: int | None = None  # lowest series step (W&B drops negative steps: they get shifted)

    def step_offset(self, multiplier: int) -> int:
        """Added to every W&B step so the lowest is >= 0 (recorded in config as neptune.step_offset)."""
        if self.min_unscaled_step is None:
            return 0
        lowest = int(integer_steps(np.array([self.min_unscaled_step]), multiplier)[0])
        return -lowest if lowest < 0 else 0


def _native(attribute_type: AttributeType, row: dict) -> Any:
    column = value_column(attribute_type)
    value = row[column]
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if attribute_type is AttributeType.STRING_SET:
        return sorted(value or [])
    if isinstance(value, float) and not math.isfinite(value):
        return NON_FINITE_CONFIG[repr(value)]  # W&B config stores NaN/inf as null: keep them as text
    return value


def config_value(attribute_type: AttributeType | str, row: dict) -> Any:
    """The W&B config value of a single-value attribute row (native types; datetimes as ISO text)."""
    return _native(AttributeType(attribute_type), row)


class ExportReader:
    """One pass over a run's parts: parameters → config, files → artifact lists, series → step spill."""

    def __init__(self, exported: ExportedRun, keymap: KeyMap, spill: StepSpill):
        self.exported, self.keymap, self.spill = exported, keymap, spill
        self.content = RunContent()
        self._key_index: dict[str, int] = {}

    def read(self) -> RunContent:
        try:
            for batch in self.exported.batches():
                self._batch(pa.Table.from_batches([rows_with_points(batch)]))  # a series row with no value: no point
        except NeptuneExporterError:
            raise
        except (pa.ArrowException, OSError) as error:
            raise CorruptPartError(
                f"cannot read the export of run {self.exported.run_id!r}: {error}",
                "export the run again (its parts are damaged or incomplete)",
                run=self.exported.run_id,
            ) from None
        return self.content

    def _batch(self, table: pa.Table) -> None:
        types = table.column("attribute_type")
        series = pc.is_in(types, value_set=pa.array([t.value for t in HISTORY_TYPES]))
        self._series(table.filter(series))
        self._single_values(table.filter(pc.invert(series)))

    def _index(self, path: str, attribute_type: AttributeType) -> int:
        index = self._key_index.get(path)
        if index is None:
            index = self._key_index[path] = len(self.content.keys)
            self.content.keys.append(self.keymap(path))
            self.content.key_types.append(attribute_type)
            self.content.originals.append(path)
        return index

    def _keys(self, paths: pa.ChunkedArray, types: pa.ChunkedArray) -> np.ndarray:
        """Spill key index of every row: each distinct path is looked up once, not once per point."""
        encoded = pc.dictionary_encode(paths.combine_chunks())
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        distinct, first_rows = np.unique(codes, return_index=True)
        first_types = types.take(pa.array(first_rows)).to_pylist()
        lookup = np.zeros(len(encoded.dictionary), dtype=np.int32)
        for code, path_type in zip(distinct.tolist(), first_types, strict=True):
            lookup[code] = self._index(encoded.dictionary[code].as_py(), AttributeType(path_type))
        return lookup[codes]

    def _series(self, table: pa.Table) -> None:
        if not len(table):
            return
        table = table.filter(pc.is_valid(table.column("step")))
        unscaled = decimal_array_to_unscaled(table.column("step"))
        if unscaled.size:
            low = int(unscaled.min())
            current = self.content.min_unscaled_step
            self.content.min_unscaled_step = low if current is None else min(current, low)
        keys = self._keys(table.column("attribute_path"), table.column("attribute_type"))
        histograms = table.column("histogram_value").cast(SPILL_SCHEMA.field("histogram_value").type)
        self.spill.add(
            pa.table(
                {
                    "step": unscaled,
                    "key": keys,
                    "timestamp": table.column("timestamp").cast(pa.int64()),
                    "float_value": table.column("float_value"),
                    "string_value": table.column("string_value"),
                    "histogram_value": histograms,
                },
                schema=SPILL_SCHEMA,
            )
        )

    def _single_values(self, table: pa.Table) -> None:
        unscaled_steps = decimal_array_to_unscaled(table.column("step"))
        for row, unscaled in zip(
            table.drop_columns(["step", "histogram_value"]).to_pylist(), unscaled_steps.tolist(), strict=True
        ):
            attribute_type, path = AttributeType(row["attribute_type"]), row["attribute_path"]
            if attribute_type in SINGLE_FILE_TYPES or attribute_type is AttributeType.FILE_SERIES:
                self._file(path, attribute_type, row, unscaled)
                continue
            if row[value_column(attribute_type)] is None:  # no value: the peer tool writes such rows
                continue
            value = _native(attribute_type, row)
            self.content.config[self.keymap(path)] = value
            if path == "sys/tags":
                self.content.tags = [tag[:MAX_TAG_LENGTH] for tag in value]

    def _file(self, path: str, attribute_type: AttributeType, row: dict, unscaled_step: int) -> None:
        local = self.exported.local_file(path, row["file_value"])
        if local is None:
            return
        name = local.name
        if attribute_type is AttributeType.FILE_SERIES:
            name = f"step_{format_step(unscaled_step)}/{local.name}"
        self.content.files.setdefault(path, []).append((local, name))
        self.content.file_types[path] = attribute_type
        self.content.file_count += 1


@contextmanager
def mapped_run(exported: ExportedRun, staging_root: Path, spill_chunk_rows: int = 1_000_000):
    """Read a run once: (content, step spill, key map, staging folder), all cleaned up on exit."""
    staging_root.mkdir(parents=True, exist_ok=True)
    keymap = WandbKeyMap(WANDB)
    with (
        tempfile.TemporaryDirectory(dir=staging_root) as staging,
        StepSpill(SPILL_SCHEMA, staging, chunk_rows=spill_chunk_rows) as spill,
    ):
        content = ExportReader(exported, keymap, spill).read()
        yield content, spill, keymap, Path(staging)

"""One exported run written into a GoodSeed run database through GoodSeed's storage API (goodseed.storage)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_exporter.errors import TerminalError
from neptune_exporter.loaders.base import SINGLE_VALUE_TYPES, ExportedRun, integer_steps, rows_with_points
from neptune_exporter.loaders.goodseed.names import NAN_PREFIX, display_name, goodseed_key, real_steps
from neptune_exporter.model import AttributeType, as_utc, decimal_array_to_unscaled
from neptune_exporter.rows import value_column

log = logging.getLogger(__name__)

FILE_TYPES = frozenset(
    t.value for t in (AttributeType.FILE, AttributeType.FILE_SERIES, AttributeType.FILE_SET, AttributeType.ARTIFACT)
)
NOT_LOADED_REASON = (
    "GoodSeed has no file storage (configs, float series and string series only); the files stay in the export"
)
POINTS_PER_WRITE = 50_000  # points per GoodSeed transaction


def _iso(ms: int | None) -> str:
    moment = datetime.now(UTC) if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat()


class GoodseedRunWriter:
    """Writes one run: GoodSeed's own run facts first (as `goodseed.Run` does), provenance marked `loading`, every
    attribute, then the run closed and `neptune.load_state` = complete last."""

    def __init__(self, db_path: Path, export: ExportedRun, goodseed_id: str, project: str, multiplier: int | None):
        from goodseed.storage import LocalStorage

        self.export, self.goodseed_id, self.project, self.multiplier = export, goodseed_id, project, multiplier
        self.storage = LocalStorage(db_path)
        self.points = 0
        self.renamed: dict[str, str] = {}
        self.not_loaded: dict[str, str] = {}
        self._keys: dict[str, str] = {}

    # ---------------------------------------------------------------- run facts
    def open_run(self, provenance: dict[str, Any]) -> None:
        created, name = _iso(self.export.start_ms), display_name(self.export.experiment_name)
        meta = {"run_id": self.goodseed_id, "project": self.project, "created_at": created, "status": "running"}
        if self.export.end_ms is not None:
            meta["modified_at"] = _iso(self.export.end_ms)
        if name:
            meta["name"] = name
        for key, value in meta.items():
            self.storage.set_meta(key, value)
        own: dict[str, Any] = {"sys/id": self.goodseed_id, "sys/creation_time": created, "sys/state": "running"}
        if name:
            own["sys/name"] = name
        self._configs(own)
        self._configs({k: v for k, v in provenance.items() if v is not None})

    def close_run(self) -> None:
        closed = datetime.now(UTC).isoformat()
        self._configs(
            {
                "neptune.key_map": json.dumps(dict(sorted(self.renamed.items())), ensure_ascii=False),
                "neptune.not_loaded": json.dumps(dict(sorted(self.not_loaded.items())), ensure_ascii=False),
            }
        )
        self.storage.set_meta("status", "finished")
        self.storage.set_meta("closed_at", closed)
        self._configs({"sys/state": "finished", "sys/closed_time": closed})
        self._configs({"neptune.load_state": "complete"})
        self.storage.checkpoint_wal()
        self.storage.close()

    def abandon(self) -> None:
        self.storage.close()

    def _configs(self, values: dict[str, Any]) -> None:
        from goodseed.utils import serialize_value

        self.storage.log_configs({key: serialize_value(value) for key, value in values.items()})

    def key(self, path: str) -> str:
        key = self._keys.get(path)
        if key is None:
            key = self._keys[path] = goodseed_key(path)
            if key != path:
                self.renamed[path] = key
        return key

    # ---------------------------------------------------------------- attributes
    def write_all(self) -> None:
        for batch in self.export.batches():
            batch = rows_with_points(batch)
            types = batch.column("attribute_type")
            self._params(batch.filter(pc.is_in(types, value_set=SINGLE_VALUE_TYPES)))
            self._floats(batch.filter(pc.equal(types, AttributeType.FLOAT_SERIES.value)))
            for kind in (AttributeType.STRING_SERIES, AttributeType.HISTOGRAM_SERIES):
                self._texts(batch.filter(pc.equal(types, kind.value)), kind)
            self._files(batch.filter(pc.is_in(types, value_set=pa.array(sorted(FILE_TYPES)))))
        if self.not_loaded:
            log.warning(
                "run %s (%s): %d attribute(s) not loaded into GoodSeed: %s; %s",
                self.export.run_id,
                self.export.project_id,
                len(self.not_loaded),
                ", ".join(sorted(self.not_loaded)[:5]) + (" …" if len(self.not_loaded) > 5 else ""),
                NOT_LOADED_REASON,
            )

    def _params(self, rows: pa.RecordBatch) -> None:
        values: dict[str, Any] = {}
        paths, types = rows.column("attribute_path").to_pylist(), rows.column("attribute_type").to_pylist()
        columns = {name: rows.column(name).to_pylist() for name in {value_column(t) for t in set(types)}}
        for i, (path, attribute_type) in enumerate(zip(paths, types, strict=True)):
            value = columns[value_column(attribute_type)][i]
            if value is None:
                continue
            if attribute_type == AttributeType.STRING_SET.value:
                value = set(value)
            elif attribute_type == AttributeType.DATETIME.value:
                value = as_utc(value)
            elif attribute_type == AttributeType.FLOAT.value:
                value = float(value)
            values[self.key(path)] = value
        if values:
            self._configs(values)

    def _steps_and_times(self, rows: pa.RecordBatch) -> tuple[list[float], list[float]]:
        if rows.column("step").null_count:
            raise TerminalError(
                f"run {self.export.run_id!r}: a series row of {rows.column('attribute_path')[0]} has no step",
                "re-export the run; the part file is not a valid export",
            )
        unscaled = decimal_array_to_unscaled(rows.column("step"))
        if self.multiplier is not None:
            unscaled = integer_steps(unscaled, self.multiplier)
        steps, _ = real_steps(unscaled, self.multiplier)  # inexact series were left out before loading
        fallback = self.export.start_ms or 0
        ms = np.asarray(pc.fill_null(pc.cast(rows.column("timestamp"), pa.int64()), fallback), dtype=np.int64)
        return steps.tolist(), (ms / 1000).tolist()  # GoodSeed times are epoch seconds; REAL keeps the ms

    def _keys_of(self, rows: pa.RecordBatch, prefix: str = "") -> list[str]:
        encoded = rows.column("attribute_path").dictionary_encode()
        keys = [prefix + self.key(p) for p in encoded.dictionary.to_pylist()]
        return [keys[i] for i in encoded.indices.to_pylist()]

    def _floats(self, rows: pa.RecordBatch) -> None:
        if not rows.num_rows:
            return
        values = np.asarray(rows.column("float_value").to_numpy(zero_copy_only=False), dtype=np.float64)
        nan = np.isnan(values)
        if nan.any():  # GoodSeed's REAL NOT NULL y cannot hold NaN (SQLite stores it as NULL)
            self._texts_of(rows.filter(pa.array(nan)), ["NaN"] * int(nan.sum()), NAN_PREFIX)
            rows, values = rows.filter(pa.array(~nan)), values[~nan]
        steps, seconds = self._steps_and_times(rows)
        self._write(
            self.storage.log_metric_points, list(zip(self._keys_of(rows), steps, values.tolist(), seconds, strict=True))
        )

    def _texts(self, rows: pa.RecordBatch, kind: AttributeType) -> None:
        if not rows.num_rows:
            return
        if kind is AttributeType.STRING_SERIES:
            texts = rows.column("string_value").to_pylist()
        else:  # GoodSeed has no histograms: each one is a JSON text point {"type", "edges", "values"}
            texts = [json.dumps(h, ensure_ascii=False) for h in rows.column("histogram_value").to_pylist()]
        self._texts_of(rows, texts)

    def _texts_of(self, rows: pa.RecordBatch, texts: list[str], prefix: str = "") -> None:
        steps, seconds = self._steps_and_times(rows)
        self._write(
            self.storage.log_string_points, list(zip(self._keys_of(rows, prefix), steps, texts, seconds, strict=True))
        )

    def _write(self, log_points, points: list[tuple]) -> None:
        for start in range(0, len(points), POINTS_PER_WRITE):
            log_points(points[start : start + POINTS_PER_WRITE])
        self.points += len(points)

    def _files(self, rows: pa.RecordBatch) -> None:
        paths, types = rows.column("attribute_path").to_pylist(), rows.column("attribute_type").to_pylist()
        for path, attribute_type, value in zip(paths, types, rows.column("file_value").to_pylist(), strict=True):
            if value and (value.get("path") if isinstance(value, dict) else value):  # a row naming no file holds none
                self.not_loaded[path] = f"{attribute_type}: {NOT_LOADED_REASON}"

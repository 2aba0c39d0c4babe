"""An exported run mapped to MLflow: params and tags (long values to artifacts), metric chunks, artifact files."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_exporter.errors import TerminalError
from neptune_exporter.loaders.base import (
    MLFLOW,
    SINGLE_VALUE_TYPES,
    ExportedRun,
    KeyMap,
    format_step,
    integer_steps,
    rows_with_points,
    single_values,
)
from neptune_exporter.model import AttributeType, decimal_array_to_unscaled, iso_utc_ms

TAGS_ATTRIBUTE = "sys/tags"
LONG_VALUES_DIR = "neptune/long_values"
ORIGINALS_DIR = "neptune/original_points"
KEY_MAP_ARTIFACT_DIR = "neptune"
KEY_MAP_FILE = "key_map.json"
RESERVED_TAG_PREFIXES = ("mlflow.", "neptune.")


def _batch_limit(limit: int | None) -> int:
    """One of MLflow's per-request limits (`loaders/base.MLFLOW`) as a count; None would mean no limit."""
    return sys.maxsize if limit is None else limit


METRICS_PER_BATCH = _batch_limit(MLFLOW.metrics_per_batch)
PARAMS_PER_BATCH = _batch_limit(MLFLOW.params_per_batch)
TAGS_PER_BATCH = _batch_limit(MLFLOW.tags_per_batch)

WHOLE_FILE_TYPES = pa.array([t.value for t in (AttributeType.FILE, AttributeType.FILE_SET, AttributeType.ARTIFACT)])


@dataclass
class Params:
    values: dict[str, str]


@dataclass
class Tags:
    values: dict[str, str]


@dataclass
class MetricChunk:
    names: list[str]  # MLflow keys, indexed by `codes`
    codes: np.ndarray  # per point: index into `names`
    steps: np.ndarray  # int64, already scaled to integers
    timestamps: np.ndarray  # int64 epoch ms
    values: np.ndarray  # float64


@dataclass
class ArtifactItem:
    local: Path  # a file (lands at artifact_dir/<name>) or a folder (its tree lands under artifact_dir)
    artifact_dir: str


def param_text(attribute_type: str, value: Any) -> str:
    """MLflow param text of a single value: string sets as a JSON list (sorted; reversible whatever the strings
    hold), datetimes ISO 8601 (ms, UTC)."""
    if attribute_type == AttributeType.STRING_SET.value:
        return json.dumps(sorted(value), ensure_ascii=False)
    if attribute_type == AttributeType.DATETIME.value:
        return iso_utc_ms(value)
    if attribute_type == AttributeType.FLOAT.value:
        return repr(float(value))
    return str(value)


def truncated_param(text: str, artifact_path: str, limit: int) -> str:
    """A param value cut to `limit` characters that says where the whole value is."""
    pointer = f" …[truncated: {len(text)} chars, full value in artifact {artifact_path}]"
    return text[: limit - len(pointer)] + pointer


def _iso_ms(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


class RunMapping:
    """Streams one exported run as MLflow params, tags, metric chunks and artifacts, batch by batch."""

    def __init__(self, export: ExportedRun, multiplier: int, workdir: Path):
        self.export = export
        self.multiplier = multiplier
        self.workdir = Path(workdir)
        self.keys = KeyMap(MLFLOW)
        self.tag_keys = KeyMap(MLFLOW)
        self._pending_params: dict[str, str] = {}
        self._series_files: dict[str, Path] = {}
        self._originals: dict[str, Path] = {}  # metric key → its original points (`_record_originals`)

    def items(self) -> Iterator[Params | Tags | MetricChunk | ArtifactItem]:
        """Everything to send, in bounded chunks; generated files come last, the key map very last."""
        for batch in self.export.batches():
            batch = rows_with_points(batch)  # a series row with no value holds no point
            types = batch.column("attribute_type")
            yield from self._parameters(batch.filter(pc.is_in(types, value_set=SINGLE_VALUE_TYPES)))
            yield from self._metrics(batch.filter(pc.equal(types, AttributeType.FLOAT_SERIES.value)))
            self._text_series(batch.filter(pc.equal(types, AttributeType.STRING_SERIES.value)))
            self._histograms(batch.filter(pc.equal(types, AttributeType.HISTOGRAM_SERIES.value)))
            yield from self._whole_files(batch.filter(pc.is_in(types, value_set=WHOLE_FILE_TYPES)))
            yield from self._file_series(batch.filter(pc.equal(types, AttributeType.FILE_SERIES.value)))
        if self._pending_params:
            yield Params(self._pending_params)
            self._pending_params = {}
        for key, path in sorted(self._series_files.items()):
            yield ArtifactItem(path, key)
        for key, path in sorted(self._originals.items()):
            yield ArtifactItem(path, str(Path(ORIGINALS_DIR, key).parent.as_posix()))
        yield self._key_map_artifact()

    # ---------------------------------------------------------------- parameters and tags
    def _parameters(self, rows: pa.RecordBatch) -> Iterator[Params | Tags | ArtifactItem]:
        for path, attribute_type, value in single_values(rows):
            if path == TAGS_ATTRIBUTE:
                yield Tags({self._tag_key(tag): "" for tag in sorted(value)})
                continue
            yield from self._parameter(path, param_text(attribute_type, value))

    def _parameter(self, path: str, text: str) -> Iterator[Params | ArtifactItem]:
        key = self.keys(path)
        limit = MLFLOW.max_param_length
        if limit is not None and len(text) > limit:
            local = self.workdir / LONG_VALUES_DIR / f"{key}.txt"
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(text, encoding="utf-8")
            artifact_dir = str(Path(LONG_VALUES_DIR, key).parent.as_posix())
            yield ArtifactItem(local, artifact_dir)
            text = truncated_param(text, f"{LONG_VALUES_DIR}/{key}.txt", limit)
        self._pending_params[key] = text
        if len(self._pending_params) >= PARAMS_PER_BATCH:
            yield Params(self._pending_params)
            self._pending_params = {}

    def _tag_key(self, tag: str) -> str:
        key = self.tag_keys(tag)
        if key.startswith(RESERVED_TAG_PREFIXES):
            key = self.tag_keys.renamed[tag] = "neptune.tag." + key
        return key

    # ---------------------------------------------------------------- series
    def _steps(self, rows: pa.RecordBatch) -> np.ndarray:
        steps = rows.column("step")
        if steps.null_count:
            raise TerminalError(
                f"run {self.export.run_id!r}: a series row of {rows.column('attribute_path')[0]} has no step",
                "re-export the run; the part file is not a valid export",
            )
        return integer_steps(decimal_array_to_unscaled(steps), self.multiplier)

    def _timestamps(self, rows: pa.RecordBatch) -> np.ndarray:
        fallback = self.export.start_ms or 0
        ms = pc.cast(rows.column("timestamp"), pa.int64())
        return np.asarray(pc.fill_null(ms, fallback).to_numpy(zero_copy_only=False), dtype=np.int64)

    def _metrics(self, rows: pa.RecordBatch) -> Iterator[MetricChunk]:
        if not rows.num_rows:
            return
        encoded = rows.column("attribute_path").dictionary_encode()
        names = [self.keys(path) for path in encoded.dictionary.to_pylist()]
        codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        values = np.asarray(
            pc.fill_null(rows.column("float_value"), float("nan")).to_numpy(zero_copy_only=False), dtype=np.float64
        )
        stamps = self._timestamps(rows)
        self._record_originals(names, codes, rows, stamps, values)
        yield MetricChunk(names, codes, self._steps(rows), np.maximum(stamps, 0), values)

    def _record_originals(
        self, names: list[str], codes: np.ndarray, rows: pa.RecordBatch, stamps: np.ndarray, values: np.ndarray
    ) -> None:
        """Points MLflow cannot hold as they are (a time before 1970: logged at 1970-01-01; ±inf: stored as ±max
        float64; -0.0: stored as 0.0) keep their originals, a JSON line each, in `neptune/original_points/<key>.jsonl`."""
        early = stamps < 0
        changed_value = np.isinf(values) | ((values == 0) & np.signbit(values))
        unscaled = decimal_array_to_unscaled(rows.column("step"))
        kept = np.flatnonzero(early | changed_value)
        for code in np.unique(codes[kept]).tolist():
            with self._originals_handle(names[code]) as handle:
                for i in kept[codes[kept] == code].tolist():
                    record = {
                        "step": format_step(int(unscaled[i])),
                        "timestamp": int(stamps[i]) if early[i] else None,
                        "value": repr(float(values[i])) if changed_value[i] else None,
                    }
                    handle.write(json.dumps(record) + "\n")

    def _originals_handle(self, key: str):
        local = self.workdir / ORIGINALS_DIR / f"{key}.jsonl"
        local.parent.mkdir(parents=True, exist_ok=True)
        self._originals[key] = local
        return open(local, "a", encoding="utf-8")

    def _append_lines(self, rows: pa.RecordBatch, file_name: str, render: Callable[[Any], dict]) -> None:
        if not rows.num_rows:
            return
        unscaled = decimal_array_to_unscaled(rows.column("step"))
        stamps = pc.cast(rows.column("timestamp"), pa.int64()).to_pylist()
        paths = rows.column("attribute_path").to_pylist()
        column = rows.column("string_value" if file_name == "series.jsonl" else "histogram_value").to_pylist()
        handles: dict[str, Any] = {}
        try:
            for path, step, stamp, value in zip(paths, unscaled.tolist(), stamps, column, strict=True):
                handle = handles.get(path) or handles.setdefault(path, self._series_handle(path, file_name))
                record = {"step": format_step(step), "timestamp": _iso_ms(stamp), **render(value)}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        finally:
            for handle in handles.values():
                handle.close()

    def _series_handle(self, path: str, file_name: str):
        key = self.keys(path)
        local = self.workdir / "series" / key / file_name
        local.parent.mkdir(parents=True, exist_ok=True)
        self._series_files[key] = local
        return open(local, "a", encoding="utf-8")

    def _text_series(self, rows: pa.RecordBatch) -> None:
        self._append_lines(rows, "series.jsonl", lambda value: {"value": value})

    def _histograms(self, rows: pa.RecordBatch) -> None:
        self._append_lines(rows, "histograms.jsonl", lambda value: dict(value or {}))

    # ---------------------------------------------------------------- files
    def _whole_files(self, rows: pa.RecordBatch) -> Iterator[ArtifactItem]:
        for path, value in zip(
            rows.column("attribute_path").to_pylist(), rows.column("file_value").to_pylist(), strict=True
        ):
            local = self.export.local_file(path, value)
            if local is not None:  # a row naming no file (the peer tool writes them) holds nothing to load
                yield ArtifactItem(local, self.keys(path))

    def _file_series(self, rows: pa.RecordBatch) -> Iterator[ArtifactItem]:
        if not rows.num_rows:
            return
        steps = self._steps(rows).tolist()
        for path, step, value in zip(
            rows.column("attribute_path").to_pylist(), steps, rows.column("file_value").to_pylist(), strict=True
        ):
            local = self.export.local_file(path, value)
            if local is not None:
                yield ArtifactItem(local, f"{self.keys(path)}/step_{step}")

    def _key_map_artifact(self) -> ArtifactItem:
        local = self.workdir / KEY_MAP_ARTIFACT_DIR / KEY_MAP_FILE
        local.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "attributes": dict(sorted(self.keys.renamed.items())),
            "tags": dict(sorted(self.tag_keys.renamed.items())),
        }
        local.write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
        return ArtifactItem(local, KEY_MAP_ARTIFACT_DIR)

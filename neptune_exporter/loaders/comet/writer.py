"""An exported run written into one Comet experiment (offline or online): single values as parameters or others,
tags, metrics with exact integer steps and their own times, text, histograms, files as assets, provenance last."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_exporter import interrupt
from neptune_exporter.loaders.base import (
    ExportedRun,
    KeyMap,
    TargetCapabilities,
    format_step,
    integer_steps,
    rows_with_points,
)
from neptune_exporter.model import AttributeType, decimal_array_to_unscaled, iso_utc_ms
from neptune_exporter.rows import value_column
from neptune_exporter.storage.exported_run import PROVENANCE_LOAD_STATE

COMET = TargetCapabilities(
    name="comet",
    integer_steps=True,
    increasing_steps_only=False,
    max_key_length=100,  # comet_ml cuts longer names of metrics, parameters and others
    key_pattern=r"[\s\S]",  # any character
    max_param_length=1000,  # comet_ml cuts longer parameter and other values
    metrics_per_batch=None,
    params_per_batch=None,
    tags_per_batch=None,
)
OTHERS_PREFIX = "sys/"  # Neptune's system namespace becomes Comet "others"; every other single value a parameter
LONG_VALUES_DIR = "neptune/long_values"
HISTOGRAMS_DIR = "neptune/histograms"
KEY_MAP_ASSET = "neptune/key_map.json"
WHOLE_FILE_TYPES = (AttributeType.FILE, AttributeType.FILE_SET, AttributeType.ARTIFACT)
SERIES_NAMES = pa.array(
    [
        t.value
        for t in (
            AttributeType.FLOAT_SERIES,
            AttributeType.STRING_SERIES,
            AttributeType.HISTOGRAM_SERIES,
            AttributeType.FILE_SERIES,
        )
    ]
)
QUEUE_HIGH, QUEUE_LOW = 20_000, 2_000  # comet_ml's writer thread drops what is queued past its end() timeout


def comet_value(attribute_type: AttributeType, value: Any) -> Any:
    """A single value as Comet keeps it: numbers and booleans as they are (comet_ml writes NaN/±inf as text),
    datetimes ISO 8601 UTC (ms), string sets a sorted JSON list."""
    if attribute_type is AttributeType.DATETIME:
        return iso_utc_ms(value)
    if attribute_type is AttributeType.STRING_SET:
        return json.dumps(sorted(value), ensure_ascii=False)
    return value


def truncated(text: str, asset_name: str, limit: int) -> str:
    """A value cut to `limit` characters that says which asset holds all of it."""
    pointer = f" …[truncated: {len(text)} chars, full value in asset {asset_name}]"
    return text[: limit - len(pointer)] + pointer


def histogram_counts(value: dict | None) -> tuple[list[float], list[float]] | None:
    """(bin midpoints, whole counts) when a Neptune histogram fits Comet's 3D histogram (finite edges, one more than
    the counts, counts whole and >= 0, some > 0); None otherwise (it is kept in the exact histogram asset only)."""
    edges, counts = list((value or {}).get("edges") or []), list((value or {}).get("values") or [])
    if not counts or len(edges) != len(counts) + 1 or not all(np.isfinite(edges + counts)):
        return None
    if any(c < 0 or c != int(c) for c in counts) or not sum(counts):
        return None
    return [(a + b) / 2 for a, b in zip(edges, edges[1:], strict=False)], counts


@dataclass
class Written:
    points: int = 0
    files: int = 0


class CometRunWriter:
    """Streams one exported run into a comet_ml experiment (anything with its logging methods)."""

    def __init__(self, experiment, exported: ExportedRun, multiplier: int, workdir: Path):
        self.experiment, self.exported, self.multiplier, self.workdir = experiment, exported, multiplier, workdir
        self.keys = KeyMap(COMET)
        self.written = Written()
        self._histograms: dict[str, Path] = {}
        self._long_values: list[Path] = []
        self._queued = 0

    def write(self) -> Written:
        """Everything of the run; the load state `complete` is the very last message."""
        self._unstepped(self.experiment.log_other, PROVENANCE_LOAD_STATE, "loading")
        for batch in self.exported.batches():
            interrupt.raise_if_requested()  # Ctrl-C: the archive stays unfinished and the rerun redoes it
            batch = rows_with_points(batch)
            types = batch.column("attribute_type")
            self._singles(batch.filter(pc.invert(pc.is_in(types, value_set=SERIES_NAMES))))
            self._metrics(batch.filter(pc.equal(types, AttributeType.FLOAT_SERIES.value)))
            self._texts(batch.filter(pc.equal(types, AttributeType.STRING_SERIES.value)))
            self._histogram_points(batch.filter(pc.equal(types, AttributeType.HISTOGRAM_SERIES.value)))
            self._file_series(batch.filter(pc.equal(types, AttributeType.FILE_SERIES.value)))
        for path, local in sorted(self._histograms.items()):
            meta = {"neptune_attribute": path, "neptune_type": "histogram_series"}
            self._asset(local, f"{HISTOGRAMS_DIR}/{self.keys(path)}.jsonl", meta, own=True)
        self._key_map()
        return self.written

    def finish(self, provenance: dict[str, Any]) -> None:
        """Provenance as others, then `neptune.load_state` (its last value, written last)."""
        for key, value in provenance.items():
            if value is not None and key != PROVENANCE_LOAD_STATE:
                self._unstepped(self.experiment.log_other, key, value)
        self._unstepped(self.experiment.log_other, PROVENANCE_LOAD_STATE, provenance[PROVENANCE_LOAD_STATE])

    # ---------------------------------------------------------------- single values and files
    def _singles(self, rows: pa.RecordBatch) -> None:
        for row in rows.drop_columns(["histogram_value"]).to_pylist():
            attribute_type, path = AttributeType(row["attribute_type"]), row["attribute_path"]
            if attribute_type in WHOLE_FILE_TYPES:
                local = self.exported.local_file(path, row["file_value"])
                if local is not None:
                    self._tree(
                        local, f"{path}/{local.name}", {"neptune_attribute": path, "neptune_type": str(attribute_type)}
                    )
                continue
            value = row[value_column(attribute_type)]
            if value is None:
                continue
            if path == "sys/tags":
                self._unstepped(self.experiment.add_tags, sorted(value))
            self._single(path, comet_value(attribute_type, value))

    def _single(self, path: str, value: Any) -> None:
        key = self.keys(path)
        limit = COMET.max_param_length or 0
        if isinstance(value, str) and len(value) > limit:
            local = self.workdir / "long" / f"{len(self._long_values)}.txt"
            self._long_values.append(local)
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(value, encoding="utf-8")
            asset_name = f"{LONG_VALUES_DIR}/{key}.txt"
            self._asset(local, asset_name, {"neptune_attribute": path, "neptune_type": "long_value"}, own=True)
            value = truncated(value, asset_name, limit)
        log = self.experiment.log_other if path.startswith(OTHERS_PREFIX) else self.experiment.log_parameter
        self._unstepped(log, key, value)

    def _tree(self, local: Path, name: str, metadata: dict, step: int | None = None) -> None:
        """A file, or every file of a folder (`name/<relative path>`), as assets."""
        if not local.is_dir():
            self._asset(local, name, metadata, step)
            return
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            self._asset(file, f"{name}/{file.relative_to(local).as_posix()}", metadata, step)

    def _asset(self, local: Path, name: str, metadata: dict, step: int | None = None, own: bool = False) -> None:
        """One asset; the run's files are counted, the loader's `own` (key map, long values, histograms) are not."""
        if step is None:
            self._unstepped(self.experiment.log_asset, str(local), file_name=name, metadata=metadata)
        else:
            self.experiment.log_asset(str(local), file_name=name, step=step, metadata=metadata)
            self._queue()
        self.written.files += 0 if own else 1

    def _unstepped(self, log, *args, **kwargs) -> None:
        """Call without a step: comet_ml otherwise gives parameters, others and assets the last step logged."""
        self.experiment.curr_step = None
        log(*args, **kwargs)
        self._queue()

    # ---------------------------------------------------------------- series
    def _steps(self, rows: pa.RecordBatch) -> tuple[np.ndarray, list[int]]:
        unscaled = decimal_array_to_unscaled(rows.column("step"))
        return unscaled, integer_steps(unscaled, self.multiplier).tolist()

    def _times(self, rows: pa.RecordBatch) -> list[int | None]:
        return pc.cast(rows.column("timestamp"), pa.int64()).to_pylist()

    def _metrics(self, rows: pa.RecordBatch) -> None:
        if not rows.num_rows:
            return
        from comet_ml.messages import MetricMessage

        fallback = self.exported.start_ms or 0
        encoded = rows.column("attribute_path").dictionary_encode()
        names = [self.keys(path) for path in encoded.dictionary.to_pylist()]
        values = pc.fill_null(rows.column("float_value"), float("nan")).to_pylist()
        _, steps = self._steps(rows)
        for code, step, stamp, value in zip(encoded.indices.to_pylist(), steps, self._times(rows), values, strict=True):
            message = MetricMessage(context=None, timestamp=fallback if stamp is None else stamp)
            message.set_metric(names[code], value, step=step)
            self.experiment._enqueue_message(message)
            self._queue()
        self.written.points += rows.num_rows

    def _points(self, rows: pa.RecordBatch, column: str):
        """(path, exact unscaled step, Comet step, epoch ms or None, value) of each point."""
        unscaled, steps = self._steps(rows)
        return zip(
            rows.column("attribute_path").to_pylist(),
            unscaled.tolist(),
            steps,
            self._times(rows),
            rows.column(column).to_pylist(),
            strict=True,
        )

    def _texts(self, rows: pa.RecordBatch) -> None:
        for path, exact, step, stamp, value in self._points(rows, "string_value"):
            metadata = {"neptune_attribute": path, "step": format_step(exact), "timestamp": stamp}
            self.experiment.log_text(value, step=step, metadata=metadata)
            self._queue()
        self.written.points += rows.num_rows

    def _histogram_points(self, rows: pa.RecordBatch) -> None:
        if not rows.num_rows:
            return
        from comet_ml.data_structure import Histogram

        for path, exact, step, stamp, value in self._points(rows, "histogram_value"):
            record = {"step": format_step(exact), "timestamp": stamp, **dict(value or {})}
            with self._histogram_file(path).open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            fitted = histogram_counts(value)
            if fitted is not None:
                histogram = Histogram()
                histogram.add(np.asarray(fitted[0], dtype=np.float64), counts=fitted[1])
                metadata = {"neptune_attribute": path, "step": format_step(exact)}
                self.experiment.log_histogram_3d(histogram, name=self.keys(path), step=step, metadata=metadata)
                self._queue()
        self.written.points += rows.num_rows

    def _histogram_file(self, path: str) -> Path:
        local = self._histograms.get(path)
        if local is None:
            local = self._histograms[path] = self.workdir / "histograms" / f"{len(self._histograms)}.jsonl"
            local.parent.mkdir(parents=True, exist_ok=True)
        return local

    def _file_series(self, rows: pa.RecordBatch) -> None:
        for path, exact, step, _, value in self._points(rows, "file_value"):
            local = self.exported.local_file(path, value)
            if local is not None:
                text = format_step(exact)
                metadata = {"neptune_attribute": path, "neptune_type": "file_series", "step": text}
                self._tree(local, f"{path}/step_{text}/{local.name}", metadata, step)

    def _key_map(self) -> None:
        local = self.workdir / "key_map.json"
        local.write_text(json.dumps({"attributes": dict(sorted(self.keys.renamed.items()))}, ensure_ascii=False))
        self._asset(local, KEY_MAP_ASSET, {"neptune_type": "key_map"}, own=True)

    def _queue(self) -> None:
        """Backpressure: wait while comet_ml's writer thread is far behind (bounded memory, nothing dropped)."""
        self._queued += 1
        if self._queued % 1000:
            return
        queue = getattr(getattr(self.experiment, "streamer", None), "messages", None)
        if queue is not None and queue.qsize() > QUEUE_HIGH:
            while queue.qsize() > QUEUE_LOW:
                time.sleep(0.05)

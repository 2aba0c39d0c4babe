"""Comet validation: the Comet view an export must have, by validation's own rules (README "Comet" mapping table),
compared value by value with the offline archive read back from its zip (experiment.json, every message of
messages.json, every logged file): name, project, tags, parameters, others, every metric point with its step and
time, every text, exact and 3D histograms, every asset's bytes, provenance and the completion marker."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_exporter.errors import InvalidOptionError
from neptune_exporter.model import decimal_array_to_unscaled
from neptune_exporter.settings import COMET_OFFLINE_DIR
from neptune_exporter.storage.comet_archive import UnreadableArchive, iter_messages, read_meta
from neptune_exporter.storage.exported_run import ExportedRun
from neptune_exporter.validation.compare import (
    Difference,
    PointDigest,
    RecordDigest,
    compare_digests,
    compare_mappings,
)
from neptune_exporter.validation.export_view import (
    FILE_TYPES,
    read_export,
    series_beyond_int64,
    series_rows,
    single_values,
    timestamps_ms,
)
from neptune_exporter.validation.report import RunValidation
from neptune_exporter.validation.rules import KeyRule, RecordedKeys, expected_multiplier, run_key, scaled, step_text

KEYS = KeyRule(r"[\s\S]", 100)  # comet_ml cuts names past 100 characters
MAX_VALUE_CHARS = 1000  # and values past 1000
NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}  # how comet_ml writes them
# comet_ml logs these itself (sys.already_imported_modules: ML frameworks imported before comet_ml, e.g. mlflow)
COMET_OWN_OTHERS = frozenset({"offline_experiment", "Name", "sys.already_imported_modules"})
COMET_OWN_METRICS = frozenset({"process duration"})
NEPTUNE_ASSETS = ("key_map", "long_value", "histogram_series")  # the loader's own assets (not Neptune files)
SERIES_WITH_STEPS = ("float_series", "string_series", "histogram_series", "file_series")


def comet_project(project_id: str, template: str | None) -> str:
    """The Comet project: the template ({project}, {workspace}, {project_id}) cleaned to [A-Za-z0-9_.-], 100 chars."""
    workspace, _, project = project_id.rpartition("/")
    try:
        name = (template or "{project}").format(project=project, workspace=workspace, project_id=project_id)
    except (KeyError, IndexError, ValueError, AttributeError) as error:
        raise InvalidOptionError(
            f"--comet-project-template {template!r} is not valid ({error})",
            "use only the fields {project}, {workspace}, {project_id}",
        ) from None
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", name)[:100] or "neptune"


def comet_value(attribute_type: str, value: Any) -> Any:
    """A single value as the archive holds it: JSON numbers / booleans / text; NaN and ±inf as comet_ml's text,
    datetimes ISO 8601 UTC with milliseconds, string sets as a sorted JSON list."""
    if attribute_type == "datetime":
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="milliseconds")
    if attribute_type == "string_set":
        return json.dumps(sorted(value), ensure_ascii=False)
    if isinstance(value, float) and not math.isfinite(value):
        return NON_FINITE[repr(value)]
    return value


def typed(value: Any) -> Any:
    """A JSON value with its type kept (1, 1.0 and true differ)."""
    return f"{type(value).__name__}:{json.dumps(value, ensure_ascii=False)}"


def fits_3d(value: dict | None) -> bool:
    """Whether a Neptune histogram can also be a Comet 3D histogram: finite edges one more than the counts, counts
    whole, non-negative, not all zero."""
    edges, counts = list((value or {}).get("edges") or []), list((value or {}).get("values") or [])
    finite = all(math.isfinite(x) for x in edges + counts)
    whole = all(c >= 0 and float(c).is_integer() for c in counts) if finite else False
    return bool(counts) and len(edges) == len(counts) + 1 and finite and whole and sum(counts) > 0


def _metric_value(value: Any) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(value, value)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class CometView:
    """One experiment's facts, expected (from the export) or actual (from the archive)."""

    project: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    others: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, PointDigest] = field(default_factory=dict)
    texts: dict[str, RecordDigest] = field(default_factory=dict)  # attribute → (step, value, time, Comet step)
    histograms: dict[str, RecordDigest] = field(default_factory=dict)  # attribute → exact records
    histograms_3d: dict[str, RecordDigest] = field(default_factory=dict)  # Comet name → (Comet step, total count)
    files: dict[str, list] = field(default_factory=dict)  # asset name → [size, sha256, Comet step]


# ----------------------------------------------------------------------------- the archive as it is


class ArchiveReader:
    """Reads an offline archive into a CometView (plus the loader's key map and long values)."""

    def __init__(self, archive: zipfile.ZipFile):
        self.archive = archive
        self.view = CometView()
        self.key_map: dict[str, str] = {}
        self.long_values: dict[str, str] = {}  # attribute → whole value
        self._points: dict[str, list[tuple[int, int, float]]] = {}

    def read(self) -> CometView:
        meta = read_meta(self.archive)
        self.view.project, self.view.tags = meta.get("project_name"), sorted(meta.get("tags") or [])
        for message in iter_messages(self.archive):
            kind, payload = message.get("type"), message.get("payload") or {}
            if kind == "parameter_msg" and payload["param"].get("source") == "manual":
                self.view.params[payload["param"]["paramName"]] = payload["param"]["paramValue"]
            elif kind == "log_other":
                self.view.others[payload["key"]] = payload["value"]
            elif kind == "metric_msg":
                self._metric(payload)
            elif kind == "file_upload":
                self._upload(payload)
        self._flush_points()
        self.view.name = self.view.others.pop("Name", None)
        for key in COMET_OWN_OTHERS:
            self.view.others.pop(key, None)
        return self.view

    def _metric(self, payload: dict) -> None:
        metric = payload["metric"]
        if metric["metricName"] in COMET_OWN_METRICS:
            return
        points = self._points.setdefault(metric["metricName"], [])
        points.append((int(metric["step"]), int(payload["local_timestamp"]), _metric_value(metric["metricValue"])))
        if len(points) >= 100_000:
            self._flush_points()

    def _flush_points(self) -> None:
        for name, points in self._points.items():
            if points:
                steps, stamps, values = zip(*points, strict=True)
                self.view.metrics.setdefault(name, PointDigest()).update(
                    np.array(steps), np.array(stamps), np.array(values, dtype=np.float64)
                )
        self._points = {}

    def _upload(self, payload: dict) -> None:
        data = self.archive.read(payload["file_path"])
        params, metadata = payload.get("additional_params") or {}, payload.get("metadata") or {}
        kind, attribute = payload.get("upload_type"), str(metadata.get("neptune_attribute"))
        if kind == "text-sample":
            record = [metadata.get("step"), data.decode("utf-8"), metadata.get("timestamp"), params.get("step")]
            self.view.texts.setdefault(attribute, RecordDigest()).add(record)
        elif kind == "histogram3d":
            total = sum(count for _, count in json.loads(data)["index_values"])
            self.view.histograms_3d.setdefault(params["fileName"], RecordDigest()).add([params.get("step"), total])
        elif metadata.get("neptune_type") == "key_map":
            self.key_map = dict(json.loads(data).get("attributes") or {})
        elif metadata.get("neptune_type") == "long_value":
            self.long_values[attribute] = data.decode("utf-8")
        elif metadata.get("neptune_type") == "histogram_series":
            digest = self.view.histograms.setdefault(attribute, RecordDigest())
            for line in data.decode("utf-8").splitlines():
                record = json.loads(line)
                digest.add([record["step"], record["timestamp"], record.get("edges"), record.get("values")])
        else:
            self.view.files[params["fileName"]] = [len(data), _sha256(data), params.get("step")]


# ----------------------------------------------------------------------------- the archive as it should be


class ExpectedComet:
    """The CometView an export must have (keys from the recorded key map, each rename checked)."""

    def __init__(self, export: ExportedRun, multiplier: int, key_map: dict, project: str):
        self.export, self.multiplier = export, multiplier
        self.keys = RecordedKeys(KEYS, dict(key_map))
        self.view = CometView(project=project, name=export.run_id)
        self.long_values: dict[str, str] = {}

    def build(self) -> CometView:
        for path, attribute_type, value, step in single_values(self.export):
            self._single(path, attribute_type, value, step)
        self._metrics()
        self._texts()
        self._histograms()
        export = self.export
        provenance = {
            "neptune.project": export.project_id,
            "neptune.run_id": export.run_id,
            "neptune.export_checksum": export.checksum,
            "neptune.step_multiplier": self.multiplier,
            "neptune.fork_parent": export.fork_parent,
            "neptune.fork_step": None if export.fork_step is None else float(export.fork_step),
            "neptune.experiment": export.experiment_name,
            "neptune.load_state": "complete",
        }
        self.view.others.update({k: v for k, v in provenance.items() if v is not None})
        return self.view

    def _step(self, unscaled: int) -> int:
        return int(scaled(np.array([unscaled]), self.multiplier)[0])

    def _single(self, path: str, attribute_type: str, value: Any, step: int | None) -> None:
        if attribute_type in FILE_TYPES or attribute_type == "file_series":
            local = self.export.local_file(path, value)
            if local is None:
                return
            if attribute_type == "file_series":
                self._files(local, f"{path}/step_{step_text(step or 0)}/{local.name}", self._step(step or 0))
            else:
                self._files(local, f"{path}/{local.name}", None)
            return
        if path == "sys/tags":
            self.view.tags = sorted(set(value))
        text = comet_value(attribute_type, value)
        key = self.keys(path)
        if isinstance(text, str) and len(text) > MAX_VALUE_CHARS:
            self.long_values[path] = text
        (self.view.others if path.startswith("sys/") else self.view.params)[key] = text

    def _files(self, local: Path, name: str, step: int | None) -> None:
        files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
        for file in files:
            data = file.read_bytes()
            entry = name if file == local else f"{name}/{file.relative_to(local).as_posix()}"
            self.view.files[entry] = [len(data), _sha256(data), step]

    def _metrics(self) -> None:
        for rows in series_rows(self.export, "float_series", ["float_value"]):
            steps = scaled(decimal_array_to_unscaled(rows.column("step")), self.multiplier)
            stamps = timestamps_ms(rows, self.export.start_ms or 0)
            values = np.asarray(
                pc.fill_null(rows.column("float_value"), float("nan")).to_numpy(zero_copy_only=False), dtype=np.float64
            )
            paths = np.asarray(rows.column("attribute_path").to_pylist(), dtype=object)
            for path in sorted(set(paths.tolist())):
                mask = paths == path
                self.view.metrics.setdefault(self.keys(path), PointDigest()).update(
                    steps[mask], stamps[mask], values[mask]
                )

    def _records(self, attribute_type: str, column: str) -> Iterator[tuple[str, int, int | None, Any]]:
        for rows in series_rows(self.export, attribute_type, [column]):
            yield from zip(
                rows.column("attribute_path").to_pylist(),
                decimal_array_to_unscaled(rows.column("step")).tolist(),
                pc.cast(rows.column("timestamp"), pa.int64()).to_pylist(),
                rows.column(column).to_pylist(),
                strict=True,
            )

    def _texts(self) -> None:
        for path, unscaled, stamp, value in self._records("string_series", "string_value"):
            record = [step_text(unscaled), value, stamp, self._step(unscaled)]
            self.view.texts.setdefault(path, RecordDigest()).add(record)

    def _histograms(self) -> None:
        for path, unscaled, stamp, value in self._records("histogram_series", "histogram_value"):
            value = value or {}
            record = [step_text(unscaled), stamp, value.get("edges"), value.get("values")]
            self.view.histograms.setdefault(path, RecordDigest()).add(record)
            if fits_3d(value):
                total = int(sum(value.get("values") or []))
                self.view.histograms_3d.setdefault(self.keys(path), RecordDigest()).add([self._step(unscaled), total])


# ----------------------------------------------------------------------------- comparing


def _digests(mapping: dict[str, RecordDigest]) -> dict[str, dict]:
    return {key: digest.to_json() for key, digest in mapping.items()}


def view_differences(project_id: str, run_id: str, expected: CometView, actual: CometView) -> list[Difference]:
    """Every way the archive's view differs from the expected one."""
    facts = {"project": expected.project, "name": expected.name, "tags": expected.tags}
    found = {"project": actual.project, "name": actual.name, "tags": actual.tags}
    return (
        compare_mappings(project_id, run_id, "run", facts, found)
        + compare_mappings(
            project_id,
            run_id,
            "param",
            {k: typed(v) for k, v in expected.params.items()},
            {k: typed(v) for k, v in actual.params.items()},
        )
        + compare_mappings(
            project_id,
            run_id,
            "other",
            {k: typed(v) for k, v in expected.others.items()},
            {k: typed(v) for k, v in actual.others.items()},
        )
        + compare_digests(project_id, run_id, "metric", expected.metrics, actual.metrics)
        + compare_mappings(project_id, run_id, "text", _digests(expected.texts), _digests(actual.texts))
        + compare_mappings(project_id, run_id, "histogram", _digests(expected.histograms), _digests(actual.histograms))
        + compare_mappings(
            project_id, run_id, "histogram-3d", _digests(expected.histograms_3d), _digests(actual.histograms_3d)
        )
        + compare_mappings(project_id, run_id, "artifact", expected.files, actual.files)
    )


def long_value_differences(
    project_id: str, run_id: str, expected: ExpectedComet, reader: ArchiveReader
) -> list[Difference]:
    """Values past 1000 characters: whole in their asset, the parameter / other a prefix of it that names the
    asset. The expected view then holds the archive's cut value (checked here) so the mappings compare equal."""
    differences = compare_mappings(project_id, run_id, "long-value", expected.long_values, reader.long_values)
    for path, whole in expected.long_values.items():
        key = expected.keys(path)
        holder = expected.view.others if path.startswith("sys/") else expected.view.params
        stored = (reader.view.others if path.startswith("sys/") else reader.view.params).get(key)
        head, marker, _ = str(stored).partition(" …[truncated: ")
        if not (marker and whole.startswith(head) and len(str(stored)) <= MAX_VALUE_CHARS):
            differences.append(Difference(project_id, run_id, "long-value", path, "cut value", "a prefix", stored))
        holder[key] = stored
    return differences


@dataclass
class CometValidator:
    """Validates exported runs against their offline Comet archives under `comet_dir`."""

    comet_dir: Path
    step_multiplier: int | None = None
    project_template: str | None = None

    @classmethod
    def from_options(cls, options, settings=None) -> CometValidator:
        comet_project("w/p", options.comet_project_template)  # a bad template: one line, before any work
        return cls(
            comet_dir=Path(os.path.abspath(os.path.expanduser(options.comet_dir or COMET_OFFLINE_DIR))),
            step_multiplier=options.step_multiplier,
            project_template=options.comet_project_template,
        )

    def validate(self, data_root: Path, files_root: Path, project_id: str, run_id: str) -> RunValidation:
        export = read_export(Path(data_root), Path(files_root), project_id, run_id)
        key = run_key(project_id, run_id)
        path = self.comet_dir / f"{key}.zip"
        try:
            with zipfile.ZipFile(path) as archive:
                reader = ArchiveReader(archive)
                actual = reader.read()
        except (FileNotFoundError, UnreadableArchive, zipfile.BadZipFile) as error:
            missing = Difference(project_id, run_id, "run", str(path), "missing", "a complete archive", str(error))
            return RunValidation(project_id, run_id, None, [missing])
        multiplier = expected_multiplier(self._series_steps(export), self.step_multiplier)
        loadable, beyond = series_beyond_int64(export, multiplier)
        expected_run = ExpectedComet(
            loadable, multiplier, reader.key_map, comet_project(project_id, self.project_template)
        )
        expected = expected_run.build()
        differences = (
            beyond
            + expected_run.keys.differences(project_id, run_id)
            + long_value_differences(project_id, run_id, expected_run, reader)
            + view_differences(project_id, run_id, expected, actual)
        )
        checked = {
            "params": len(expected.params),
            "others": len(expected.others),
            "metrics": len(expected.metrics),
            "points": sum(d.count for d in expected.metrics.values())
            + sum(d.count for d in expected.texts.values())
            + sum(d.count for d in expected.histograms.values()),
            "artifacts": len(expected.files),
        }
        return RunValidation(project_id, run_id, key, differences, checked)

    @staticmethod
    def _series_steps(export: ExportedRun) -> Iterator[np.ndarray]:
        """Steps of every series point, file series included (they all share the run's multiplier)."""
        for attribute_type in SERIES_WITH_STEPS:
            column = "file_value" if attribute_type == "file_series" else attribute_type.replace("_series", "_value")
            for rows in series_rows(export, attribute_type, [column]):
                yield decimal_array_to_unscaled(rows.column("step"))


__all__ = ["ArchiveReader", "CometValidator", "CometView", "ExpectedComet", "comet_project"]

"""GoodSeed validation: the GoodSeed run an export must give, by validation's own rules (README mapping table),
compared with the run read back through GoodSeed's own read API (goodseed.storage.read_run_meta, read_configs,
read_metrics, read_string_series): run facts, every config value, every metric and text point with its exact step
and time, the provenance and the list of attributes GoodSeed cannot hold."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from neptune_exporter.errors import InvalidOptionError, UnsupportedError
from neptune_exporter.model import STEP_SCALE, decimal_array_to_unscaled
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
from neptune_exporter.validation.rules import run_key, scaled, step_text

PARAMETER_TYPES = ("float", "int", "string", "bool", "datetime", "string_set")
OWN_KEYS = ("sys/id", "sys/state", "sys/closed_time")  # GoodSeed writes these on every run itself
MOVED_TO = "neptune.original/"
NAN_SERIES = "neptune.nan/"
ACCEPTED_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?")
NO_STEP = -(2**63)  # a GoodSeed step that is no exact step of the export
WHOLE = 2**53  # whole numbers up to this are exact in float64


def expected_run_id(project_id: str, run_id: str) -> str:
    """GoodSeed accepts ids of letters, digits, `_` and `-` (128 chars); any other id: cleaned + 12 hex of its key."""
    if len(run_id) <= 128 and ACCEPTED_ID.fullmatch(run_id):
        return run_id
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", run_id).strip("_-")[:100]
    return "-".join(part for part in (cleaned, run_key(project_id, run_id)[:12]) if part)


def expected_project(template: str | None, project_id: str) -> str:
    """The template with {project} (the Neptune project id), {workspace} and {name} filled in."""
    workspace, _, name = project_id.rpartition("/")
    try:
        return (template or "{project}").format(project=project_id, workspace=workspace, name=name)
    except (KeyError, IndexError, ValueError) as error:
        raise InvalidOptionError(
            f"--goodseed-project-template {template!r} is not a valid template ({error})",
            "validate with the template the load used",
        ) from None


def expected_key(path: str) -> str:
    """Attributes keep their path, except where GoodSeed or the provenance write: those move under neptune.original/."""
    return MOVED_TO + path if path in OWN_KEYS or path.startswith("neptune.") else path


def canonical(value: Any) -> tuple[str, Any]:
    """A config value as comparable data: its kind and an exact form (floats by repr, NaN-aware; times as UTC ISO)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", "0.0" if value == 0 and math.copysign(1, value) > 0 else repr(value))
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return ("datetime", moment.astimezone(UTC).isoformat())
    if isinstance(value, (set, frozenset, list)):
        return ("set", sorted(value))
    return ("str", value)


def goodseed_name(experiment: str | None) -> str | None:
    """GoodSeed names: at most 200 characters, no control, bidi-override or zero-width characters."""
    if not experiment or len(experiment) > 200:
        return None
    for ch in experiment:
        code = ord(ch)
        if code < 0x20 or 0x7F <= code <= 0x9F or 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
            return None
        if code in (0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0xFEFF):
            return None
    return experiment


def exact_in_real(unscaled: int, multiplier: int | None) -> bool:
    """A step GoodSeed's REAL (float64) holds exactly: the float nearest to it reads back (`step_of`) as that step."""
    return step_of(float(Decimal(int(unscaled) * (multiplier or 1)).scaleb(-STEP_SCALE)), multiplier) == (
        int(unscaled) * multiplier // 10**STEP_SCALE if multiplier else int(unscaled)
    )


def step_of(real: float, multiplier: int | None) -> int:
    """A GoodSeed step back as the export holds it: the nearest 6-decimal step as int64 millionths (no multiplier;
    steps are decimal(18,6)), or the whole scaled step, exactly (NO_STEP when the float is not whole)."""
    exact = Decimal(float(real))  # the float's exact binary value
    if multiplier:
        return int(exact) if exact == exact.to_integral_value() else NO_STEP
    return int(exact.quantize(Decimal(1).scaleb(-STEP_SCALE)).scaleb(STEP_SCALE))


def real_steps_back(reals: np.ndarray, multiplier: int | None) -> np.ndarray:
    """`step_of` of many floats: whole ones up to 2**53 directly, the rest one by one."""
    plain = (reals == np.floor(reals)) & (np.abs(reals) <= WHOLE)
    steps = np.zeros(len(reals), dtype=np.int64)
    steps[plain] = reals[plain].astype(np.int64) * (1 if multiplier else 10**STEP_SCALE)
    for i in np.flatnonzero(~plain).tolist():
        steps[i] = step_of(float(reals[i]), multiplier)
    return steps


def ms_of(logged_at: str) -> int:
    return round(datetime.fromisoformat(logged_at).timestamp() * 1000)


@dataclass
class ExpectedGoodseedRun:
    """What GoodSeed must hold for one export: configs, metric points, text records, attributes it cannot hold."""

    export: ExportedRun
    multiplier: int | None
    configs: dict[str, tuple[str, Any]] = field(default_factory=dict)
    metrics: dict[str, PointDigest] = field(default_factory=dict)
    texts: dict[str, RecordDigest] = field(default_factory=dict)
    histogram_keys: set[str] = field(default_factory=set)
    not_loaded: dict[str, str] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)

    def key(self, path: str) -> str:
        key = expected_key(path)
        if key != path:
            self.renamed[path] = key
        return key

    def build(self) -> ExpectedGoodseedRun:
        for path, attribute_type, value, _ in single_values(self.export):
            if attribute_type in (*FILE_TYPES, "file_series"):
                if (value.get("path") if isinstance(value, dict) else value) or None:
                    self.not_loaded[path] = attribute_type
            elif attribute_type in PARAMETER_TYPES:
                self.configs[self.key(path)] = canonical(float(value) if attribute_type == "float" else value)
        self._metrics()
        self._texts()
        return self

    def _steps(self, rows) -> np.ndarray:
        unscaled = decimal_array_to_unscaled(rows.column("step"))
        return scaled(unscaled, self.multiplier) if self.multiplier else unscaled

    def _metrics(self) -> None:
        fallback = self.export.start_ms or 0
        for rows in series_rows(self.export, "float_series", ["float_value"]):
            steps, stamps = self._steps(rows), timestamps_ms(rows, fallback)
            values = np.asarray(rows.column("float_value").to_numpy(zero_copy_only=False), dtype=np.float64)
            paths = np.asarray(rows.column("attribute_path").to_pylist(), dtype=object)
            for path in sorted(set(paths.tolist())):
                mine = paths == path
                nan = mine & np.isnan(values)
                kept = mine & ~nan
                if kept.any():
                    self.metrics.setdefault(self.key(path), PointDigest()).update(
                        steps[kept], stamps[kept], values[kept]
                    )
                for step, stamp in zip(steps[nan].tolist(), stamps[nan].tolist(), strict=True):
                    self.texts.setdefault(NAN_SERIES + self.key(path), RecordDigest()).add([step, "NaN", stamp])

    def _texts(self) -> None:
        fallback = self.export.start_ms or 0
        for attribute_type, column in (("string_series", "string_value"), ("histogram_series", "histogram_value")):
            for rows in series_rows(self.export, attribute_type, [column]):
                steps, stamps = self._steps(rows).tolist(), timestamps_ms(rows, fallback).tolist()
                paths, values = rows.column("attribute_path").to_pylist(), rows.column(column).to_pylist()
                for path, step, stamp, value in zip(paths, steps, stamps, values, strict=True):
                    key = self.key(path)
                    if attribute_type == "histogram_series":
                        self.histogram_keys.add(key)
                        value = json.dumps(
                            {"type": value.get("type"), "edges": value.get("edges"), "values": value.get("values")},
                            sort_keys=True,
                        )
                    self.texts.setdefault(key, RecordDigest()).add([step, value, stamp])


@dataclass
class GoodseedValidator:
    """Validates exported runs against GoodSeed's local storage under `home`."""

    home: Path
    project_template: str | None = None
    step_multiplier: int | None = None

    @classmethod
    def from_options(cls, options, settings=None) -> GoodseedValidator:
        try:
            from goodseed.config import get_home
        except ImportError:
            raise UnsupportedError(
                "validating GoodSeed needs the GoodSeed client, which is not installed",
                "pip install 'neptune-exporter[goodseed]'",
            ) from None
        home = get_home(options.goodseed_home or os.environ.get("GOODSEED_HOME") or None)
        return cls(home.expanduser().absolute(), options.goodseed_project_template, options.step_multiplier)

    def db_path(self, project_id: str, target_id: str) -> Path:
        from goodseed.config import get_run_db_path

        return get_run_db_path(expected_project(self.project_template, project_id), target_id, self.home)

    def validate(self, data_root: Path, files_root: Path, project_id: str, run_id: str) -> RunValidation:
        """Run facts, configs, every point and text record of one run against its export."""
        from goodseed.storage import read_configs, read_run_meta

        export = read_export(Path(data_root), Path(files_root), project_id, run_id)
        target_id = expected_run_id(project_id, run_id)
        db_path = self.db_path(project_id, target_id)
        configs = read_configs(db_path) if db_path.is_file() else {}
        marker = (configs.get("neptune.load_state"), configs.get("neptune.export_checksum"))
        if marker != ("complete", export.checksum):
            missing = Difference(project_id, run_id, "run", str(db_path), "missing", "a complete GoodSeed run", marker)
            return RunValidation(project_id, run_id, None, [missing])
        loadable, left_out = self._loadable(export)
        expected = ExpectedGoodseedRun(loadable, self.step_multiplier).build()
        meta = read_run_meta(db_path)
        differences = (
            left_out
            + self._facts(export, target_id, meta, configs, expected)
            + self._configs(export, configs, expected)
            + self._points(export, db_path, expected)
        )
        checked = {
            "params": len(expected.configs),
            "metrics": len(expected.metrics),
            "points": sum(d.count for d in expected.metrics.values()) + sum(d.count for d in expected.texts.values()),
            "texts": len(expected.texts),
            "not_loaded": len(expected.not_loaded),
        }
        return RunValidation(project_id, run_id, target_id, differences, checked)

    def _loadable(self, export: ExportedRun) -> tuple[ExportedRun, list[Difference]]:
        """The export less series GoodSeed cannot hold exactly (each a difference: the load failed it alone)."""
        differences: list[Difference] = []
        if self.step_multiplier:
            export, differences = series_beyond_int64(export, self.step_multiplier)
        inexact: dict[str, int] = {}
        for attribute_type in ("float_series", "string_series", "histogram_series"):
            for rows in series_rows(export, attribute_type, []):
                unscaled = decimal_array_to_unscaled(rows.column("step"))
                paths = rows.column("attribute_path")
                for path in pc.unique(paths).to_pylist():
                    if path in inexact:
                        continue
                    steps = np.unique(unscaled[np.asarray(pc.equal(paths, path))])
                    whole = scaled(steps, self.step_multiplier) if self.step_multiplier else steps
                    plain = (whole % (1 if self.step_multiplier else 10**STEP_SCALE) == 0) & (np.abs(whole) <= WHOLE)
                    checked = steps[~plain].tolist()  # whole steps up to 2**53 are exact floats; the rest one by one
                    bad = next((s for s in checked if not exact_in_real(s, self.step_multiplier)), None)
                    if bad is not None:
                        inexact[path] = bad
        for path, step in sorted(inexact.items()):
            differences.append(
                Difference(
                    export.project_id, export.run_id, "series", path, "inexact step", "float64 steps", step_text(step)
                )
            )
        return export.without(inexact), differences

    def _facts(
        self, export: ExportedRun, target_id: str, meta: dict, configs: dict, expected: ExpectedGoodseedRun
    ) -> list[Difference]:
        created = (
            datetime.fromtimestamp(export.start_ms / 1000, tz=UTC).isoformat()
            if export.start_ms is not None
            else meta.get("created_at")
        )
        want: dict[str, Any] = {
            "run_id": target_id,
            "project": expected_project(self.project_template, export.project_id),
        }
        want.update({"created_at": created, "status": "finished", "schema_version": "1"})
        if export.end_ms is not None:
            want["modified_at"] = datetime.fromtimestamp(export.end_ms / 1000, tz=UTC).isoformat()
        name = goodseed_name(export.experiment_name)
        if name:
            want["name"] = name
        got = {k: v for k, v in meta.items() if k != "closed_at"}
        found = compare_mappings(export.project_id, export.run_id, "run", want, got)
        if not meta.get("closed_at"):
            found.append(Difference(export.project_id, export.run_id, "run", "closed_at", "missing", "a time", None))
        own = {
            "sys/id": canonical(target_id),
            "sys/state": canonical("finished"),
            "sys/creation_time": canonical(created),
        }
        if name:
            own["sys/name"] = canonical(name)
        expected.configs = {**own, **expected.configs}
        return found

    def _configs(self, export: ExportedRun, configs: dict, expected: ExpectedGoodseedRun) -> list[Difference]:
        provenance = {
            "neptune.project": export.project_id,
            "neptune.run_id": export.run_id,
            "neptune.export_checksum": export.checksum,
            "neptune.load_state": "complete",
            "neptune.step_multiplier": self.step_multiplier or 1,
            "neptune.fork_parent": export.fork_parent,
            "neptune.fork_step": None if export.fork_step is None else float(export.fork_step),
        }
        want = {**expected.configs, **{k: canonical(v) for k, v in provenance.items() if v is not None}}
        got = {
            k: canonical(v)
            for k, v in configs.items()
            if k not in ("sys/closed_time", "neptune.key_map", "neptune.not_loaded")
        }
        found = compare_mappings(export.project_id, export.run_id, "param", want, got)
        recorded_keys = json.loads(configs.get("neptune.key_map") or "{}")
        found += compare_mappings(export.project_id, export.run_id, "key", expected.renamed, recorded_keys)
        recorded = json.loads(configs.get("neptune.not_loaded") or "{}")
        kinds = {path: reason.split(":")[0] for path, reason in recorded.items() if reason.partition(":")[2].strip()}
        found += compare_mappings(export.project_id, export.run_id, "not loaded", expected.not_loaded, kinds)
        return found

    def _points(self, export: ExportedRun, db_path: Path, expected: ExpectedGoodseedRun) -> list[Difference]:
        metrics: dict[str, PointDigest] = {}
        for path, steps, stamps, values in self._metric_chunks(db_path):
            metrics.setdefault(path, PointDigest()).update(steps, stamps, values)
        texts: dict[str, RecordDigest] = {}
        for point in self._text_points(db_path):
            value = point["value"]
            if point["path"] in expected.histogram_keys:
                value = _canonical_json(value)
            texts.setdefault(point["path"], RecordDigest()).add(
                [step_of(point["step"], self.step_multiplier), value, ms_of(point["logged_at"])]
            )
        found = compare_digests(export.project_id, export.run_id, "metric", expected.metrics, metrics)
        want = {k: d.to_json() for k, d in expected.texts.items()}
        got = {k: d.to_json() for k, d in texts.items()}
        return found + compare_mappings(export.project_id, export.run_id, "text-series", want, got)

    def _metric_chunks(self, db_path: Path) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
        from goodseed.storage import read_metrics

        by_path: dict[str, list[dict]] = {}
        for point in read_metrics(db_path):
            by_path.setdefault(point["path"], []).append(point)
        for path, points in by_path.items():
            reals, inverse = np.unique(np.array([p["step"] for p in points], dtype=np.float64), return_inverse=True)
            steps = real_steps_back(reals, self.step_multiplier)
            times = [p["logged_at"] for p in points]
            ms = {text: ms_of(text) for text in set(times)}  # each distinct step and time converted once
            yield (
                path,
                steps[inverse],
                np.array([ms[text] for text in times], dtype=np.int64),
                np.array([p["value"] for p in points], dtype=np.float64),
            )

    def _text_points(self, db_path: Path) -> list[dict]:
        from goodseed.storage import read_string_series

        return read_string_series(db_path)["points"]


def _canonical_json(text: str) -> str:
    try:
        return json.dumps(json.loads(text), sort_keys=True)
    except ValueError:
        return text

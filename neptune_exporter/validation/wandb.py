"""W&B validation: the W&B view an export must have, by validation's own rules (README mapping table), compared
with the run read back from its offline `.wandb` log (or `wandb.Api` online): run facts, config, every history
point with its step and row time, the completion marker, every artifact entry."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from neptune_exporter.errors import TargetUnavailableError
from neptune_exporter.model import STEP_SCALE, decimal_array_to_unscaled
from neptune_exporter.settings import WANDB_OFFLINE_DIR
from neptune_exporter.storage.exported_run import ExportedRun
from neptune_exporter.storage.wandb_log import (
    find_offline_runs,
    iter_history,
    read_run_log,
    run_log_path,
)
from neptune_exporter.validation.compare import (
    Difference,
    PointDigest,
    RecordDigest,
    compare_mappings,
)
from neptune_exporter.validation.export_view import (
    FILE_TYPES,
    read_export,
    series_beyond_int64,
    series_rows,
    series_steps,
    single_values,
    timestamps_ms,
)
from neptune_exporter.validation.report import RunValidation
from neptune_exporter.validation.rules import (
    KeyRule,
    RecordedKeys,
    expected_multiplier,
    run_key,
    scaled,
    step_text,
)
from neptune_exporter.validation.wandb_compare import (
    NO_TIME,
    HistoryDigest,
    WandbFacts,
    fact_differences,
    histogram_number,
    md5_base64,
)

KEYS = KeyRule(
    r"[/\w.\- ]", 250, reserved_prefixes=("_",), rename_reserved=("_",)
)  # W&B keeps `_step`, `_timestamp`, ... for itself
MAX_TAG_CHARS = 64
NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}  # W&B config would store them as null
HISTORY_TYPES = ("float_series", "histogram_series")
COMPLETE = {"neptune.load_state": "complete"}


def wandb_run_id(project_id: str, run_id: str) -> str:
    """The W&B run id of a Neptune run: its id lowercased to [a-z0-9_-] (40 chars) + 12 hex of its run key."""
    prefix = re.sub(r"[^a-z0-9_-]", "-", run_id.lower()).strip("-")[:40]
    return "-".join(filter(None, [prefix, run_key(project_id, run_id)[:12]]))


def config_value(attribute_type: str, value: Any) -> Any:
    """A single value as W&B config: native JSON, datetimes ISO 8601 UTC, sets sorted lists, NaN/±inf as text."""
    if attribute_type == "datetime":
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    if attribute_type == "string_set":
        return sorted(value)
    if isinstance(value, float) and not math.isfinite(value):
        return NON_FINITE[repr(value)]
    return value


class ExpectedWandbRun:
    """Builds the expected WandbFacts of one export (keys from the recorded `neptune.key_map`, checked)."""

    def __init__(self, export: ExportedRun, multiplier: int, key_map: dict, target_run_id: str):
        self.export, self.multiplier, self.target_run_id = export, multiplier, target_run_id
        self.keys = RecordedKeys(KEYS, dict(key_map))
        self.config: dict[str, Any] = {}
        self.tags: list[str] = []
        self.files: dict[str, dict[str, str]] = {}  # attribute → {path inside its artifact: md5}
        self.strings: dict[str, RecordDigest] = {}  # string series attribute → records

    def facts(self) -> WandbFacts:
        for path, attribute_type, value, step in single_values(self.export):
            self._single(path, attribute_type, value, step)
        self._strings()
        offset = self.step_offset()
        history = self._history(offset)
        accepted = {o: t for o, t in self.keys.recorded.items() if self.keys(o) == t}  # the renames validation accepts
        config = {**self.config, **self.provenance(offset), "neptune.key_map": accepted}
        summary = {**COMPLETE, "neptune.export_checksum": self.export.checksum}
        return WandbFacts(
            self.target_run_id,
            self.export.run_id,
            self.export.experiment_name or "",
            self.tags,
            config,
            summary,
            history,
            self.files,
        )

    def _single(self, path: str, attribute_type: str, value: Any, step: int | None) -> None:
        if attribute_type in FILE_TYPES or attribute_type == "file_series":
            local = self.export.local_file(path, value)
            prefix = f"step_{step_text(step or 0)}/" if attribute_type == "file_series" else ""
            if local is not None:
                self.files.setdefault(path, {}).update(_entries(local, prefix))
            return
        self.config[self.keys(path)] = config_value(attribute_type, value)
        if path == "sys/tags":
            self.tags = sorted(tag[:MAX_TAG_CHARS] for tag in value)

    def _strings(self) -> None:
        for rows in series_rows(self.export, "string_series", ["string_value"]):
            unscaled = decimal_array_to_unscaled(rows.column("step")).tolist()
            stamps = timestamps_ms(rows, NO_TIME).tolist()
            for path, step, stamp, value in zip(
                rows.column("attribute_path").to_pylist(),
                unscaled,
                stamps,
                rows.column("string_value").to_pylist(),
                strict=True,
            ):
                self.strings.setdefault(path, RecordDigest()).add(
                    [step_text(step), value, None if stamp == NO_TIME else stamp]
                )

    def step_offset(self) -> int:
        """Added to every step so the lowest series step is 0 when some are negative (W&B drops them)."""
        lowest = min((int(chunk.min()) for chunk in series_steps(self.export) if chunk.size), default=0)
        return max(0, -int(scaled(np.array([lowest]), self.multiplier)[0]))

    def _points(self, offset: int):
        """(original paths, W&B steps, times, numbers) of history points, part by part (histograms hashed)."""
        for attribute_type in HISTORY_TYPES:
            column = "float_value" if attribute_type == "float_series" else "histogram_value"
            for rows in series_rows(self.export, attribute_type, [column]):
                steps = scaled(decimal_array_to_unscaled(rows.column("step")), self.multiplier) + offset
                if attribute_type == "float_series":
                    numbers = np.asarray(
                        pc.fill_null(rows.column(column), float("nan")).to_numpy(zero_copy_only=False), dtype=np.float64
                    )
                else:
                    numbers = np.array(
                        [
                            histogram_number(
                                {"values": (h or {}).get("values") or [], "bins": (h or {}).get("edges") or []}
                            )
                            for h in rows.column(column).to_pylist()
                        ]
                    )
                yield (
                    np.asarray(rows.column("attribute_path").to_pylist(), dtype=object),
                    steps,
                    timestamps_ms(rows, NO_TIME),
                    numbers,
                )

    def _history(self, offset: int) -> HistoryDigest:
        """Rows are steps; a row's time is its earliest point time; every point carries its own time."""
        row_steps, row_times, row_keys = _rows_of(self._points(offset))
        history = HistoryDigest()
        history.rows.update(row_steps, row_times, row_keys.astype(np.float64))
        last: dict[str, tuple[int, float]] = {}
        for paths, steps, own_times, numbers in self._points(offset):
            # every point keeps its own time (its row's when it has none: W&B rows carry one `_timestamp`)
            times = np.where(own_times != NO_TIME, own_times, row_times[np.searchsorted(row_steps, steps)])
            for path in set(paths.tolist()):
                mask = paths == path
                key = self.keys(path)
                history.series.setdefault(key, PointDigest()).update(steps[mask], times[mask], numbers[mask])
                top = int(np.argmax(steps[mask]))
                if key not in last or steps[mask][top] >= last[key][0]:
                    last[key] = (int(steps[mask][top]), float(numbers[mask][top]))
        history.last = {key: number for key, (_, number) in last.items()}
        return history

    def provenance(self, offset: int) -> dict[str, Any]:
        export = self.export
        return {
            "neptune.step_offset": offset,
            "neptune.project": export.project_id,
            "neptune.run_id": export.run_id,
            "neptune.experiment": export.experiment_name,
            "neptune.fork_parent": export.fork_parent,
            "neptune.fork_step": None if export.fork_step is None else float(export.fork_step),
            "neptune.step_multiplier": self.multiplier,
            "neptune.export_checksum": export.checksum,
            **COMPLETE,
        }


def _entries(local: Path, prefix: str) -> dict[str, str]:
    """Artifact entries of an exported file (its name) or folder (its name / relative path), with md5 digests."""
    if not local.is_dir():
        return {f"{prefix}{local.name}": md5_base64(local)}
    return {
        f"{prefix}{local.name}/{f.relative_to(local).as_posix()}": md5_base64(f)
        for f in sorted(local.rglob("*"))
        if f.is_file()
    }


def _rows_of(chunks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted distinct steps, earliest time per step or NO_TIME, points per step) over all chunks (memory: steps
    only). Times before 1970 are times like any other."""
    steps, times, counts = np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
    never = np.iinfo(np.int64).max
    for _, chunk_steps, chunk_times, _ in chunks:
        steps = np.concatenate([steps, chunk_steps])
        times = np.concatenate([times, np.where(chunk_times != NO_TIME, chunk_times, never)])
        counts = np.concatenate([counts, np.ones(len(chunk_steps), np.int64)])
        order = np.argsort(steps, kind="stable")
        steps, times, counts = steps[order], times[order], counts[order]
        steps, starts = np.unique(steps, return_index=True)
        times, counts = (
            np.minimum.reduceat(times, starts) if len(starts) else times,
            np.add.reduceat(counts, starts) if len(starts) else counts,
        )
    return steps, np.where(times == never, NO_TIME, times), counts


def _string_records(entries: list) -> RecordDigest:
    """Records of a string-series artifact's `*.table.json` files (columns step, value, timestamp)."""
    digest = RecordDigest()
    for entry in entries:
        if entry.path.endswith(".table.json") and Path(entry.local_path).is_file():
            for step, value, moment in json.loads(Path(entry.local_path).read_text(encoding="utf-8"))["data"]:
                stamp = None if moment is None else round(datetime.fromisoformat(moment).timestamp() * 1000)
                digest.add([step_text(int(Decimal(step).scaleb(STEP_SCALE))), value, stamp])
    return digest


@dataclass
class WandbValidator:
    """Validates exported runs against W&B: offline runs under `wandb_dir`, or the server when an API key is set."""

    wandb_dir: Path
    step_multiplier: int | None = None
    entity: str | None = None
    project_template: str | None = None
    api_key: str | None = None
    base_url: str | None = None

    @classmethod
    def from_options(cls, options, settings=None) -> WandbValidator:
        """Build from `load.LoadOptions`; online exactly when WANDB_API_KEY is set (like the load)."""
        return cls(
            wandb_dir=Path(options.wandb_dir or WANDB_OFFLINE_DIR).absolute(),
            step_multiplier=options.step_multiplier,
            entity=options.wandb_entity or os.environ.get("WANDB_ENTITY") or None,
            project_template=options.wandb_project_template,
            api_key=os.environ.get("WANDB_API_KEY") or None,
            base_url=os.environ.get("WANDB_BASE_URL") or None,
        )

    def validate(self, data_root: Path, files_root: Path, project_id: str, run_id: str) -> RunValidation:
        """Run facts, config, every history point, summary marker and artifacts of one run against its export."""
        export = read_export(Path(data_root), Path(files_root), project_id, run_id)
        target_run_id = wandb_run_id(project_id, run_id)
        actual, strings = self._online(export, target_run_id) if self.api_key else self._offline(export, target_run_id)
        if actual is None:
            missing = Difference(project_id, run_id, "run", target_run_id, "missing", "a complete W&B run", None)
            return RunValidation(project_id, run_id, None, [missing])
        recorded = dict(actual.config.get("neptune.key_map") or {})
        multiplier = expected_multiplier(series_steps(export), self.step_multiplier)
        loadable, beyond = series_beyond_int64(export, multiplier)
        expected_run = ExpectedWandbRun(loadable, multiplier, recorded, target_run_id)
        expected = expected_run.facts()
        differences = (
            beyond
            + expected_run.keys.differences(project_id, run_id)
            + fact_differences(project_id, run_id, expected, actual)
            + self._compare_strings(export, expected_run.strings, strings)
        )
        checked = {
            "params": len(expected.config),
            "metrics": len(expected.history.series),
            "points": sum(d.count for d in expected.history.series.values()),
            "rows": expected.history.rows.count,
            "artifacts": sum(len(e) for e in expected.artifacts.values())
            + sum(len(entries) for entries, _ in strings.values()),
        }
        return RunValidation(project_id, run_id, target_run_id, differences, checked)

    def _compare_strings(
        self, export: ExportedRun, expected: dict[str, RecordDigest], actual: dict[str, tuple[list, int | None]]
    ) -> list[Difference]:
        """Offline: every (step, value, time) record of the staged tables; online: the artifact's recorded count."""
        if self.api_key:
            want: dict[str, Any] = {k: d.count for k, d in expected.items()}
            got: dict[str, Any] = {k: count for k, (_, count) in actual.items()}
        else:
            want = {k: d.to_json() for k, d in expected.items()}
            got = {k: _string_records(entries).to_json() for k, (entries, _) in actual.items()}
        return compare_mappings(export.project_id, export.run_id, "string-series", want, got)

    # ---------------------------------------------------------------- offline
    def _offline(
        self, export: ExportedRun, target_run_id: str
    ) -> tuple[WandbFacts | None, dict[str, tuple[list, int | None]]]:
        """The newest offline run of this id that finished with the completion marker and this export's checksum."""
        for folder in reversed(find_offline_runs(self.wandb_dir, target_run_id)):
            path = run_log_path(folder)
            if path is None:
                continue
            log = read_run_log(path)
            marker = {"neptune.load_state": "complete", "neptune.export_checksum": export.checksum}
            if not log.finished or any(log.summary.get(k) != v for k, v in marker.items()):
                continue
            files: dict[str, dict[str, str]] = {}
            strings: dict[str, tuple[list, int | None]] = {}
            for artifact in log.artifacts:
                attribute = artifact.metadata.get("neptune_attribute", artifact.name)
                if artifact.metadata.get("neptune_type") == "string_series":
                    strings[attribute] = (artifact.entries, None)
                else:
                    files[attribute] = {
                        e.path: e.digest if Path(e.local_path).is_file() else "staged copy missing"
                        for e in artifact.entries
                    }
            history = HistoryDigest().add_rows(iter_history(path))
            return WandbFacts(
                log.run_id, log.name, log.group, log.tags, log.config, log.summary, history, files
            ), strings
        return None, {}

    # ---------------------------------------------------------------- online
    def project_name(self, project_id: str) -> str:
        """The W&B project: the template ({project}, {workspace}, {project_id}) cleaned to [A-Za-z0-9_.-], 128 chars."""
        workspace, _, project = project_id.rpartition("/")
        name = (self.project_template or "{project}").format(
            project=project, workspace=workspace, project_id=project_id
        )
        return re.sub(r"[^A-Za-z0-9_.\-]", "-", name)[:128] or "neptune"

    def _online(
        self, export: ExportedRun, target_run_id: str
    ) -> tuple[WandbFacts | None, dict[str, tuple[list, int | None]]]:
        import wandb

        overrides = {"entity": self.entity, **({"base_url": self.base_url} if self.base_url else {})}
        path = f"{self.entity}/{self.project_name(export.project_id)}/{target_run_id}"
        try:
            run = wandb.Api(api_key=self.api_key, overrides=overrides, timeout=60).run(path)
        except (wandb.errors.CommError, ValueError) as error:
            if any(text in str(error).lower() for text in ("not found", "could not find", "404")):
                return None, {}
            raise TargetUnavailableError(
                f"W&B failed to return run {path}: {error}", "retry later or check WANDB_BASE_URL"
            ) from None
        summary = dict(run.summary)
        if summary.get("neptune.load_state") != "complete" or summary.get("neptune.export_checksum") != export.checksum:
            return None, {}
        history = HistoryDigest().add_rows(_plain_rows(run.scan_history(page_size=1000)))
        files: dict[str, dict[str, str]] = {}
        strings: dict[str, tuple[list, int | None]] = {}
        for artifact in run.logged_artifacts():
            attribute = artifact.metadata.get("neptune_attribute", artifact.name.split(":")[0])
            if artifact.metadata.get("neptune_type") == "string_series":
                strings[attribute] = (list(artifact.manifest.entries), artifact.metadata.get("count"))
            else:
                files[attribute] = {name: entry.digest for name, entry in artifact.manifest.entries.items()}
        return WandbFacts(
            target_run_id, run.name or "", run.group or "", list(run.tags), dict(run.config), summary, history, files
        ), strings


_NON_FINITE_TEXT = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _plain_rows(rows):
    """API rows → rows as logged: absent keys dropped, NaN/±inf (sent as text) back to floats."""
    for row in rows:
        yield {k: _NON_FINITE_TEXT.get(v, v) if isinstance(v, str) else v for k, v in row.items() if v is not None}

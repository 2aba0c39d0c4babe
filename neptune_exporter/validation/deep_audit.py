"""`validate --against … --deep`: every point of every series and every single file's content re-read from the server
and compared with the export, window by window (the server's windows tile the step line; the export's rows of one
window come from the Parquet row groups whose statistics overlap it), so memory grows with the window and one row
group, never with the series."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_exporter.exporters.audit_facts import RunFacts, Window, normal
from neptune_exporter.model import STEP_SCALE, decimal_array_to_unscaled, format_step, resolve_file_value
from neptune_exporter.storage.exported_run import ExportedRun
from neptune_exporter.storage.files import file_sha256
from neptune_exporter.storage.parquet import read_row_group, row_group_ranges, run_parts
from neptune_exporter.validation.compare import Difference, short

EXAMPLES = 5  # differing values named one by one per series; the rest are counted
SERIES_TYPES = ("float_series", "string_series", "histogram_series")


@dataclass
class SeriesTally:
    """What the deep comparison of one series found: points compared, values differing, points on one side."""

    compared: int = 0
    changed: list[tuple[int, Any, Any]] = field(default_factory=list)  # first EXAMPLES (step, server, export)
    changed_count: int = 0
    only_server: list[int] = field(default_factory=list)  # first EXAMPLES steps
    only_server_count: int = 0
    only_export: list[int] = field(default_factory=list)
    only_export_count: int = 0

    def add_only(self, side: str, steps: np.ndarray) -> None:
        if not steps.size:
            return
        examples: list[int] = getattr(self, f"only_{side}")
        examples += [int(s) for s in steps[: EXAMPLES - len(examples)]]
        setattr(self, f"only_{side}_count", getattr(self, f"only_{side}_count") + int(steps.size))

    def differences(self, diff: Callable[..., Difference], path: str) -> list[Difference]:
        """The named differences: each of the first changed values, then counts with example steps."""
        found = [diff("point", path, f"value at step {format_step(s)}", a, b) for s, a, b in self.changed]
        if self.changed_count > len(self.changed):
            found.append(diff("point", path, "values differ", self.changed_count, f"{len(self.changed)} named above"))
        for side, where in (("server", "only on the server"), ("export", "only in the export")):
            count = getattr(self, f"only_{side}_count")
            if count:
                steps = ", ".join(format_step(s) for s in getattr(self, f"only_{side}"))
                more = " …" if count > EXAMPLES else ""
                found.append(diff("point", path, f"{count} point(s) {where}", count, f"steps {steps}{more}"))
        return found


class ExportSeries:
    """One series of the export read window by window: only the row groups whose statistics may hold the window's
    steps are read, the last one decoded is kept (consecutive windows share it), so memory stays one row group."""

    def __init__(self, export: ExportedRun, path: str, attribute_type: str):
        self.path, self.attribute_type = path, attribute_type
        self.column = attribute_type.removesuffix("_series") + "_value"
        self.groups = [
            (part, index, _unscaled(steps[0]), _unscaled(steps[1]))
            for part in run_parts(export.data_root, export.project_id, export.run_id)
            for index, (paths, steps) in enumerate(
                zip(row_group_ranges(part, "attribute_path"), row_group_ranges(part, "step"), strict=True)
            )
            if paths[0] is None or paths[0] <= path <= paths[1]
        ]
        self.cached: tuple[tuple[Path, int], np.ndarray, pa.Array] | None = None

    def window(self, window: Window) -> tuple[np.ndarray, Any]:
        """The export's points inside a window (step > low, step <= high), sorted by step."""
        steps_parts, value_parts = [], []
        for part, index, lowest, highest in self.groups:
            if (window.low is not None and highest is not None and highest <= window.low) or (
                window.high is not None and lowest is not None and lowest > window.high
            ):
                continue
            steps, values = self._group(part, index)
            keep = np.ones(steps.size, dtype=bool)
            if window.low is not None:
                keep &= steps > window.low
            if window.high is not None:
                keep &= steps <= window.high
            if keep.any():
                steps_parts.append(steps[keep])
                value_parts.append(values.filter(pa.array(keep)))
        if not steps_parts:
            return np.empty(0, dtype=np.int64), _plain_values(self.attribute_type, pa.array([], pa.float64()))
        steps = np.concatenate(steps_parts)
        order = np.argsort(steps, kind="stable")
        values = pa.concat_arrays(value_parts).take(pa.array(order))
        return steps[order], _plain_values(self.attribute_type, values)

    def _group(self, part: Path, index: int) -> tuple[np.ndarray, pa.Array]:
        """The series' rows of one row group (the last one read is kept)."""
        if self.cached is None or self.cached[0] != (part, index):
            table = read_row_group(part, index, ["attribute_path", "step", self.column])
            rows = table.filter(pc.equal(table.column("attribute_path"), self.path))
            steps = decimal_array_to_unscaled(rows.column("step"))
            self.cached = ((part, index), steps, rows.column(self.column).combine_chunks())
        return self.cached[1], self.cached[2]


def _unscaled(step: Decimal | None) -> int | None:
    """A decimal step statistic in millionths (the export's step unit)."""
    return None if step is None else int(step.scaleb(STEP_SCALE))


def _plain_values(attribute_type: str, values: pa.Array) -> Any:
    if attribute_type == "float_series":
        return values.to_numpy(zero_copy_only=False).astype(np.float64)
    return [normal(v) for v in values.to_pylist()]


def compare_window(tally: SeriesTally, attribute_type: str, window: Window, export: tuple[np.ndarray, Any]) -> None:
    """Add one window's comparison to the tally (values at common steps; steps on one side only)."""
    server_steps, export_steps = window.steps, export[0]
    order = np.argsort(server_steps, kind="stable")
    server_steps = server_steps[order]
    server_values = _ordered(window.values, order, attribute_type)
    common, at_server, at_export = np.intersect1d(server_steps, export_steps, assume_unique=True, return_indices=True)
    tally.compared += int(common.size)
    tally.add_only("server", np.setdiff1d(server_steps, common, assume_unique=True))
    tally.add_only("export", np.setdiff1d(export_steps, common, assume_unique=True))
    for index in _changed(attribute_type, server_values, export[1], at_server, at_export):
        tally.changed_count += 1
        if len(tally.changed) < EXAMPLES:
            server = server_values[at_server[index]]
            exported = export[1][at_export[index]]
            tally.changed.append((int(common[index]), short(normal(server)), short(normal(exported))))


def _ordered(values: Any, order: np.ndarray, attribute_type: str) -> Any:
    if attribute_type == "float_series":
        return np.asarray(values, dtype=np.float64)[order]
    return [normal(values[i]) for i in order]


def _changed(attribute_type: str, server: Any, export: Any, at_server, at_export) -> Iterable[int]:
    """Positions (in the common steps) whose values differ; NaN equals NaN."""
    if attribute_type == "float_series":
        a, b = server[at_server], export[at_export]
        return np.flatnonzero(~((a == b) | (np.isnan(a) & np.isnan(b))))
    return [i for i, (s, e) in enumerate(zip(at_server, at_export, strict=True)) if server[s] != export[e]]


def deep_series(
    diff: Callable[..., Difference], export: ExportedRun, path: str, attribute_type: str, windows: Iterator[Window]
) -> tuple[int, list[Difference]]:
    """(points compared, differences) of one series, window by window."""
    tally, stored = SeriesTally(), ExportSeries(export, path, attribute_type)
    for window in windows:
        compare_window(tally, attribute_type, window, stored.window(window))
    return tally.compared, tally.differences(diff, path)


def exported_file(export: ExportedRun, path: str) -> Path | None:
    """The local copy of a single file attribute (None when the export holds none)."""
    for batch in export.batches(columns=["attribute_path", "file_value"]):
        rows = batch.filter(pc.equal(batch.column("attribute_path"), path))
        if rows.num_rows:
            local = resolve_file_value(export.files_root, export.project_id, rows.column("file_value")[0].as_py())
            return local if local is not None and local.is_file() else None
    return None


def deep_file(diff: Callable[..., Difference], export: ExportedRun, path: str, server_sha256: str) -> list[Difference]:
    """The export's copy of one file against the sha256 of the server's bytes."""
    local = exported_file(export, path)
    exported = None if local is None else file_sha256(local)
    return [] if exported == server_sha256 else [diff("file", path, "content (sha256)", server_sha256, exported)]


def deep_run(
    reader: Any, project_id: str, source: RunFacts, exported: RunFacts, export: ExportedRun
) -> tuple[dict, list[Difference]]:
    """Every point of every series and every single file both sides have, of one run: (counts checked, differences)."""

    def diff(kind, key, problem, expected, actual):
        return Difference(project_id, source.run_id, kind, key, problem, short(expected), short(actual))

    found: list[Difference] = []
    points = 0
    for path in sorted(source.series.keys() & exported.series.keys()):
        attribute_type = source.types[path]
        if attribute_type not in SERIES_TYPES or exported.types.get(path) != attribute_type:
            continue
        compared, differences = deep_series(
            diff, export, path, attribute_type, reader.series_windows(project_id, source.run_id, path, attribute_type)
        )
        points += compared
        found += differences
    files = sorted(source.file_sizes.keys() & exported.file_sizes.keys())
    for path in files:
        found += deep_file(diff, export, path, reader.file_sha256(project_id, source.run_id, path))
    return {"points": points, "files_hashed": len(files)}, found

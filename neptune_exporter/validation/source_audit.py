"""The export compared with the Neptune server it came from (`validate --against neptune3|neptune2`): run list,
attribute names and types, atom values, series tails (count, first/last step, last value where the API gives them
cheaply) and file sizes. The export side is read straight from storage; the source side by a reader per client."""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from neptune_exporter.errors import InvalidOptionError, NeptuneExporterError, OutputPathError
from neptune_exporter.exporters.audit_facts import RunFacts, SeriesFacts, Window, normal
from neptune_exporter.model import STEP_SCALE, decimal_array_to_unscaled, resolve_file_value
from neptune_exporter.retry import call_with_retries
from neptune_exporter.selection import RunSelection, check_run_selection, run_selection_from_json, run_selection_to_json
from neptune_exporter.settings import Settings
from neptune_exporter.storage.exported_run import ExportedRun, list_stored_runs
from neptune_exporter.validation.compare import Difference, short
from neptune_exporter.validation.deep_audit import deep_run
from neptune_exporter.validation.report import RunValidation, ValidationReport

SERIES_TYPES = ("float_series", "string_series", "histogram_series")
FILE_TYPES = ("file", "file_series", "file_set", "artifact")
READERS = {  # --against → "module:factory(api_token, settings)"
    "neptune3": "neptune_exporter.exporters.neptune3.audit:Neptune3Audit",
    "neptune2": "neptune_exporter.exporters.neptune2.audit:Neptune2Audit",
}
MODIFIED = "sys/modification_time"
UNAVAILABLE = "not available without a full download"
FILES_CHECKED = "size only (the server reports no hash); use --deep for content"


class SourceReader(Protocol):
    """A Neptune client's read-only view, batched: request count grows with runs × attributes, never points."""

    unavailable: tuple[str, ...]  # series figures this source cannot give without a full download
    counts_run_points: bool  # whether it reports a run's total of series points (3.x: where the server reports it)

    def run_ids(self, project_id: str, selection: RunSelection) -> list[str]: ...

    def read(self, project_id: str, run_ids: list[str]) -> Iterator[RunFacts]: ...

    def series_windows(self, project_id: str, run_id: str, path: str, attribute_type: str) -> Iterator[Window]:
        """--deep: every point of one series, in windows that tile the step line (bounded size each)."""
        ...

    def file_sha256(self, project_id: str, run_id: str, path: str) -> str:
        """--deep: sha256 of a single file's bytes as the server serves them."""
        ...


@dataclass(frozen=True)
class AuditOptions:
    """What to compare: source kind, export folders, selection (projects required; runs selected as `export` does)."""

    against: str
    data_path: str
    files_path: str
    projects: tuple[str, ...]
    runs: RunSelection = RunSelection()
    report_path: str | None = None
    deep: bool = False  # re-read every point and every single file's bytes (bounded memory, many requests)
    api_token: str | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict:
        """Every option except the token."""
        return {
            "against": self.against,
            "data_path": self.data_path,
            "files_path": self.files_path,
            "projects": list(self.projects),
            "runs": run_selection_to_json(self.runs),
            "report_path": self.report_path,
            "deep": self.deep,
        }

    @classmethod
    def from_json(cls, data: dict, api_token: str | None = None) -> AuditOptions:
        return cls(
            against=data["against"],
            data_path=data["data_path"],
            files_path=data["files_path"],
            projects=tuple(data.get("projects") or ()),
            runs=run_selection_from_json(data.get("runs") or {}),
            report_path=data.get("report_path"),
            deep=bool(data.get("deep", False)),
            api_token=api_token,
        )


def make_reader(options: AuditOptions, settings: Settings) -> SourceReader:
    """The source reader named by `--against`, with the token of the options (else NEPTUNE_API_TOKEN)."""
    return reader_class(options.against)(options.api_token, settings)


# ----------------------------------------------------------------------------- normalised values


def same(expected: Any, actual: Any) -> bool:
    """Equal, with NaN equal to NaN (also inside lists and dicts)."""
    if isinstance(expected, float) and isinstance(actual, float):
        return (math.isnan(expected) and math.isnan(actual)) or expected == actual
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(same(a, b) for a, b in zip(expected, actual, strict=True))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(same(expected[k], actual[k]) for k in expected)
    return expected == actual


# ----------------------------------------------------------------------------- the export side


def _value_column(attribute_type: str) -> str:
    if attribute_type in FILE_TYPES:
        return "file_value"
    return attribute_type.removesuffix("_series") + "_value"


def _add_series_rows(facts: RunFacts, path: str, attribute_type: str, rows: pa.RecordBatch) -> None:
    """Count, step range and the value at the highest step (last row wins on a tie)."""
    steps = decimal_array_to_unscaled(rows.column("step"))
    if not steps.size:
        return
    known = facts.series.setdefault(path, SeriesFacts(count=0))
    known.count = (known.count or 0) + int(steps.size)
    last = int(np.flatnonzero(steps == steps.max())[-1])
    first, high = float(steps.min()) / 10**STEP_SCALE, float(steps[last]) / 10**STEP_SCALE
    known.first_step = first if known.first_step is None else min(known.first_step, first)
    if known.last_step is None or high >= known.last_step:
        known.last_step = high
        known.last_value = normal(rows.column(_value_column(attribute_type))[last].as_py())


def export_facts(export: ExportedRun) -> RunFacts:
    """The run as stored on disk (rows read part by part), with the sizes of its single files."""
    facts, file_series_points = RunFacts(export.run_id), 0
    for batch in export.batches():
        for path, attribute_type in sorted(set(zip(*(batch.column(c).to_pylist() for c in _KEYS), strict=True))):
            facts.types[path] = attribute_type
            rows = _rows_of(batch, path)
            if attribute_type == "file_series":
                file_series_points += rows.num_rows
            if attribute_type in SERIES_TYPES:
                _add_series_rows(facts, path, attribute_type, rows)
            elif attribute_type == "file":
                local = resolve_file_value(export.files_root, export.project_id, rows.column("file_value")[0].as_py())
                facts.file_sizes[path] = local.stat().st_size if local is not None and local.is_file() else -1
            elif attribute_type not in FILE_TYPES:
                facts.atoms[path] = normal(rows.column(_value_column(attribute_type))[0].as_py())
    facts.series_points = file_series_points + sum(series.count or 0 for series in facts.series.values())
    return facts


_KEYS = ("attribute_path", "attribute_type")


def _rows_of(batch: pa.RecordBatch, path: str) -> pa.RecordBatch:
    import pyarrow.compute as pc

    return batch.filter(pc.equal(batch.column("attribute_path"), path))


# ----------------------------------------------------------------------------- comparing one run


def compare_run(project_id: str, source: RunFacts, export: RunFacts, unavailable: Iterable[str]) -> list[Difference]:
    """Every way the export differs from the server for one run ("expected" is always the server's figure)."""
    diff = lambda kind, key, problem, expected, actual: Difference(  # noqa: E731
        project_id, source.run_id, kind, key, problem, short(expected), short(actual)
    )
    found: list[Difference] = []
    for path in sorted(source.types.keys() - export.types.keys()):
        if _empty_series(source.series.get(path)):
            continue  # a series without points has no rows to store
        found.append(diff("attribute", path, "missing from export", source.types[path], None))
    for path in sorted(export.types.keys() - source.types.keys()):
        found.append(diff("attribute", path, "not on the server", None, export.types[path]))
    for path in sorted(source.types.keys() & export.types.keys()):
        if source.types[path] != export.types[path]:
            found.append(diff("attribute", path, "type", source.types[path], export.types[path]))
    changed = changed_since_export(source, export)
    for path in sorted(source.atoms.keys() & export.atoms.keys()):
        if not same(source.atoms[path], export.atoms[path]):
            problem = "newer on the server" if changed and path == MODIFIED else "value"
            found.append(diff("atom", path, problem, source.atoms[path], export.atoms[path]))
    for path in sorted(source.series.keys() & export.series.keys()):
        found += _series_differences(diff, path, source.series[path], export.series[path], set(unavailable), changed)
    for path in sorted(source.file_sizes.keys() & export.file_sizes.keys()):
        if source.file_sizes[path] != export.file_sizes[path]:
            found.append(diff("file", path, "size", source.file_sizes[path], export.file_sizes[path]))
    if source.series_points is not None and source.series_points != export.series_points:
        more = changed and source.series_points > (export.series_points or 0)
        problem = "source has more series points" if more else "series points (all series together)"
        found.append(diff("run", "series points", problem, source.series_points, export.series_points))
    return found


def changed_since_export(source: RunFacts, export: RunFacts) -> bool:
    """The run was modified on the server after it was exported (its sys/modification_time is later): a series
    longer on the server is then "source has more", not a point the export lost."""
    server, exported = source.atoms.get(MODIFIED), export.atoms.get(MODIFIED)
    return isinstance(server, str) and isinstance(exported, str) and server > exported


def _empty_series(series: SeriesFacts | None) -> bool:
    return series is not None and series.last_step is None and not series.count


def _series_differences(
    diff, path: str, source: SeriesFacts, export: SeriesFacts, unavailable: set[str], changed: bool
) -> list[Difference]:
    found = []
    longer = source.last_step is not None and export.last_step is not None and source.last_step > export.last_step
    if changed and longer:
        more = f"last step {source.last_step:g} on the server, {export.last_step:g} in the export"
        if source.count is not None and export.count is not None:
            more += f"; {source.count} points on the server, {export.count} in the export"
        found.append(diff("series", path, "source has more", source.last_step, f"{export.last_step} ({more})"))
        return found
    for name in ("count", "first_step", "last_step", "last_value"):
        expected, actual = getattr(source, name), getattr(export, name)
        if name.replace("_", " ") in unavailable or expected is None and name != "last_value":
            continue
        if not same(normal(expected), normal(actual)):
            found.append(diff("series", path, name.replace("_", " "), expected, actual))
    return found


# ----------------------------------------------------------------------------- the whole audit


@dataclass
class SourceAuditReport(ValidationReport):
    """Target validation's report, plus what this source cannot give without a full download (said, not hidden)."""

    not_compared: list[str] = field(default_factory=list)

    @property
    def not_on_server(self) -> list[RunValidation]:
        """Runs in the export that the server no longer lists (not differences)."""
        return [run for run in self.runs if run.checked.get("not_on_server")]

    def to_json(self) -> dict:
        data = super().to_json()
        data["not_compared"] = list(self.not_compared)
        data["runs_not_on_server"] = [f"{run.project_id}/{run.run_id}" for run in self.not_on_server]
        return data

    def to_markdown(self, max_differences: int = 200) -> str:
        lines = [super().to_markdown(max_differences).rstrip("\n")]
        if self.not_on_server:
            lines += ["", "## In the export, no longer on the server", ""]
            lines += [f"- `{run.project_id}/{run.run_id}`" for run in self.not_on_server]
        if self.not_compared:
            lines += ["", "## Not compared", ""] + [f"- {note}" for note in self.not_compared]
        return "\n".join(lines) + "\n"


def not_compared(reader: Any, deep: bool = False) -> list[str]:
    """What the report cannot vouch for with this source: without --deep, the series figures the server cannot give
    cheaply, every point's value below the last and file contents; even with it, file series / sets / artifacts."""
    notes = [] if deep else [f"series {figure}: {UNAVAILABLE}; use --deep" for figure in reader.unavailable]
    if not deep and "count" in reader.unavailable and reader.counts_run_points:
        notes[reader.unavailable.index("count")] += (
            " (each run's total of series points is compared with the server's "
            "sys/diagnostics/attributes/total_series_datapoints where it reports one)"
        )
    if not deep:
        notes.append(f"series values before the last point: {UNAVAILABLE}; use --deep")
        notes.append(f"single files: {FILES_CHECKED}")
    notes.append("file series, file sets and artifacts: not compared (neither the file names nor the content)")
    return notes


def _stored_exports(options: AuditOptions, project_id: str) -> dict[str, tuple[ExportedRun, list[str]]]:
    """run id → (the run as stored, the manifest's parts that are not on disk)."""
    data_root, files_root = Path(options.data_path), Path(options.files_path)
    return {
        stored.run_id: (
            ExportedRun.from_stored(stored, data_root, files_root),
            [part.path for part in stored.manifest.parts if not (data_root / part.path).is_file()],
        )
        for stored in list_stored_runs(data_root, projects=[project_id], runs_regex=options.runs.runs_regex)
        if stored.project_id == project_id and (not options.runs.run_ids or stored.run_id in options.runs.run_ids)
    }


def audit_project(reader: SourceReader, options: AuditOptions, project_id: str) -> list[RunValidation]:
    """Every run of one project: server runs against their export, then export-only runs (listed, not errors)."""
    stored = _stored_exports(options, project_id)
    on_server = reader.run_ids(project_id, options.runs)
    results = []
    missing = [run_id for run_id in on_server if run_id not in stored or not stored[run_id][0].complete]
    for run_id in missing:
        problem = "missing from export" if run_id not in stored else "export incomplete"
        entry = RunValidation(project_id, run_id, run_id)
        entry.differences.append(Difference(project_id, run_id, "run", run_id, problem, "complete", None))
        results.append(entry)
    present = [run_id for run_id in on_server if run_id not in missing]
    for facts in reader.read(project_id, present):
        export, lost_parts = stored[facts.run_id]
        results.append(_audit_run(project_id, facts, export, lost_parts, reader, options.deep))
    for run_id in gone_from_server(reader, project_id, options.runs, sorted(stored.keys() - set(on_server))):
        results.append(RunValidation(project_id, run_id, None, checked={"not_on_server": 1}))
    return results


def gone_from_server(reader: SourceReader, project_id: str, selection: RunSelection, unmatched: list[str]) -> list[str]:
    """Of the exported runs the selection did not list on the server, those the server no longer has at all (a run
    archived since, or outside --where/--query, is not "gone": it is outside the selection)."""
    if not unmatched:
        return []
    everything = set(reader.run_ids(project_id, RunSelection(runs_regex=selection.runs_regex, include_archived=True)))
    return [run_id for run_id in unmatched if run_id not in everything]


def _audit_run(
    project_id: str, source: RunFacts, export: ExportedRun, lost_parts: list[str], reader: Any, deep: bool
) -> RunValidation:
    entry = RunValidation(project_id, source.run_id, source.run_id)
    if lost_parts:  # its rows cannot be read whole: name the parts, compare nothing else
        entry.differences = [
            Difference(project_id, source.run_id, "part", path, "missing from export", "present", None)
            for path in lost_parts
        ]
        return entry
    try:
        exported = export_facts(export)
    except (NeptuneExporterError, OSError) as error:
        entry.error = {"error_type": type(error).__name__, "message": str(error), "remedy": "export the run again"}
        return entry
    entry.differences = compare_run(project_id, source, exported, () if deep else reader.unavailable)
    entry.checked = {
        "attributes": len(source.types),
        "atoms": len(source.atoms),
        "series": len(source.series),
        "files": len(source.file_sizes),
    }
    if deep:
        checked, differences = deep_run(reader, project_id, source, exported, export)
        entry.checked.update(checked)
        entry.differences += differences
    return entry


def audit_report_dir(options: AuditOptions) -> Path:
    """Folder of the reports: the option, else `<data folder>/../reports` (as target validation)."""
    return Path(options.report_path) if options.report_path else Path(options.data_path).resolve().parent / "reports"


def check_audit_options(options: AuditOptions) -> None:
    """Local checks before any request: the export folder exists, the runs regex compiles, a project is named."""
    if not Path(options.data_path).is_dir():
        raise OutputPathError(
            f"export folder {options.data_path} does not exist", "pass the --data-path an export wrote to"
        )
    check_run_selection(options.against, options.runs, "--against")
    if not options.projects:
        raise InvalidOptionError("no project named", "name the projects with -p workspace/project (repeatable)")


def audit_one_project(options: AuditOptions, settings: Settings, project_id: str) -> list[RunValidation]:
    """One project's runs compared (the per-project verb of the validate-source task), under the one retry policy:
    a transient server error repeats the project's read-only audit."""
    reader = make_reader(options, settings)
    return call_with_retries(
        lambda: audit_project(reader, options, project_id), settings.retry, what=f"audit of {project_id}"
    )


def new_report(options: AuditOptions) -> SourceAuditReport:
    """An empty report naming what this source cannot give cheaply."""
    return SourceAuditReport(
        target=options.against, not_compared=not_compared(reader_class(options.against), options.deep)
    )


def reader_class(against: str) -> Any:
    """The reader class `--against` names (InvalidOptionError for anything else)."""
    if against not in READERS:
        raise InvalidOptionError(f"unknown source {against!r}", f"use one of: {', '.join(sorted(READERS))}")
    module_name, _, name = READERS[against].partition(":")
    return getattr(importlib.import_module(module_name), name)


def run_source_audit(options: AuditOptions, settings: Settings) -> ValidationReport:
    """The export compared with the server, project by project; the report lists every difference and, under
    `not_compared`, what this source cannot give without a full download."""
    if not Path(options.data_path).is_dir():
        raise OutputPathError(
            f"export folder {options.data_path} does not exist", "pass the --data-path an export wrote to"
        )
    check_run_selection(options.against, options.runs, "--against")
    reader = make_reader(options, settings)
    report = SourceAuditReport(target=options.against, not_compared=not_compared(reader, options.deep))
    for project_id in options.projects:
        report.runs.extend(audit_project(reader, options, project_id))
    report.runs.sort(key=lambda run: (run.project_id, run.run_id))
    return report


__all__ = ["AuditOptions", "RunFacts", "SeriesFacts", "run_source_audit", "compare_run", "export_facts"]

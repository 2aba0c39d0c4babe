"""Neptune 3.x as the source audit reads it, with neptune-query's public API only: the runs table (types, atoms,
file sizes, the server's count of the run's series points where it reports `sys/diagnostics/attributes/*`),
`list_attributes` per run (which attributes a run has) and one-point tails of every series (`fetch_metrics` /
`fetch_series` with `tail_limit=1`), runs in batches."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neptune_exporter.exporters.audit_facts import RunFacts, SeriesFacts, Window, normal
from neptune_exporter.exporters.neptune3.client import configure_neptune_query, neptune_errors, required_token
from neptune_exporter.exporters.neptune3.frames import SeriesChunk, split_series_frame
from neptune_exporter.exporters.neptune3.source import Neptune3Source
from neptune_exporter.model import decimal_array_to_unscaled, steps_to_decimal_array
from neptune_exporter.selection import RunSelection
from neptune_exporter.settings import Settings
from neptune_exporter.storage.files import file_sha256

RUNS_PER_REQUEST = 50
# the server's count of a run's own series points (every series type), where it reports one
SERIES_POINTS = "sys/diagnostics/attributes/total_series_datapoints"
TAILED = ("string_series", "histogram_series")


class Neptune3Audit:
    """Read-only facts of 3.x runs; the API gives no point count or first step without reading every point."""

    unavailable = ("count", "first step")
    counts_run_points = True  # the runs table's SERIES_POINTS, where the server reports it

    def __init__(self, api_token: str | None, settings: Settings):
        self._token = api_token or os.environ.get("NEPTUNE_API_TOKEN")
        self._settings = settings

    def _ready(self) -> None:
        import neptune_query

        token = required_token(self._token)
        configure_neptune_query(self._settings)
        neptune_query.set_api_token(token)

    def run_ids(self, project_id: str, selection: RunSelection) -> list[str]:
        """Run ids as the export names them (custom run id, else sys/id) of the runs `export` would select."""
        source = Neptune3Source(self._token, self._settings)
        return sorted(ref.run_id for ref in source.list_runs(project_id, selection))

    def series_windows(self, project_id: str, run_id: str, path: str, attribute_type: str) -> Iterator[Window]:
        """Every point of one series, read backwards in windows of ≤ series_batch_rows points (neptune-query limits
        from the tail only): each window holds the last points below the previous one."""
        from neptune_query import runs as nq_runs

        self._ready()
        fetch = nq_runs.fetch_metrics if attribute_type == "float_series" else nq_runs.fetch_series
        limit, top, high = max(1, self._settings.series_batch_rows), None, None
        while True:
            with neptune_errors(project=project_id):
                frame = fetch(
                    project=project_id,
                    runs=[run_id],
                    attributes=[path],
                    step_range=(None, top),
                    tail_limit=limit,
                    lineage_to_the_root=False,
                    include_time="absolute",
                )
            chunk = split_series_frame(frame).get(path)
            steps = np.empty(0) if chunk is None else chunk.steps
            unscaled = decimal_array_to_unscaled(steps_to_decimal_array(steps, path))
            full = steps.size >= limit
            low = int(unscaled[0]) - 1 if full else None  # the window holds every point above its first step
            yield Window(low, high, unscaled, _window_values(attribute_type, chunk))
            if low is None:
                return
            top, high = float(np.nextafter(steps[0], -np.inf)), low

    def file_sha256(self, project_id: str, run_id: str, path: str) -> str:
        """sha256 of a single file's bytes as the server serves them (downloaded to a temporary folder)."""
        from neptune_query import runs as nq_runs

        self._ready()
        with neptune_errors(project=project_id), tempfile.TemporaryDirectory(prefix="audit-") as folder:
            table = nq_runs.fetch_runs_table(
                project=project_id, runs=[run_id], attributes=[path], type_suffix_in_column_names=True
            )
            frame = nq_runs.download_files(files=[table[f"{path}:file"].iloc[0]], destination=Path(folder))
            local = [Path(cell) for column in frame.columns for cell in frame[column] if isinstance(cell, str)]
            return file_sha256(local[0])

    def read(self, project_id: str, run_ids: list[str]) -> Iterator[RunFacts]:
        """Facts of the runs, RUNS_PER_REQUEST at a time."""
        self._ready()
        for start in range(0, len(run_ids), RUNS_PER_REQUEST):
            yield from self._batch(project_id, run_ids[start : start + RUNS_PER_REQUEST])

    def _batch(self, project_id: str, run_ids: list[str]) -> Iterator[RunFacts]:
        from neptune_query import runs as nq_runs

        with neptune_errors(project=project_id):
            table = nq_runs.fetch_runs_table(
                project=project_id, runs=run_ids, attributes=".*", type_suffix_in_column_names=True
            )
            present = {run_id: set(nq_runs.list_attributes(project=project_id, runs=[run_id])) for run_id in run_ids}
            facts = {run_id: _table_facts(run_id, table, present[run_id]) for run_id in run_ids}
            tails = nq_runs.fetch_metrics(
                project=project_id, runs=run_ids, attributes=".*", tail_limit=1, lineage_to_the_root=False
            )
            _add_tails(facts, tails)
            other = sorted({p for f in facts.values() for p, t in f.types.items() if t in TAILED})
            if other:
                tails = nq_runs.fetch_series(
                    project=project_id, runs=run_ids, attributes=other, tail_limit=1, lineage_to_the_root=False
                )
                _add_tails(facts, tails)
        yield from facts.values()


def _window_values(attribute_type: str, chunk: SeriesChunk | None) -> Any:
    """A window's values: float64 for float series (vectorised), else plain values one by one."""
    if attribute_type == "float_series":
        return np.empty(0) if chunk is None else np.asarray(chunk.values, dtype=np.float64)
    return [] if chunk is None else [normal(_plain(v)) for v in chunk.values]


def _cells(table: pd.DataFrame, column: str) -> list:
    return table[column].tolist() if column in table.columns else [None] * len(table)


def _table_facts(run_id: str, table: pd.DataFrame, present: set[str]) -> RunFacts:
    """Types, atom values and file sizes of one run from the runs table (its row, the columns it has)."""
    facts = RunFacts(run_id)
    row = table.loc[run_id] if run_id in table.index else pd.Series(dtype=object)
    for column, value in row.items():
        path, _, attribute_type = str(column).rpartition(":")
        if path not in present or _absent(value):
            continue
        facts.types[path] = attribute_type
        if path == SERIES_POINTS:
            facts.series_points = int(value)
        if attribute_type == "file":
            facts.file_sizes[path] = int(value.size_bytes)
        elif attribute_type.endswith("_series"):
            facts.series[path] = SeriesFacts()
        elif attribute_type not in ("file_set", "artifact"):
            facts.atoms[path] = normal(_plain(value))
    return facts


def _absent(value: Any) -> bool:
    """A cell of a run that lacks the column's attribute (a float atom's NaN is a value: float cells are kept)."""
    return value is None or value is pd.NaT or (not isinstance(value, float) and pd.isna(value) is True)


def _plain(value: Any) -> Any:
    """Histograms and other client dataclasses as dicts, pandas timestamps as datetimes."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


def _add_tails(facts: dict[str, RunFacts], tails: pd.DataFrame) -> None:
    """Last step and value of every series in a (run, step) × path frame of one-point tails."""
    if tails.empty:
        return
    for run_id, frame in tails.groupby(level=0):
        if run_id not in facts:
            continue
        steps = frame.index.get_level_values(-1)
        for path in frame.columns:
            values = frame[path]
            mask = values.notna().to_numpy()
            if not mask.any() or path not in facts[run_id].series:
                continue
            last = int(mask.nonzero()[0][-1])
            facts[run_id].series[path] = SeriesFacts(
                last_step=float(steps[last]), last_value=normal(_plain(values.iloc[last]))
            )

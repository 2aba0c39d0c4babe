"""Neptune 3.x as the source audit reads it, with neptune-query's public API only: the runs table (types, atoms,
file sizes), `list_attributes` per run (which attributes a run has) and one-point tails of every series
(`fetch_metrics` / `fetch_series` with `tail_limit=1`), runs in batches."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import pandas as pd

from neptune_exporter.exporters.audit_facts import RunFacts, SeriesFacts, normal
from neptune_exporter.exporters.neptune3.client import configure_neptune_query, neptune_errors, required_token
from neptune_exporter.selection import compile_regex
from neptune_exporter.settings import Settings

RUNS_PER_REQUEST = 50
TAILED = ("string_series", "histogram_series")


class Neptune3Audit:
    """Read-only facts of 3.x runs; the API gives no point count or first step without reading every point."""

    unavailable = ("count", "first step")

    def __init__(self, api_token: str | None, settings: Settings):
        self._token = api_token or os.environ.get("NEPTUNE_API_TOKEN")
        self._settings = settings

    def _ready(self) -> None:
        import neptune_query

        token = required_token(self._token)
        configure_neptune_query(self._settings)
        neptune_query.set_api_token(token)

    def run_ids(self, project_id: str, runs_regex: str | None) -> list[str]:
        """Run ids as the export names them (custom run id, else sys/id), non-archived, matching `runs_regex`."""
        from neptune_query import runs as nq_runs

        self._ready()
        pattern = compile_regex(runs_regex, "--runs")
        with neptune_errors(project=project_id):
            table = nq_runs.fetch_runs_table(
                project=project_id, attributes=["sys/id", "sys/custom_run_id"], type_suffix_in_column_names=True
            )
        found = []
        for sys_id, custom in zip(
            _cells(table, "sys/id:string"), _cells(table, "sys/custom_run_id:string"), strict=True
        ):
            run_id = custom if isinstance(custom, str) and custom else sys_id
            if pattern is None or any(isinstance(v, str) and pattern.search(v) for v in (run_id, sys_id)):
                found.append(run_id)
        return sorted(found)

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

"""Neptune 2.x as the source audit reads it, through the `neptune` client in read-only mode: the runs table (ids;
atom values in batches of runs), each run's attribute list, the first and last point of every series (the point
count comes with them) and each single file's size, a constant number of requests per attribute."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from neptune_exporter.exporters.audit_facts import RunFacts, SeriesFacts, normal
from neptune_exporter.exporters.neptune2.client import configure_client, typed_error
from neptune_exporter.selection import compile_regex
from neptune_exporter.settings import Settings

RUNS_PER_REQUEST = 50
MAX_LISTED_RUNS = 10_000  # one table read: the 2.x server's largest page
# 2.x type names as the export names them (the audit's own table: it must not borrow the exporter's).
TYPES = {
    "float": "float",
    "int": "int",
    "bool": "bool",
    "string": "string",
    "datetime": "datetime",
    "stringSet": "string_set",
    "experimentState": "string",
    "gitRef": "string",
    "notebookRef": "string",
    "floatSeries": "float_series",
    "stringSeries": "string_series",
    "imageSeries": "file_series",
    "file": "file",
    "fileSet": "file_set",
    "artifact": "artifact",
}
ATOMS = {"float", "int", "bool", "string", "datetime", "string_set"}
TAILED = {"float_series", "string_series"}


class Neptune2Audit:
    """Read-only facts of 2.x runs: every series figure comes from two one-point reads."""

    unavailable: tuple[str, ...] = ()

    def __init__(self, api_token: str | None, settings: Settings):
        self._token = api_token or os.environ.get("NEPTUNE_API_TOKEN")
        self._settings = settings
        self._projects: dict[str, Any] = {}

    def _project(self, project_id: str) -> Any:
        import neptune

        if project_id not in self._projects:
            configure_client(self._settings)
            try:
                self._projects[project_id] = neptune.init_project(
                    project=project_id, api_token=self._token, mode="read-only"
                )
            except Exception as exc:  # noqa: BLE001 - mapped to a typed error
                raise typed_error(exc, project=project_id) from exc
        return self._projects[project_id]

    def run_ids(self, project_id: str, runs_regex: str | None) -> list[str]:
        """sys ids of the project's non-trashed runs (the export's 2.x run ids) matching `runs_regex` (sys id or
        custom run id)."""
        pattern = compile_regex(runs_regex, "--runs")
        try:
            table = self._project(project_id).fetch_runs_table(
                columns=["sys/id", "sys/custom_run_id"], trashed=False, limit=MAX_LISTED_RUNS, progress_bar=False
            )
            rows = [(_value(e, "sys/id"), _value(e, "sys/custom_run_id")) for e in table]
        except ValueError as exc:
            if "not present in the table" in str(exc):  # the client's message for a project with no runs
                return []
            raise typed_error(exc, project=project_id) from exc
        except Exception as exc:  # noqa: BLE001 - mapped to a typed error
            raise typed_error(exc, project=project_id) from exc
        return sorted(
            sys_id
            for sys_id, custom in rows
            if pattern is None or any(v and pattern.search(v) for v in (sys_id, custom))
        )

    def read(self, project_id: str, run_ids: list[str]) -> Iterator[RunFacts]:
        """Facts of the runs; atom values RUNS_PER_REQUEST runs a table read."""
        for start in range(0, len(run_ids), RUNS_PER_REQUEST):
            batch = run_ids[start : start + RUNS_PER_REQUEST]
            try:
                yield from self._batch(project_id, batch)
            except Exception as exc:  # noqa: BLE001 - mapped to a typed error
                raise typed_error(exc, project=project_id) from exc

    def _batch(self, project_id: str, run_ids: list[str]) -> Iterator[RunFacts]:
        import neptune

        opened = {
            run_id: neptune.init_run(project=project_id, with_id=run_id, mode="read-only", api_token=self._token)
            for run_id in run_ids
        }
        try:
            reported = {run_id: _attributes(run) for run_id, run in opened.items()}
            atoms = sorted({p for attrs in reported.values() for p, t in attrs.items() if TYPES.get(t) in ATOMS})
            table = self._project(project_id).fetch_runs_table(id=run_ids, columns=atoms, progress_bar=False)
            entries = {_value(e, "sys/id"): e for e in table}
            for run_id, run in opened.items():
                yield _run_facts(run_id, run, reported[run_id], entries.get(run_id))
        finally:
            for run in opened.values():
                run.stop()


def _value(entry: Any, path: str) -> Any:
    """A table entry's value of `path`, None when the run lacks it."""
    try:
        return entry.get_attribute_value(path)
    except ValueError:
        return None


def _typed(exported: str, value: Any) -> Any:
    """Float atoms arrive as numbers or as "NaN"/"Infinity"/"-Infinity" text."""
    return float(value) if exported == "float" and value is not None else value


def _attributes(run: Any) -> dict[str, str]:
    """path → 2.x type name, as the server reports them (exact paths, not the client's split structure)."""
    return {a.path: a.type.value for a in run._backend.get_attributes(run._id, run.container_type)}


def _run_facts(run_id: str, run: Any, reported: dict[str, str], entry: Any) -> RunFacts:
    from neptune.attributes.utils import create_attribute_from_type
    from neptune.internal.backends.api_model import AttributeType

    facts = RunFacts(run_id)
    for path, neptune_type in reported.items():
        exported = TYPES.get(neptune_type)
        if exported is None:
            continue
        facts.types[path] = exported
        if exported in ATOMS and entry is not None:
            facts.atoms[path] = normal(_typed(exported, _value(entry, path)))
        elif exported in TAILED:
            handle = create_attribute_from_type(AttributeType(neptune_type), run, [path])
            facts.series[path] = _series_facts(handle)
        elif exported == "file":
            facts.file_sizes[path] = int(run._backend.get_file_attribute(run._id, run.container_type, [path]).size)
    return facts


def _series_facts(handle: Any) -> SeriesFacts:
    """Count, first step, last step and last value from two one-point reads."""
    first = handle._fetch_values_from_backend(0, 1)
    total = int(first.totalItemCount)
    if not total or not first.values:
        return SeriesFacts(count=0)
    last = handle._fetch_values_from_backend(total - 1, 1).values[-1]
    return SeriesFacts(total, float(first.values[0].step), float(last.step), normal(last.value))

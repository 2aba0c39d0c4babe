"""Neptune 2.x as the source audit reads it, through the `neptune` client in read-only mode: the runs table (ids;
atom values in batches of runs), each run's attribute list, the first and last point of every series (the point
count comes with them) and each single file's size, a constant number of requests per attribute."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from neptune_exporter.errors import NeptuneExporterError
from neptune_exporter.exporters.audit_facts import RunFacts, SeriesFacts, Window, normal
from neptune_exporter.exporters.neptune2.client import configure_client, open_project, typed_error
from neptune_exporter.exporters.neptune2.pages import client_pages, exact_page
from neptune_exporter.exporters.neptune2.source import Neptune2Source
from neptune_exporter.model import decimal_array_to_unscaled, steps_to_decimal_array
from neptune_exporter.selection import RunSelection
from neptune_exporter.settings import Settings
from neptune_exporter.storage.files import file_sha256

RUNS_PER_REQUEST = 50
DEEP_PAGE_POINTS = 10_000  # points per request of a --deep re-read (ascending pages)
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
    counts_run_points = False  # every series has its own count (above), no run total is needed

    def __init__(self, api_token: str | None, settings: Settings):
        self._token = api_token or os.environ.get("NEPTUNE_API_TOKEN")
        self._settings = settings
        self._projects: dict[str, Any] = {}

    def _project(self, project_id: str) -> Any:
        if project_id not in self._projects:
            configure_client(self._settings)
            self._projects[project_id] = open_project(project_id, self._token)
        return self._projects[project_id]

    def run_ids(self, project_id: str, selection: RunSelection) -> list[str]:
        """sys ids (the export's 2.x run ids) of the runs `export` would select (the exporter's paged listing)."""
        source = Neptune2Source(self._token, self._settings)
        try:
            return sorted(ref.run_id for ref in source.list_runs(project_id, selection))
        finally:
            source.close()

    def series_windows(self, project_id: str, run_id: str, path: str, attribute_type: str) -> Iterator[Window]:
        """Every point of one series, in ascending pages of DEEP_PAGE_POINTS (the client's offset paging)."""
        from neptune.attributes.utils import create_attribute_from_type
        from neptune.internal.backends.api_model import AttributeType

        with self._opened(project_id, run_id) as run:
            neptune_type = "floatSeries" if attribute_type == "float_series" else "stringSeries"
            read = client_pages(create_attribute_from_type(AttributeType(neptune_type), run, [path]))
            total, offset, low = read(0, 1).total, 0, None
            while True:
                page = exact_page(read, offset, DEEP_PAGE_POINTS)
                offset += len(page)
                unscaled = decimal_array_to_unscaled(steps_to_decimal_array(page.steps, path))
                last = offset >= total or not len(page)
                high = None if last else int(unscaled[-1])
                values = page.values
                plain = np.asarray(values, dtype=np.float64) if attribute_type == "float_series" else list(values)
                yield Window(low, high, unscaled, plain)
                if last:
                    return
                low = high

    def file_sha256(self, project_id: str, run_id: str, path: str) -> str:
        """sha256 of a single file's bytes as the server serves them (downloaded to a temporary folder)."""
        from neptune.attributes.utils import create_attribute_from_type
        from neptune.internal.backends.api_model import AttributeType

        with self._opened(project_id, run_id) as run, tempfile.TemporaryDirectory(prefix="audit-") as folder:
            handle = create_attribute_from_type(AttributeType("file"), run, [path])
            handle.download(destination=folder, progress_bar=False)
            return file_sha256(next(p for p in Path(folder).iterdir() if p.is_file()))

    @contextmanager
    def _opened(self, project_id: str, run_id: str) -> Iterator[Any]:
        """One run opened read-only (client errors as typed errors), stopped after use."""
        import neptune

        try:
            run = neptune.init_run(project=project_id, with_id=run_id, mode="read-only", api_token=self._token)
        except Exception as exc:  # noqa: BLE001 - mapped to a typed error
            raise typed_error(exc, run=run_id, project=project_id) from exc
        try:
            yield run
        except NeptuneExporterError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a typed error
            raise typed_error(exc, run=run_id, project=project_id) from exc
        finally:
            run.stop()

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

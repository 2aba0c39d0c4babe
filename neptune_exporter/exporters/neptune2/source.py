"""Neptune2Source: access, discovery of runs and model-registry containers, atom reads; one run's export starts here."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from neptune_exporter.errors import (
    InvalidOptionError,
    InvalidQueryError,
    InvalidTokenError,
    TerminalError,
    UnsupportedError,
)
from neptune_exporter.exporters.base import ProgressCallback, RunContent, chunked
from neptune_exporter.exporters.neptune2.client import (
    TOKEN_REMEDY,
    configure_client,
    http_status,
    open_project,
    retrying,
    token_server,
    typed_error,
)
from neptune_exporter.exporters.neptune2.nql import combine_nql, modified_after_nql, nql_datetime, sys_id_nql, where_nql
from neptune_exporter.exporters.neptune2.run_export import RunExport
from neptune_exporter.model import MODEL_VERSIONS_SCOPE, MODELS_SCOPE, ProjectId, RunRef
from neptune_exporter.model import as_utc as model_as_utc
from neptune_exporter.selection import AttributeSelection, RunSelection, compile_regex
from neptune_exporter.settings import Settings, neptune_api_token
from neptune_exporter.storage.manifest import Watermark

WINDOW_RUNS = 10_000  # the 2.x server's largest offset: one fetch_runs_table call never pages past it
LIST_COLUMNS = ("sys/id", "sys/custom_run_id", "sys/name", "sys/creation_time", "sys/modification_time", "sys/trashed")


def version_model_id(version_sys_id: str) -> str:
    """The model sys id of a model version (`PROJ-MOD-3` → `PROJ-MOD`: 2.x numbers versions after their model)."""
    return version_sys_id.rsplit("-", 1)[0]


def run_matches(ref: RunRef, pattern: re.Pattern | None, run_ids: tuple[str, ...]) -> bool:
    """--runs regex (search on sys/id or custom run id) and exact run ids."""
    keys = [k for k in (ref.sys_id, ref.custom_run_id) if k]
    if run_ids and not any(k in run_ids for k in keys):
        return False
    return pattern is None or any(pattern.search(k) for k in keys)


def as_utc(value: Any) -> datetime | None:
    """Client datetimes (naive UTC from tables) → aware UTC; None stays None."""
    if not isinstance(value, datetime):
        return None
    return model_as_utc(value)


class Neptune2Source:
    """Reads Neptune 2.x projects and runs through the public `neptune` client in read-only mode."""

    kind = "neptune2"

    def __init__(self, api_token: str | None, settings: Settings, runs_at_once: int = 1):
        self._token = neptune_api_token(api_token)
        self._settings, self._runs_at_once = settings, runs_at_once
        self.server = token_server(self._token)
        self._projects: dict[str, Any] = {}
        self._models: dict[tuple[str, str], Any] = {}  # (project, model sys id) → read-only model container
        self._lock = threading.Lock()
        self._client_configured = False

    def _client(self) -> Any:
        """The `neptune` module, configured (configure_client) before this source's first call through it."""
        import neptune

        if not self._client_configured:
            configure_client(self._settings, self._runs_at_once)
            self._client_configured = True
        return neptune

    # ---- access and discovery

    def _project(self, project_id: ProjectId) -> Any:
        """The read-only project container (opened once, cached)."""
        with self._lock:
            if project_id not in self._projects:
                self._client()
                self._projects[project_id] = open_project(project_id, self._token)
            return self._projects[project_id]

    def check_access(self, project_id: ProjectId) -> None:
        if not self._token:
            raise InvalidTokenError("no Neptune API token given", TOKEN_REMEDY)
        if not self.server:
            raise InvalidTokenError(
                "the Neptune API token is malformed (not base64 JSON with api_address)", TOKEN_REMEDY
            )
        self._project(project_id)

    def list_projects(self, workspace: str) -> list[ProjectId]:
        self._client()
        from neptune import management

        try:
            names = management.get_project_list(api_token=self._token)
        except Exception as exc:  # noqa: BLE001 - mapped to a typed error
            raise typed_error(exc, project=workspace) from exc
        return sorted(n for n in names if n.split("/", 1)[0] == workspace)

    def list_runs(self, project_id: ProjectId, selection: RunSelection) -> list[RunRef]:
        if selection.experiments_regex:
            raise InvalidOptionError(
                "Neptune 2.x has no experiments: --experiments cannot select 2.x runs",
                "select 2.x runs with --runs (sys/id or custom run id), --where or --query (e.g. on sys/name)",
            )
        pattern = compile_regex(selection.runs_regex, "--runs")
        query = combine_nql(where_nql(selection.where), selection.query, modified_after_nql(selection.modified_after))
        refs = []
        for ref in self._list_all(project_id, query, selection.include_archived):
            if (
                selection.modified_after
                and ref.modification_time
                and ref.modification_time <= model_as_utc(selection.modified_after)
            ):
                continue
            if run_matches(ref, pattern, selection.run_ids):
                refs.append(ref)
        return refs

    def _list_all(
        self,
        project_id: ProjectId,
        query: str | None,
        include_archived: bool,
        table: Callable[..., Any] | None = None,
        scope: str | None = None,
    ) -> Iterator[RunRef]:
        """Every matching container (runs unless `table` says otherwise), ascending by creation time, in windows
        of ≤ WINDOW_RUNS (ties across windows kept)."""
        seen: set[str] = set()
        since: str | None = None
        while True:
            window_query = combine_nql(query, f'`sys/creation_time`:datetime >= "{since}"' if since else None)
            window = self._table_window(project_id, window_query, include_archived, table, scope)
            fresh = [r for r in window if r.sys_id not in seen]
            yield from fresh
            seen.update(r.sys_id for r in fresh)
            if len(window) < WINDOW_RUNS:
                return
            if not fresh:
                raise UnsupportedError(
                    f"more than {WINDOW_RUNS} runs of {project_id} share one creation time; they cannot be paged",
                    "narrow the selection with --where/--query so each part has fewer runs",
                )
            last_created = window[-1].creation_time
            if last_created is None:
                raise UnsupportedError(
                    f"run {window[-1].run_id} of {project_id} has no sys/creation_time, so the run list cannot be paged",
                    f"narrow the selection with --where/--query to fewer than {WINDOW_RUNS} runs",
                )
            since = nql_datetime(last_created)

    def _table_window(
        self,
        project_id: ProjectId,
        query: str | None,
        include_archived: bool,
        table: Callable[..., Any] | None = None,
        scope: str | None = None,
    ) -> list[RunRef]:
        """One window of the runs table, or of `table` (the client does not retry table pages: retried here)."""
        fetch_table = table or self._project(project_id).fetch_runs_table

        def read() -> list[RunRef]:
            try:
                rows = fetch_table(
                    query=query,
                    columns=list(LIST_COLUMNS),
                    trashed=None if include_archived else False,
                    limit=WINDOW_RUNS,
                    sort_by="sys/creation_time",
                    ascending=True,
                    progress_bar=False,
                )
                return [self._run_ref(project_id, entry, scope) for entry in rows]
            except ValueError as exc:
                if "not present in the table" in str(exc):  # the client's message for a project with no runs
                    return []
                raise
            except Exception as exc:  # noqa: BLE001 - a refused query names the query
                if query and http_status(exc) == 400:
                    raise InvalidQueryError(
                        f"the server refused the run query {query!r}: {exc}", "fix --query (NQL) or --where"
                    ) from exc
                raise

        return retrying(read, self._settings, project=project_id)

    def _run_ref(self, project_id: ProjectId, entry: Any, scope: str | None = None) -> RunRef:
        values = {c: _entry_value(entry, c) for c in LIST_COLUMNS}
        sys_id = str(values["sys/id"])
        return RunRef(
            project_id=project_id,
            run_id=sys_id,
            sys_id=sys_id,
            experiment_name=None,
            name=values["sys/name"] or None,
            custom_run_id=values["sys/custom_run_id"] or None,
            creation_time=as_utc(values["sys/creation_time"]),
            modification_time=as_utc(values["sys/modification_time"]),
            archived=bool(values["sys/trashed"]),
            source_kind=self.kind,
            scope=scope,
        )

    # ---- model registry

    def list_models(self, project_id: ProjectId, selection: RunSelection) -> list[RunRef]:
        """The project's models, then their versions, as scoped RunRefs (each ascending by creation time).

        Run filters (--runs, --where, --query) select runs only; trashed models and their versions come with
        include_archived; modified_after keeps the models and versions modified after it."""
        models = list(
            self._list_all(
                project_id, None, selection.include_archived, self._project(project_id).fetch_models_table, MODELS_SCOPE
            )
        )
        versions = [
            version
            for model in models
            for version in self._list_all(
                project_id, None, False, self._versions_table(project_id, model.sys_id), MODEL_VERSIONS_SCOPE
            )
        ]
        since = as_utc(selection.modified_after)
        return [
            ref
            for ref in models + versions
            if since is None or ref.modification_time is None or ref.modification_time > since
        ]

    def _model(self, project_id: ProjectId, model_id: str) -> Any:
        """The read-only model container (opened once, cached): its versions table is only reachable from it."""
        key = (project_id, model_id)
        with self._lock:
            if key not in self._models:
                neptune = self._client()
                try:
                    self._models[key] = neptune.init_model(
                        with_id=model_id, project=project_id, api_token=self._token, mode="read-only"
                    )
                except Exception as exc:  # noqa: BLE001 - mapped to a typed error
                    raise typed_error(exc, run=model_id, project=project_id) from exc
            return self._models[key]

    def _versions_table(self, project_id: ProjectId, model_id: str) -> Callable[..., Any]:
        """`fetch_model_versions_table` of a model, taking (and ignoring) `trashed`: the client never lists
        trashed versions."""
        model = self._model(project_id, model_id)

        def fetch(trashed: bool | None = None, **kwargs: Any) -> Any:
            return model.fetch_model_versions_table(**kwargs)

        return fetch

    def _container_table(self, run: RunRef, paths: list[str]) -> Any:
        """The table row(s) of one run, model or model version with the `paths` columns."""
        options = {"columns": paths, "sort_by": "sys/id", "progress_bar": False}
        if run.scope == MODEL_VERSIONS_SCOPE:
            versions = self._versions_table(run.project_id, version_model_id(run.sys_id))
            return versions(query=sys_id_nql(run.sys_id), **options)
        project = self._project(run.project_id)
        if run.scope == MODELS_SCOPE:
            return project.fetch_models_table(query=sys_id_nql(run.sys_id), trashed=None, **options)
        return project.fetch_runs_table(id=[run.sys_id], trashed=None, **options)

    # ---- export

    def export_run(
        self,
        run: RunRef,
        attributes: AttributeSelection,
        files_root: Path,
        watermarks: dict[str, Watermark] | None = None,
        progress: ProgressCallback | None = None,
    ) -> RunContent:
        content = RunContent(batches=iter(()), source_facts=run_source_facts(run))
        export = RunExport(self, run, attributes, Path(files_root), watermarks or {}, progress, content)
        content.batches = export.batches()
        return content

    def open_run(self, run: RunRef) -> Any:
        """The run (or model, or model version) opened read-only (one init per export)."""
        neptune = self._client()
        openers: dict[str | None, Callable[..., Any]] = {
            MODELS_SCOPE: neptune.init_model,
            MODEL_VERSIONS_SCOPE: neptune.init_model_version,
        }
        opener = openers.get(run.scope, neptune.init_run)
        try:
            return opener(project=run.project_id, with_id=run.sys_id, api_token=self._token, mode="read-only")
        except Exception as exc:  # noqa: BLE001 - mapped to a typed error
            raise typed_error(exc, run=run.run_id, project=run.project_id) from exc

    def atom_values(self, run: RunRef, paths: list[str]) -> dict[str, Any]:
        """Values of atom attributes of one run, read from the project table (≤ attributes_per_request a call)."""
        values: dict[str, Any] = {}
        for chunk in chunked(paths, self._settings.attributes_per_request):
            values.update(retrying(partial(self._atom_chunk, run, chunk), self._settings, run=run.run_id))
        return values

    def _atom_chunk(self, run: RunRef, paths: list[str]) -> dict[str, Any]:
        table = self._container_table(run, paths)
        entries = [e for e in table if _entry_value(e, "sys/id") == run.sys_id]
        if not entries:
            raise TerminalError(
                f"run {run.sys_id} is no longer listed in {run.project_id}",
                "re-run discovery; the run may have been deleted",
            )
        return {path: _entry_value(entries[0], path) for path in paths}

    def close(self) -> None:
        """Close cached project and model containers."""
        with self._lock:
            for container in [*self._models.values(), *self._projects.values()]:
                container.stop()
            self._projects.clear()
            self._models.clear()

    @property
    def settings(self) -> Settings:
        return self._settings


def _entry_value(entry: Any, path: str) -> Any:
    """A table entry's value of `path`, None when the run lacks it."""
    try:
        return entry.get_attribute_value(path)
    except ValueError:
        return None


def run_source_facts(run: RunRef) -> dict:
    """Provenance that tells loaders how to group 2.x runs (sys/name is a run name, not an experiment)."""
    return {"kind": "neptune2", "name": run.name, "custom_run_id": run.custom_run_id, "experiment_name": None}

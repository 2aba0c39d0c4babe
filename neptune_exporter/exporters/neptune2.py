"""Neptune 2.x source: runs read with the `neptune` 1.x client (read-only mode) and streamed as rows and files."""

from __future__ import annotations

import base64
import json
import logging
import os
import queue
import re
import shutil
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from neptune_exporter.errors import (
    InvalidOptionError,
    InvalidQueryError,
    InvalidTokenError,
    NeptuneExporterError,
    ProjectNotFoundError,
    RateLimitedError,
    SourceUnavailableError,
    TerminalError,
    UnsupportedError,
)
from neptune_exporter.exporters.base import ProgressCallback, RunContent, chunked
from neptune_exporter.model import (
    MODEL_VERSIONS_SCOPE,
    MODELS_SCOPE,
    AttributeType,
    ProjectId,
    RunRef,
    project_files_dir,
    sanitize_name,
)
from neptune_exporter.model import (
    as_utc as model_as_utc,
)
from neptune_exporter.retry import call_with_retries
from neptune_exporter.rows import parameter_rows, series_rows
from neptune_exporter.selection import AttributeSelection, RunSelection, compile_regex, matches_kind, matches_path
from neptune_exporter.settings import Settings, neptune_api_token
from neptune_exporter.storage.files import publish, safe_relative, staging_dir, unpack_zip
from neptune_exporter.storage.manifest import Watermark

# Choices and bounds:
#
# - Run id: the 2.x `sys/id` ("PROJ-123"), as the peer tool neptune-ai/neptune-exporter does for 2.x, so
#   exports of either tool line up run for run (plans, resumes and loads match). A run's custom run id is
#   kept in `RunRef.custom_run_id` and `--runs` matches it too.
# - `sys/name` is a run's display name in 2.x: `RunRef.name`; `experiment_name` stays None.
# - Listing pages with the client's `fetch_runs_table` in windows of at most 10,000 runs, ascending by
#   `sys/creation_time`; the next window starts at the last creation time seen (`>=`) and drops ids already
#   listed, so runs sharing a creation time across a window boundary are never lost.
# - Atom values come from one project-table read per run (`fetch_runs_table(id=...)`): one call for
#   hundreds of attributes, and the only public path to `sys/state`, git and notebook references
#   (`run.fetch()` fails on runs holding a notebook reference in neptune 1.14).
# - Series are read page by page (`FetchableSeries._fetch_values_from_backend`, the paging hook of the
#   public `fetch_values`, which would otherwise build one DataFrame of the whole series with local-time
#   timestamps), PREFETCH_PAGES pages of SERIES_PAGE_POINTS in flight per series, in order. Memory bound,
#   whatever the run's size: each of `workers` attribute workers holds at most one batch being built
#   (≤ series_batch_rows + one page) plus its prefetched pages, the hand-over queue holds ≤ 2·workers
#   batches and the consumer one: about (3·workers + 1) · series_batch_rows points.
# - Model registry (`list_models`): models (`PROJ-MOD`) and their versions (`PROJ-MOD-1`) are containers
#   like runs, exported as runs whose run id is the sys id, in the peer tool's entity scopes
#   (`<project-dir>/models/`, `<project-dir>/model_versions/`). Listed with `fetch_models_table` and each
#   model's `fetch_model_versions_table` (one `init_model` per model: the only public path to its versions),
#   opened with `init_model` / `init_model_version`, atoms read from the same tables. Run filters do not
#   apply; trashed models (and their versions) only with include_archived; the client never lists trashed
#   versions.
# - File series: the 2.x read API serves images by index only, so a point's step is its index
#   (how 2.x numbers images appended without an explicit step; the peer tool does the same).

SERIES_PAGE_POINTS = 1000  # points per series request: what the client itself asks for
PREFETCH_PAGES = 4  # series pages requested ahead, per series being read
WINDOW_RUNS = 10_000  # the 2.x server's largest offset: one fetch_runs_table call never pages past it
LIST_COLUMNS = ("sys/id", "sys/custom_run_id", "sys/name", "sys/creation_time", "sys/modification_time", "sys/trashed")
TOKEN_REMEDY = "pass a valid Neptune 2.x API token with --api-token or NEPTUNE_API_TOKEN (copy it from the Neptune UI)"

# Neptune 2.x attribute type names (AttributeType values of the client) → the exported attribute type.
ATOM_TYPES: dict[str, AttributeType] = {
    "float": AttributeType.FLOAT,
    "int": AttributeType.INT,
    "bool": AttributeType.BOOL,
    "string": AttributeType.STRING,
    "datetime": AttributeType.DATETIME,
    "stringSet": AttributeType.STRING_SET,
    "experimentState": AttributeType.STRING,  # sys/state: "Active" / "Inactive"
    "gitRef": AttributeType.STRING,  # the commit id
    "notebookRef": AttributeType.STRING,  # the notebook name
}
OTHER_TYPES: dict[str, AttributeType] = {
    "floatSeries": AttributeType.FLOAT_SERIES,
    "stringSeries": AttributeType.STRING_SERIES,
    "imageSeries": AttributeType.FILE_SERIES,
    "file": AttributeType.FILE,
    "fileSet": AttributeType.FILE_SET,
    "artifact": AttributeType.ARTIFACT,
}

log = logging.getLogger(__name__)
T = TypeVar("T")


# --------------------------------------------------------------------------- pure helpers


@dataclass(frozen=True)
class SourceAttribute:
    """One attribute of a 2.x run: its path, 2.x type name, exported type and the client's attribute object."""

    path: str
    neptune_type: str
    attribute_type: AttributeType
    handle: Any = None


def neptune_type_of(attribute: Any) -> str | None:
    """2.x type name of a client attribute object (by class), None for types this exporter does not know."""
    from neptune import attributes as na

    classes = {
        na.Float: "float",
        na.Integer: "int",
        na.Boolean: "bool",
        na.String: "string",
        na.Datetime: "datetime",
        na.StringSet: "stringSet",
        na.RunState: "experimentState",
        na.GitRef: "gitRef",
        na.NotebookRef: "notebookRef",
        na.FloatSeries: "floatSeries",
        na.StringSeries: "stringSeries",
        na.FileSeries: "imageSeries",
        na.File: "file",
        na.FileSet: "fileSet",
        na.Artifact: "artifact",
    }
    return classes.get(type(attribute))


def flatten_structure(structure: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, attribute) for every leaf of a run's nested `get_structure()` dict."""
    for name, value in structure.items():
        path = f"{prefix}/{name}" if prefix else name
        if isinstance(value, dict):
            yield from flatten_structure(value, path)
        else:
            yield path, value


def source_attributes(structure: dict) -> list[SourceAttribute]:
    """The run's attributes with their types; attributes of unknown types are logged and left out."""
    found = []
    for path, handle in flatten_structure(structure):
        neptune_type = neptune_type_of(handle)
        exported = (ATOM_TYPES.get(neptune_type) or OTHER_TYPES.get(neptune_type)) if neptune_type else None
        if neptune_type is None or exported is None:
            log.warning(
                "attribute %s has a type this exporter does not know (%s); left out", path, type(handle).__name__
            )
            continue
        found.append(SourceAttribute(path, neptune_type, exported, handle))
    return found


def select_attributes(found: Iterable[SourceAttribute], selection: AttributeSelection) -> list[SourceAttribute]:
    """Attributes chosen by kind and by path (exact names and/or regex)."""
    pattern = compile_regex(selection.regex, "--attributes")
    return [a for a in found if matches_kind(a.attribute_type, selection) and matches_path(a.path, selection, pattern)]


def combine_nql(*clauses: str | None) -> str | None:
    """AND of the non-empty NQL clauses, each parenthesised; None when there are none."""
    parts = [c.strip() for c in clauses if c and c.strip()]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return " AND ".join(f"({p})" for p in parts)


def nql_datetime(when: datetime) -> str:
    """A datetime as the 2.x server reads it in NQL (UTC, milliseconds, Z)."""
    text = model_as_utc(when).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    return f"{text}Z"


def modified_after_nql(when: datetime | None) -> str | None:
    """NQL keeping runs modified strictly after `when`."""
    if when is None:
        return None
    return f'`sys/modification_time`:datetime > "{nql_datetime(when)}"'


def where_nql(where: str | None) -> str | None:
    """`--where` translated to NQL by the shared expression language (exporters/where.py)."""
    if not where:
        return None
    from neptune_exporter.exporters.where import parse_where, to_nql

    return to_nql(parse_where(where))


def atom_value(attribute_type: AttributeType, value: Any) -> Any:
    """A table value as the exported type: floats arrive as numbers or as "NaN"/"Infinity"/"-Infinity" text."""
    if attribute_type is AttributeType.FLOAT:
        return float(value)
    if attribute_type is AttributeType.INT:
        return int(value)
    return value


def sys_id_nql(sys_id: str) -> str:
    """NQL selecting one container by its sys id."""
    return f'`sys/id`:string = "{sys_id}"'


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


def token_server(api_token: str | None) -> str:
    """The server address a 2.x token points to ('' when the token is missing or unreadable)."""
    if not api_token:
        return ""
    try:
        claims = json.loads(base64.b64decode(api_token.encode() + b"==="))
    except (ValueError, UnicodeDecodeError):
        return ""
    return str(claims.get("api_address") or claims.get("api_url") or "") if isinstance(claims, dict) else ""


def exact_page(fetch: Callable[[int, int], Any], offset: int, count: int) -> list:
    """`count` points from `offset` (fewer only at the series' end), however few the server sends a call."""
    points: list = []
    while len(points) < count:
        page = list(fetch(offset + len(points), count - len(points)).values)
        if not page:
            break
        points.extend(page)
    return points


def points_to_arrays(points: list[Any], first_index: int) -> tuple[np.ndarray, list, np.ndarray]:
    """Client series points (step, value, timestampMillis) → steps, values, ms timestamps (a missing step → its index)."""
    steps = np.fromiter(
        (p.step if p.step is not None else first_index + i for i, p in enumerate(points)),
        dtype=np.float64,
        count=len(points),
    )
    timestamps = np.fromiter((p.timestampMillis for p in points), dtype=np.int64, count=len(points))
    return steps, [p.value for p in points], timestamps


# --------------------------------------------------------------------------- error mapping


def client_retry_timeout(settings: Settings) -> int:
    """Seconds the client keeps retrying 5xx/429/connection errors of one request (then: TransientError)."""
    return max(1, int(settings.source_retry_timeout_s))


def configure_client(settings: Settings) -> None:
    """Point the client's retry window (NEPTUNE_RETRIES_TIMEOUT) at our retry policy and quiet its logging."""
    seconds = client_retry_timeout(settings)
    os.environ["NEPTUNE_RETRIES_TIMEOUT"] = str(seconds)
    import neptune.common.backends.utils as client_retries

    client_retries.retries_timeout = seconds  # read at import time by the client; set for this process
    logging.getLogger("neptune").setLevel(logging.ERROR)
    from neptune.common.warnings import NeptuneDeprecationWarning

    # reading a model registry out is what its deprecation notice asks for: no warning on every export
    warnings.filterwarnings("ignore", "Neptune's model registry has been deprecated", NeptuneDeprecationWarning)


def typed_error(
    error: BaseException, run: str | None = None, attribute: str | None = None, project: str | None = None
) -> NeptuneExporterError:
    """A client exception as our typed error (terminal or transient), with the run/attribute attached."""
    if isinstance(error, NeptuneExporterError):
        error.run = error.run or run
        error.attribute = error.attribute or attribute
        return error
    mapped = _map_client_error(error, project or "")
    mapped.run, mapped.attribute = run, attribute
    return mapped


def _map_client_error(error: BaseException, project: str) -> NeptuneExporterError:
    import requests
    from neptune import exceptions as ne
    from neptune.common import exceptions as ce

    name = type(error).__name__
    text = str(error).strip().splitlines()[0] if str(error).strip() else name
    if isinstance(error, (ce.NeptuneInvalidApiTokenException, ce.Unauthorized, ne.NeptuneMissingApiTokenException)):
        return InvalidTokenError(f"the Neptune server rejected the API token ({name})", TOKEN_REMEDY)
    if isinstance(error, (ne.ProjectNotFound, ne.NeptuneMissingProjectNameException, ce.Forbidden)):
        return ProjectNotFoundError(
            f"project {project!r} does not exist or the token has no access to it ({name})",
            "check the project name (workspace/project) and that the token's user can read it",
        )
    if isinstance(error, ne.NeptuneLegacyProjectException):
        return UnsupportedError(
            f"project {project!r} is a legacy (pre-2.x) Neptune project",
            "export it with the tool of its generation; this source reads Neptune 2.x projects",
        )
    if name == "InsecureTransportError":
        return InvalidOptionError(
            "the token points to a plain http:// server and the client's OAuth refuses plain http",
            "use the server's https:// address, or set OAUTHLIB_INSECURE_TRANSPORT=1 for a trusted local http server",
        )
    if isinstance(error, ne.NeptuneInvalidQueryException):
        return InvalidQueryError(f"the server refused the query: {text}", "fix the --query NQL or --where expression")
    if isinstance(error, ce.NeptuneConnectionLostException):
        cause = error.__cause__
        if cause is not None and "TooManyRequests" in type(cause).__name__:
            return RateLimitedError(
                f"the Neptune server kept rate-limiting requests: {cause}", "retry later or lower --workers"
            )
        return SourceUnavailableError(
            f"the Neptune server could not be reached: {cause or text}",
            "check the server address and network; the export retries and resumes",
        )
    if isinstance(
        error,
        (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError,
            ConnectionError,
            TimeoutError,
        ),
    ):
        return SourceUnavailableError(
            f"connection to the Neptune server failed: {text}", "check the network; the export retries and resumes"
        )
    status = _http_status(error)
    if status == 429:
        limited = RateLimitedError("the Neptune server rate-limited requests", "retry later or lower --workers")
        limited.retry_after = _retry_after(error)
        return limited
    if status is not None and (status >= 500 or status == 408):
        return SourceUnavailableError(
            f"the Neptune server answered {status}: {_body(error)}", "retry later; the export resumes"
        )
    if status == 404 or isinstance(error, (ne.MetadataContainerNotFound, ne.NeedExistingExperimentForReadOnlyMode)):
        return TerminalError(
            f"not found on the server (HTTP 404): {_body(error)}",
            "re-run the export: discovery drops runs and attributes deleted meanwhile",
        )
    if status is not None and 400 <= status < 500:
        return TerminalError(
            f"the server refused a request (HTTP {status}): {_body(error)}",
            "check the token's permissions and the options; report it if it persists",
        )
    if isinstance(error, (ne.FetchAttributeNotFoundException, ne.MetadataInconsistency)):
        return TerminalError(
            f"the attribute could not be read: {text}", "re-run the export; if it persists, exclude the attribute"
        )
    if isinstance(error, ne.NeptuneFeatureNotAvailableException):
        return UnsupportedError(
            f"the server does not offer this feature: {text}", "exclude the attribute (e.g. --exclude files)"
        )
    if isinstance(error, OSError):
        return TerminalError(
            f"writing exported files failed: {error}", "check free space and permissions of the files folder"
        )
    return TerminalError(
        f"the neptune client failed: {name}: {text}", "re-run with the same options; report it if it persists"
    )


def _http_status(error: BaseException) -> int | None:
    """HTTP status of a bravado/requests/client HTTP error (the client does not retry table pages itself)."""
    import requests
    from bravado.exception import HTTPError as BravadoHTTPError
    from neptune.common import exceptions as ce

    if isinstance(error, BravadoHTTPError):
        return error.status_code
    if isinstance(error, requests.exceptions.HTTPError) and error.response is not None:
        return error.response.status_code
    if isinstance(error, ce.ClientHttpError):
        return error.status
    return None


def _body(error: BaseException) -> str:
    """The first line of an HTTP error's response body (the client's own messages carry color codes)."""
    response = getattr(error, "response", None)
    text = response if isinstance(response, str) else getattr(response, "text", None)
    text = text() if callable(text) else text
    if not isinstance(text, str) or not text.strip():
        text = str(error)
    return " ".join(text.split())[:300]


def _retry_after(error: BaseException) -> float:
    """Seconds from a 429's Retry-After header (0 when absent or unreadable)."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        return float(headers.get("Retry-After") or headers.get("retry-after") or 0)
    except (TypeError, ValueError):
        return 0.0


def retrying(action: Callable[[], T], settings: Settings, run: str | None = None, project: str | None = None) -> T:
    """A table read (the client does not retry table pages): client errors typed, retried per the one retry policy."""

    def typed_action() -> T:
        try:
            return action()
        except NeptuneExporterError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a typed error
            raise typed_error(exc, run=run, project=project) from exc

    return call_with_retries(typed_action, settings.retry, what=f"table read of {run or project}")


# --------------------------------------------------------------------------- the source


class Neptune2Source:
    """Reads Neptune 2.x projects and runs through the public `neptune` client in read-only mode."""

    kind = "neptune2"

    def __init__(self, api_token: str | None, settings: Settings):
        self._token = neptune_api_token(api_token)
        self._settings = settings
        self.server = token_server(self._token)
        self._projects: dict[str, Any] = {}
        self._models: dict[tuple[str, str], Any] = {}  # (project, model sys id) → read-only model container
        self._lock = threading.Lock()
        self._client_configured = False

    def _client(self) -> Any:
        """The `neptune` module, configured (configure_client) before this source's first call through it."""
        import neptune

        if not self._client_configured:
            configure_client(self._settings)
            self._client_configured = True
        return neptune

    # ---- access and discovery

    def _project(self, project_id: ProjectId) -> Any:
        """The read-only project container (opened once, cached)."""
        with self._lock:
            if project_id not in self._projects:
                neptune = self._client()
                try:
                    self._projects[project_id] = neptune.init_project(
                        project=project_id, api_token=self._token, mode="read-only"
                    )
                except Exception as exc:  # noqa: BLE001 - mapped to a typed error
                    raise typed_error(exc, project=project_id) from exc
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
                if query and _http_status(exc) == 400:
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
        export = _RunExport(self, run, attributes, Path(files_root), watermarks or {}, progress, content)
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


# --------------------------------------------------------------------------- one run


_DONE = object()


class _RunExport:
    """Streams one run: atoms first, then series and files from bounded workers through a bounded queue."""

    def __init__(
        self,
        source: Neptune2Source,
        run: RunRef,
        selection: AttributeSelection,
        files_root: Path,
        watermarks: dict[str, Watermark],
        progress: ProgressCallback | None,
        content: RunContent,
    ):
        self.source, self.run, self.selection = source, run, selection
        self.files_root, self.watermarks, self.content = files_root, watermarks, content
        self.progress = progress or (lambda points, size: None)
        self.settings = source.settings
        self.project_files = project_files_dir(files_root, run.project_id)  # file_value.path is relative to it
        self.run_dir = Path(run.scope or "", sanitize_name(run.run_id))  # under project_files (the peer's places)
        self.stop = threading.Event()
        # series pages fetched ahead (threads start on first use; shut down when the run's batches end)
        self.page_pool = ThreadPoolExecutor(
            max_workers=max(1, self.settings.workers), thread_name_prefix="neptune2-page"
        )
        self.files_lock = threading.Lock()

    def batches(self) -> Iterator[pa.RecordBatch]:
        handle = self.source.open_run(self.run)
        try:
            try:
                structure = handle.get_structure()
            except Exception as exc:  # noqa: BLE001 - mapped to a typed error
                raise typed_error(exc, run=self.run.run_id) from exc
            chosen = select_attributes(source_attributes(structure), self.selection)
            atoms = [a for a in chosen if a.neptune_type in ATOM_TYPES]
            jobs: list[tuple[str | None, Callable[[], Iterator[pa.RecordBatch]]]] = [
                (None, partial(self._atom_batches, chunk))
                for chunk in chunked(atoms, self.settings.attributes_per_request)
            ]
            jobs += [(a.path, partial(self._attribute_batches, a)) for a in chosen if a.neptune_type not in ATOM_TYPES]
            yield from self._concurrent(jobs)
        finally:
            self.stop.set()
            self.page_pool.shutdown(wait=True, cancel_futures=True)
            handle.stop()

    def _atom_batches(self, atoms: list[SourceAttribute]) -> Iterator[pa.RecordBatch]:
        """One batch of atom values (one table read of ≤ attributes_per_request attributes)."""
        values = self.source.atom_values(self.run, [a.path for a in atoms])
        items = [
            (a.path, a.attribute_type, atom_value(a.attribute_type, values[a.path]))
            for a in atoms
            if values.get(a.path) is not None
        ]
        yield parameter_rows(self.run.project_id, self.run.run_id, items)

    def _concurrent(
        self, jobs: list[tuple[str | None, Callable[[], Iterator[pa.RecordBatch]]]]
    ) -> Iterator[pa.RecordBatch]:
        """Run the jobs (atom chunks, one per other attribute) on ≤ settings.workers threads; yield batches as they come."""
        if not jobs:
            return
        workers = max(1, self.settings.workers)
        results: queue.Queue = queue.Queue(maxsize=2 * workers)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="neptune2-attr")
        try:
            for attribute_path, job in jobs:
                pool.submit(self._work, attribute_path, job, results)
            pending = len(jobs)
            while pending:
                item = results.get()
                if item is _DONE:
                    pending -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    self.progress(item.num_rows, item.nbytes)
                    yield item
        finally:
            self.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def _work(
        self, attribute_path: str | None, job: Callable[[], Iterator[pa.RecordBatch]], results: queue.Queue
    ) -> None:
        if self.stop.is_set():
            return
        try:
            for batch in job():
                if not self._put(results, batch):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread, which raises it
            self._put(results, typed_error(exc, run=self.run.run_id, attribute=attribute_path))
        finally:
            self._put(results, _DONE)

    def _put(self, results: queue.Queue, item: Any) -> bool:
        """Put unless the consumer stopped; False when it did."""
        while not self.stop.is_set():
            try:
                results.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _attribute_batches(self, attribute: SourceAttribute) -> Iterator[pa.RecordBatch]:
        kind = attribute.attribute_type
        if kind in (AttributeType.FLOAT_SERIES, AttributeType.STRING_SERIES):
            yield from self._series(attribute)
        elif kind is AttributeType.FILE:
            yield self._file(attribute)
        elif kind is AttributeType.FILE_SERIES:
            yield from self._file_series(attribute)
        elif kind is AttributeType.FILE_SET:
            yield self._file_set(attribute)
        elif kind is AttributeType.ARTIFACT:
            yield self._artifact(attribute)

    # ---- series

    def _series(self, attribute: SourceAttribute) -> Iterator[pa.RecordBatch]:
        last_step = self._last_step(attribute)
        buffered: list[tuple[np.ndarray, list, np.ndarray]] = []
        count = 0
        for steps, values, timestamps in self._series_pages(attribute, last_step):
            buffered.append((steps, values, timestamps))
            count += steps.size
            if count >= self.settings.series_batch_rows:
                yield self._series_batch(attribute, buffered)
                buffered, count = [], 0
        if buffered:
            yield self._series_batch(attribute, buffered)

    def _last_step(self, attribute: SourceAttribute) -> float | None:
        mark = self.watermarks.get(attribute.path)
        return None if mark is None else mark.last_step

    def _series_pages(self, attribute: SourceAttribute, last_step: float | None) -> Iterator[tuple]:
        """Pages of points with step > last_step, the next pages fetched ahead in parallel (order kept).

        Resumes at the watermark's offset when the series is append-only."""
        fetch = attribute.handle._fetch_values_from_backend
        offset = self._resume_offset(attribute, last_step)
        first = fetch(offset, SERIES_PAGE_POINTS)
        pages = chain(
            [(offset, list(first.values))], self._prefetched(fetch, offset + len(first.values), first.totalItemCount)
        )
        for start, points in pages:
            if self.stop.is_set():
                return
            steps, values, timestamps = points_to_arrays(points, start)
            if last_step is not None:
                keep = steps > last_step
                steps, timestamps = steps[keep], timestamps[keep]
                values = [v for v, k in zip(values, keep, strict=True) if k]
            if steps.size:
                yield steps, values, timestamps

    def _prefetched(self, fetch: Callable, start: int, total: int) -> Iterator[tuple[int, list]]:
        """(offset, points) of the pages from `start` to `total`, PREFETCH_PAGES requests in flight at most."""
        window: deque = deque()
        for offset in range(start, total, SERIES_PAGE_POINTS):
            count = min(SERIES_PAGE_POINTS, total - offset)
            window.append((offset, self.page_pool.submit(exact_page, fetch, offset, count)))
            if len(window) >= PREFETCH_PAGES:
                first_offset, future = window.popleft()
                yield first_offset, future.result()
        while window:
            first_offset, future = window.popleft()
            yield first_offset, future.result()

    def _resume_offset(self, attribute: SourceAttribute, last_step: float | None) -> int:
        """Offset of the first new point when the point at (count - 1) carries the watermark's step, else 0."""
        mark = self.watermarks.get(attribute.path)
        if last_step is None or mark is None or mark.count <= 0:
            return 0
        probe = attribute.handle._fetch_values_from_backend(mark.count - 1, 1).values
        return mark.count if probe and probe[0].step == last_step else 0

    def _series_batch(self, attribute: SourceAttribute, buffered: list[tuple]) -> pa.RecordBatch:
        steps = np.concatenate([b[0] for b in buffered])
        timestamps = np.concatenate([b[2] for b in buffered])
        values: list = [v for b in buffered for v in b[1]]
        if attribute.attribute_type is AttributeType.FLOAT_SERIES:
            values = pa.array(np.asarray(values, dtype=np.float64), pa.float64())
        return series_rows(
            self.run.project_id, self.run.run_id, attribute.path, attribute.attribute_type, steps, values, timestamps
        )

    # ---- files

    def _attribute_dir(self, attribute: SourceAttribute) -> Path:
        return self.run_dir / safe_relative(attribute.path)

    def _staging(self):
        return staging_dir(self.project_files / self.run_dir)

    def _publish(self, attribute: SourceAttribute, staged: Path, relative: Path, step: float | None = None) -> str:
        """Move a downloaded file into place (atomic rename), record it, return its relative path."""
        exported = publish(
            staged, self.project_files / relative, self.files_root, self.run.project_id, attribute.path, step
        )
        with self.files_lock:
            self.content.files.append(exported)
        self.progress(0, exported.size)
        return exported.relative_path

    def _file(self, attribute: SourceAttribute) -> pa.RecordBatch:
        with self._staging() as staging:
            attribute.handle.download(destination=str(staging), progress_bar=False)
            downloaded = _only_file(staging, attribute.path)
            rel = self._publish(attribute, downloaded, self._attribute_dir(attribute) / downloaded.name)
        return parameter_rows(self.run.project_id, self.run.run_id, [(attribute.path, AttributeType.FILE, rel)])

    def _file_series(self, attribute: SourceAttribute) -> Iterator[pa.RecordBatch]:
        last_step = self._last_step(attribute)
        with self._staging() as staging:
            attribute.handle.download(destination=str(staging), progress_bar=False)
            images = sorted((p for p in staging.iterdir() if p.is_file()), key=lambda p: int(p.stem))
            steps, paths = [], []
            for image in images:
                step = float(int(image.stem))
                if last_step is not None and step <= last_step:
                    continue
                paths.append(self._publish(attribute, image, self._attribute_dir(attribute) / image.name, step))
                steps.append(step)
        if steps:
            yield series_rows(
                self.run.project_id, self.run.run_id, attribute.path, AttributeType.FILE_SERIES, steps, paths, None
            )

    def _file_set(self, attribute: SourceAttribute) -> pa.RecordBatch:
        with self._staging() as staging:
            archive = staging / "file_set.zip"
            attribute.handle.download(destination=str(archive), progress_bar=False)
            unpacked = staging / "files"
            members = unpack_zip(archive, unpacked)
            target_dir = self._attribute_dir(attribute)
            paths = [self._publish(attribute, m, target_dir / m.relative_to(unpacked.resolve())) for m in members]
        items = [(attribute.path, AttributeType.FILE_SET, p) for p in paths]
        return parameter_rows(self.run.project_id, self.run.run_id, items)

    def _artifact(self, attribute: SourceAttribute) -> pa.RecordBatch:
        """The artifact's file list (hash, size, type, metadata) as files_list.json, plus reachable contents."""
        listing = attribute.handle.fetch_files_list()
        target_dir = self._attribute_dir(attribute)
        with self._staging() as staging:
            list_file = staging / "files_list.json"
            entries = [entry.to_dto() for entry in listing]
            payload = {"hash": attribute.handle.fetch_hash(), "files": entries}
            list_file.write_text(json.dumps(payload, indent=1, sort_keys=True))
            rel = self._publish(attribute, list_file, target_dir / "files_list.json")
            for entry in listing:
                self._artifact_content(attribute, entry, staging, target_dir)
        return parameter_rows(self.run.project_id, self.run.run_id, [(attribute.path, AttributeType.ARTIFACT, rel)])

    def _artifact_content(self, attribute: SourceAttribute, entry: Any, staging: Path, target_dir: Path) -> None:
        """Copy one artifact file when its storage is reachable from here (local paths, configured S3)."""
        from neptune.internal.artifacts.types import ArtifactDriversMap

        staged = staging / "content" / safe_relative(entry.file_path)
        staged.parent.mkdir(parents=True, exist_ok=True)
        try:
            ArtifactDriversMap.match_type(entry.type).download_file(staged, entry)
        except Exception as exc:  # noqa: BLE001 - content is best effort; the file list is the record
            log.warning(
                "artifact %s file %s not reachable (%s); its hash and size are in files_list.json",
                attribute.path,
                entry.file_path,
                exc,
            )
            return
        if staged.is_symlink():  # the Local driver links to the original: export a copy of its bytes
            original = staged.resolve()
            staged.unlink()
            shutil.copyfile(original, staged)
        if staged.is_file():
            self._publish(attribute, staged, target_dir / "content" / safe_relative(entry.file_path))


def _only_file(folder: Path, attribute_path: str) -> Path:
    files = [p for p in folder.iterdir() if p.is_file()]
    if len(files) != 1:
        raise TerminalError(
            f"downloading file attribute {attribute_path} produced {len(files)} files",
            "re-run the export; report it if it persists",
        )
    return files[0]


def run_source_facts(run: RunRef) -> dict:
    """Provenance that tells loaders how to group 2.x runs (sys/name is a run name, not an experiment)."""
    return {"kind": "neptune2", "name": run.name, "custom_run_id": run.custom_run_id, "experiment_name": None}

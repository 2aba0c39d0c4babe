"""Neptune 2.x endpoints of the fake server: what the legacy `neptune` client (1.14, read-only mode) calls."""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
import threading
import uuid as uuidlib
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from neptune_exporter.fake_neptune import nql, store, system
from neptune_exporter.fake_neptune.server import JSON, HttpError, Request, Response, Router, ServerContext

SPEC_DIR = Path(__file__).with_name("specs")
LB = "/api/leaderboard/v1"
MAX_PAGE = 10_000  # the largest page any 2.x list endpoint serves
PY_LIB_VERSIONS = {"minRecommendedVersion": "1.0.0", "minCompatibleVersion": "1.0.0", "maxCompatibleVersion": "1.99.99"}

# store type → 2.x wire type; histogram series did not exist in 2.x and stay invisible
V2_TYPES = {
    store.FLOAT: "float",
    store.INT: "int",
    store.STRING: "string",
    store.BOOL: "bool",
    store.DATETIME: "datetime",
    store.STRING_SET: "stringSet",
    store.FLOAT_SERIES: "floatSeries",
    store.STRING_SERIES: "stringSeries",
    store.FILE: "file",
    store.FILE_SET: "fileSet",
    store.FILE_SERIES: "imageSeries",
    "git_ref": "gitRef",
    "notebook_ref": "notebookRef",
    "artifact": "artifact",
}
STATE_PATH = "sys/state"  # a store string ("running"/"idle"), an experimentState in 2.x
HIDDEN_PREFIXES = ("sys/forking/", "sys/experiment/")  # 3.x-only system attributes
ZIP_EPOCH = (2024, 1, 1, 0, 0, 0)
CONTAINER_TYPES = ("run", "model", "modelVersion")  # the `type` values of table requests


# ---------------------------------------------------------------------------- wire helpers
def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Strict JSON (the client's simplejson rejects NaN tokens): non-finite floats go through `wire_float`."""
    return Response(status, json.dumps(payload, allow_nan=False, separators=(",", ":")).encode(), JSON, headers or {})


def wire_float(value: float) -> float | str:
    """A float as the 2.x server (Jackson) wrote it: non-finite ones as the strings "NaN", "Infinity", "-Infinity"."""
    value = float(value)
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def iso_datetime(value: datetime) -> str:
    """`2024-01-01T00:00:00.000Z`; microseconds kept when present so values and `>` continuations stay exact."""
    utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    fraction = f"{utc.microsecond // 1000:03d}" if utc.microsecond % 1000 == 0 else f"{utc.microsecond:06d}"
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + fraction + "Z"


def stable_uuid(*parts: str) -> str:
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "fake-neptune:" + "/".join(parts)))


def _int_param(request: Request, name: str, default: int, low: int = 0, high: int = MAX_PAGE) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return min(max(int(raw), low), high)
    except ValueError as exc:
        raise HttpError(400, f"query parameter {name}={raw!r} is not an integer") from exc


def _required(request: Request, name: str) -> str:
    value = request.query.get(name)
    if not value:
        raise HttpError(400, f"missing query parameter {name!r}")
    return value


@functools.cache
def spec_bytes(name: str) -> bytes:
    """Our own minimal swagger spec, read once (served as is, never re-serialised)."""
    return (SPEC_DIR / f"{name}.json").read_bytes()


# ---------------------------------------------------------------------------- containers (runs and projects)
@dataclass
class Holder:
    """What an `experimentId` names: a run, or the project itself (2.x projects are metadata containers)."""

    project: store.Project
    run: store.Run | None

    @property
    def uuid(self) -> str:
        return self.run.uuid if self.run is not None else self.project.uuid

    def attributes(self) -> dict[str, store.Attribute]:
        if self.run is not None:
            return run_attributes(self.run)
        return {
            "sys/id": store.Attribute("sys/id", store.STRING, self.project.key),
            "sys/name": store.Attribute("sys/name", store.STRING, self.project.name),
        }


def run_attributes(run: store.Run) -> dict[str, store.Attribute]:
    """A container's attributes as the 2.x API reports them: stored ones plus the derived system ones."""
    derived = system.v2_derived(run)
    return {**run.attributes, **derived} if derived else run.attributes


@dataclass(frozen=True)
class V2View:
    """A run as 2.x queries see it (NQL evaluates `attributes`)."""

    run: store.Run

    @property
    def attributes(self) -> dict[str, store.Attribute]:
        return run_attributes(self.run)


def organization_id(project: store.Project) -> str:
    return stable_uuid("organization", project.workspace)


def _container_fields(project: store.Project) -> dict[str, Any]:
    return {
        "projectId": project.uuid,
        "projectName": project.name,
        "organizationId": organization_id(project),
        "organizationName": project.workspace,
    }


def container_type(container: store.Run) -> str:
    """The 2.x container type of a run, model or model version ("run" / "model" / "modelVersion")."""
    if isinstance(container, store.ModelVersion):
        return "modelVersion"
    return "model" if isinstance(container, store.Model) else "run"


def _named(project: store.Project, key: str) -> store.Run | None:
    """The run (sys id, custom run id, uuid), model or model version (sys id, uuid) named by `key`."""
    return project.run(key) or project.registry_container(key)


def find_holder(ctx: ServerContext, experiment_id: str, request: Request | None = None) -> Holder:
    """Resolve `ws/proj/SYS-ID`, `ws/proj/<custom run id>`, a container uuid or a project uuid; 404 otherwise.

    Containers are runs, models (`ws/proj/PROJ-MOD`) and model versions (`ws/proj/PROJ-MOD-1`)."""
    with ctx.workspace.lock:
        projects = list(ctx.workspace.projects.values())
    for project in projects:
        if project.uuid == experiment_id:
            return Holder(project, None)
        prefix = project.identifier + "/"
        if experiment_id.startswith(prefix):
            run = _named(project, experiment_id[len(prefix) :])
            if run is not None:
                return _noted(Holder(project, run), request)
    for project in projects:
        run = _named(project, experiment_id)
        if run is not None and run.uuid == experiment_id:
            return _noted(Holder(project, run), request)
    raise HttpError(
        404,
        f"experiment {experiment_id!r} not found: pass ws/project/SYS-ID, a custom run id "
        f"as ws/project/<id>, or a run uuid",
        errorType="NOT_FOUND",
    )


def _noted(holder: Holder, request: Request | None) -> Holder:
    if request is not None and holder.run is not None:
        request.note_run(holder.run.sys_id)
    return holder


def visible_type(attr: store.Attribute) -> str | None:
    """The 2.x type of an attribute, or None when 2.x cannot see it."""
    if attr.path.startswith(HIDDEN_PREFIXES):
        return None
    if attr.path == STATE_PATH:
        return "experimentState"
    return V2_TYPES.get(attr.type)


def visible_attributes(attributes: dict[str, store.Attribute]) -> Iterator[tuple[store.Attribute, str]]:
    for attr in list(attributes.values()):
        v2_type = visible_type(attr)
        if v2_type is not None:
            yield attr, v2_type


def _attribute(holder: Holder, request: Request, *v2_types: str) -> tuple[store.Attribute, str]:
    """The attribute named by `?attribute=` with one of the wanted 2.x types; 404 (FetchAttributeNotFound) else."""
    path = _required(request, "attribute")
    attr = holder.attributes().get(path)
    v2_type = visible_type(attr) if attr is not None else None
    if attr is None or v2_type is None or (v2_types and v2_type not in v2_types):
        found = f"it is a {v2_type}" if v2_type else "it does not exist"
        raise HttpError(
            404, f"attribute {path!r} of type {'/'.join(v2_types)} not found ({found})", errorType="NOT_FOUND"
        )
    return attr, v2_type


# ---------------------------------------------------------------------------- attribute DTOs
def run_state(value: Any) -> str:
    """2.x state wire value: running / idle."""
    return "running" if str(value).lower() in ("running", "active") else "idle"


def _file_parts(project: store.Project, attr: store.Attribute) -> tuple[str, str, store.StoredFile]:
    """(name, ext, file) of a file attribute: 2.x kept only the extension, named the file after the attribute."""
    stored = _stored_file(project, attr.value, attr.path)
    ext = stored.name.rsplit(".", 1)[1] if "." in stored.name else ""
    return attr.path.rsplit("/", 1)[-1], ext, stored


def _stored_file(project: store.Project, key: Any, path: str) -> store.StoredFile:
    stored = project.files.get(key) if isinstance(key, str) else None
    if stored is None:
        raise HttpError(
            404, f"file {key!r} of attribute {path!r} is missing from the project's blobs", errorType="NOT_FOUND"
        )
    return stored


def _series_props(attr: store.Attribute, with_last_value: bool) -> dict[str, Any]:
    last = attr.series.last() if attr.series is not None else None
    if last is None:
        return {}
    props: dict[str, Any] = {"lastStep": float(last[0])}
    if with_last_value:
        props["last"] = wire_float(last[1]) if attr.type == store.FLOAT_SERIES else str(last[1])
    return props


def properties(project: store.Project, attr: store.Attribute, v2_type: str) -> dict[str, Any]:
    """The `<type>Properties` object of one attribute, as the 2.x API shapes it."""
    props: dict[str, Any] = {"attributeName": attr.path, "attributeType": v2_type}
    value = attr.value
    if v2_type == "experimentState":
        props["value"] = run_state(value)
    elif v2_type == "float":
        props["value"] = wire_float(value)
    elif v2_type == "int":
        props["value"] = int(value)
    elif v2_type == "bool":
        props["value"] = bool(value)
    elif v2_type == "string":
        props["value"] = str(value)
    elif v2_type == "datetime":
        props["value"] = iso_datetime(value)
    elif v2_type == "stringSet":
        props["values"] = sorted(value or ())
    elif v2_type == "floatSeries":
        props.update(_series_props(attr, True), config={})
    elif v2_type == "stringSeries":
        props.update(_series_props(attr, True))
    elif v2_type == "imageSeries":
        props.update(_series_props(attr, False), channelId=stable_uuid("channel", project.uuid, attr.path))
    elif v2_type == "file":
        name, ext, stored = _file_parts(project, attr)
        props.update(name=name, ext=ext, size=stored.size)
    elif v2_type == "fileSet":
        props["size"] = sum(_stored_file(project, key, attr.path).size for key in (value or {}).values())
    elif v2_type == "artifact":
        props["hash"] = (value or {}).get("hash", "")
    else:  # gitRef / notebookRef: the dataset gives the properties as a dict
        props.update(value or {})
    return props


def attribute_dto(project: store.Project, attr: store.Attribute, v2_type: str) -> dict[str, Any]:
    return {"name": attr.path, "type": v2_type, f"{v2_type}Properties": properties(project, attr, v2_type)}


# ---------------------------------------------------------------------------- series by index
def points_by_index(series: store.Series, offset: int, limit: int) -> tuple[np.ndarray, Any, np.ndarray]:
    """Points [offset, offset+limit) of a series (the 2.x API pages series by index, not by step)."""
    end = min(len(series), offset + limit)
    if offset >= end:
        return np.empty(0), [], np.empty(0, dtype=np.int64)
    if isinstance(series, store.ExplicitSeries):
        return series.steps[offset:end], series.values[offset:end], series.timestamps_ms[offset:end]
    if isinstance(series, store.GeneratedFloatSeries):
        idx = np.arange(offset, end, dtype=np.int64)
        return series.steps_of(idx), series.values_of(idx), series.timestamps_of(idx)
    steps, values, stamps = series.window(None, None, None, end)
    return steps[offset:end], values[offset:end], stamps[offset:end]


def _series_values(holder: Holder, request: Request, v2_type: str, convert) -> Response:
    attr, _ = _attribute(holder, request, v2_type)
    offset = _int_param(request, "offset", 0, high=2**62)
    limit = _int_param(request, "limit", 100)
    steps, values, stamps = points_by_index(attr.points(), offset, limit)
    points = [
        {"step": step, "value": convert(value), "timestampMillis": stamp}
        for step, value, stamp in zip(steps.tolist(), _as_list(values), stamps.tolist(), strict=True)
    ]
    return json_response({"totalItemCount": len(attr.points()), "values": points})


def _as_list(values: Any) -> list:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


# ---------------------------------------------------------------------------- file streaming
def file_response(stored: store.StoredFile, content_type: str, filename: str | None = None) -> Response:
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'} if filename else {}
    return Response(200, stored.chunks(), content_type, headers, length=stored.size)


class _ZipSink:
    """A write-only, non-seekable stream collecting what zipfile writes, drained chunk by chunk."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def drain(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def zip_stream(project: store.Project, members: dict[str, Any], attribute: str) -> Iterator[bytes]:
    """A zip of a file set built while streaming (data descriptors; memory bounded by one chunk).

    Every member's blob is looked up before the first byte, so a missing blob is a 404, not a cut stream.
    """
    blobs = [(name, _stored_file(project, key, attribute)) for name, key in sorted(members.items())]
    return _zip_chunks(blobs)


def _zip_chunks(blobs: list[tuple[str, store.StoredFile]]) -> Iterator[bytes]:
    sink = _ZipSink()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, stored in blobs:
            info = zipfile.ZipInfo(name, ZIP_EPOCH)
            info.file_size = stored.size
            with archive.open(info, "w", force_zip64=stored.size >= 2**31) as member:
                for chunk in stored.chunks():
                    member.write(chunk)
                    yield sink.drain()
    yield sink.drain()


def encode_download_id(holder: Holder, attribute: str) -> str:
    raw = json.dumps([holder.project.uuid, holder.uuid, attribute]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_download_id(download_id: str) -> tuple[str, str, str]:
    padded = download_id + "=" * (-len(download_id) % 4)
    try:
        project_uuid, holder_uuid, attribute = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, binascii.Error, TypeError) as exc:
        raise HttpError(404, f"unknown download request {download_id!r}", errorType="NOT_FOUND") from exc
    return project_uuid, holder_uuid, attribute


def list_file_set(members: dict[str, Any], project: store.Project, path: str, when: str) -> list[dict[str, Any]]:
    """Direct children of `path` inside a file set: files with sizes, sub-folders as directories."""
    prefix = path.strip("/")
    prefix = prefix + "/" if prefix and prefix != "." else ""
    entries: dict[str, dict[str, Any]] = {}
    for name, key in members.items():
        if not name.startswith(prefix):
            continue
        head, _, rest = name[len(prefix) :].partition("/")
        if rest:
            entries.setdefault(head, {"name": head, "fileType": "directory", "mtime": when})
        else:
            entries[head] = {
                "name": head,
                "fileType": "file",
                "size": _stored_file(project, key, name).size,
                "mtime": when,
            }
    if prefix and not entries:
        raise HttpError(404, f"no folder {path!r} in the file set", errorType="NOT_FOUND")
    return [entries[name] for name in sorted(entries)]


# ---------------------------------------------------------------------------- runs table
@dataclass(frozen=True)
class TableQuery:
    """What one searchLeaderboardEntries call asks for."""

    query: str
    sort_by: str | None
    descending: bool
    columns: tuple[str, ...] | None
    offset: int
    limit: int

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> TableQuery:
        """Parse a request body; like Neptune, offset + limit may not pass 10,000 (page on with a `>` query)."""
        sorting = body.get("sorting") or {}
        pagination = body.get("pagination") or {}
        filters = body.get("attributeFilters")
        try:
            offset = int(pagination.get("offset") or 0)
            limit = int(pagination["limit"]) if pagination.get("limit") is not None else 100
        except (TypeError, ValueError) as exc:
            raise HttpError(400, f"pagination must hold integers, got {pagination!r}") from exc
        if offset < 0 or limit < 0 or offset + limit > MAX_PAGE:
            raise HttpError(
                400,
                f"pagination offset {offset} + limit {limit} must stay within 0..{MAX_PAGE}; "
                f"continue past it with a `sort_by > last value` query",
                errorType="BAD_REQUEST",
            )
        return cls(
            query=((body.get("query") or {}).get("query") or "").strip(),
            sort_by=(sorting.get("sortBy") or {}).get("name"),
            descending=sorting.get("dir", "descending") != "ascending",
            columns=tuple(f["path"] for f in filters) if filters else None,
            offset=offset,
            limit=limit,
        )


def parse_query(text: str) -> nql.Expr:
    try:
        return nql.parse(text)
    except nql.NQLError as exc:  # the client turns title "Syntax error" into NeptuneInvalidQueryException
        raise HttpError(400, str(exc), title="Syntax error", errorType="BAD_REQUEST") from exc


def sort_key(run: store.Run, sort_by: str) -> tuple:
    """Runs with the attribute first, in value order (NaN last); the key matches NQL `>` comparisons."""
    attr = run_attributes(run).get(sort_by)
    if attr is None or visible_type(attr) is None:
        return (2,)
    if attr.type in store.SERIES_TYPES:
        last = attr.series.last() if attr.series is not None else None
        value = None if last is None else last[1]
    else:
        value = attr.value
    if value is None:
        return (2,)
    if isinstance(value, float) and math.isnan(value):
        return (1,)
    if isinstance(value, (set, frozenset)):
        value = ",".join(sorted(value))
    return (0, value)


class SelectionCache:
    """Recent (query, sort) selections per project, valid while the project's runs are unchanged.

    The client pages a table 100 runs a request; evaluating NQL over every run for each page would make the
    fake the bottleneck. A selection is reused while the run count and the newest sys/modification_time
    stay the same (every mutation API bumps sys/modification_time).
    """

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._entries: OrderedDict[tuple, tuple[tuple, list[store.Run]]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def fingerprint(runs: list[store.Run]) -> tuple[int, int]:
        """(run count, sum of modification times in µs): any touch strictly increases the exact integer sum."""
        micro = timedelta(microseconds=1)
        total = sum(
            (a.value - store.EPOCH) // micro
            for r in runs
            if (a := r.attributes.get("sys/modification_time")) is not None
        )
        return len(runs), total

    def get(self, project: store.Project, table: TableQuery, types: tuple[str, ...] = ("run",)) -> list[store.Run]:
        key = (project.uuid, types, table.query, table.sort_by, table.descending)
        runs = containers(project, types)
        fingerprint = self.fingerprint(runs)
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None and cached[0] == fingerprint:
                self._entries.move_to_end(key)
                return cached[1]
        selected = select_runs(runs, table)
        with self._lock:
            self._entries[key] = (fingerprint, selected)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return selected


SELECTIONS = SelectionCache()


def select_runs(runs: list[store.Run], table: TableQuery) -> list[store.Run]:
    """Matching runs in table order (missing sort values last in both directions, ties in creation order)."""
    expr = parse_query(table.query)
    try:
        matching = [run for run in runs if nql.evaluate(expr, V2View(run))]
    except nql.NQLError as exc:
        raise HttpError(400, str(exc), title="Syntax error", errorType="BAD_REQUEST") from exc
    if not table.sort_by:
        return matching
    keyed = [(sort_key(run, table.sort_by), run) for run in matching]
    present = [pair for pair in keyed if pair[0][0] == 0]
    absent = [pair for pair in keyed if pair[0][0] != 0]
    try:
        present.sort(key=lambda pair: pair[0], reverse=table.descending)
    except TypeError:  # mixed value types: order by their text
        present.sort(key=lambda pair: str(pair[0][1]), reverse=table.descending)
    absent.sort(key=lambda pair: pair[0])
    return [run for _, run in present + absent]


def containers(project: store.Project, types: tuple[str, ...]) -> list[store.Run]:
    """The project's containers of the wanted 2.x types, runs first, each kind in creation order."""
    found: list[store.Run] = []
    if "run" in types:
        found.extend(project.runs)
    if "model" in types:
        found.extend(project.models)
    if "modelVersion" in types:
        found.extend(project.model_versions())
    return found


def requested_types(request: Request) -> tuple[str, ...]:
    """The `type` query values (repeatable) of a table request; runs when none is given."""
    wanted = tuple(t for value in request.query_all.get("type", []) for t in value.split(",") if t)
    unknown = [t for t in wanted if t not in CONTAINER_TYPES]
    if unknown:
        raise HttpError(
            400, f"unknown container type(s) {unknown}; use {list(CONTAINER_TYPES)}", errorType="BAD_REQUEST"
        )
    return wanted or ("run",)


def table_entry(
    project: store.Project, run: store.Run, columns: tuple[str, ...] | None, omits: str | None = None
) -> dict[str, Any]:
    attrs = run_attributes(run)
    chosen = attrs.values() if columns is None else (attrs[c] for c in columns if c in attrs)
    dtos = []
    for attr in list(chosen):
        v2_type = visible_type(attr)
        if v2_type is not None and not (omits and re.search(omits, attr.path)):
            dtos.append(attribute_dto(project, attr, v2_type))
    return {"experimentId": run.uuid, "type": container_type(run), **_container_fields(project), "attributes": dtos}


def reads_run_data(columns: tuple[str, ...] | None) -> bool:
    """Listing by sys/* columns is discovery; any other column reads the runs' data."""
    return columns is None or any(not c.startswith("sys/") for c in columns)


# ---------------------------------------------------------------------------- routes
def register(router: Router) -> None:
    """All 2.x-only endpoints (token exchange and refresh are the shared auth module's)."""
    _register_bootstrap(router)
    _register_containers(router)
    _register_atoms(router)
    _register_series(router)
    _register_files(router)
    _register_table(router)
    _register_artifacts(router)


def _register_bootstrap(router: Router) -> None:
    for api in ("backend", "leaderboard", "artifacts"):
        router.route("GET", rf"/api/{api}/swagger\.json", _spec_handler(api), auth=False, endpoint=f"v2.spec.{api}")

    @router.route("GET", r"/api/backend/v1/clients/config", auth=False, endpoint="v2.client_config")
    def client_config(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        return json_response(
            {
                "apiUrl": ctx.base_url,
                "applicationUrl": ctx.base_url,
                "pyLibVersions": PY_LIB_VERSIONS,
                "multiPartUpload": {"enabled": False},
                "artifacts": {"enabled": True, "apiVersion": 2},
            }
        )

    @router.route("GET", r"/api/backend/v1/projects/get", endpoint="v2.get_project")
    def get_project(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        return json_response(project_dto(ctx.project(_required(request, "projectIdentifier"))))

    @router.route("GET", r"/api/backend/v1/projects", endpoint="v2.list_projects")
    def list_projects(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        workspace = request.query.get("organizationIdentifier")
        term = (request.query.get("searchTerm") or "").lower()
        with ctx.workspace.lock:
            projects = [
                p
                for p in ctx.workspace.projects.values()
                if (not workspace or p.workspace == workspace) and term in p.name.lower()
            ]
        page = projects[_int_param(request, "offset", 0) :][: _int_param(request, "limit", 100)]
        return json_response(
            {
                "entries": [project_dto(p) for p in page],
                "matchingItemCount": len(projects),
                "totalItemCount": len(ctx.workspace.projects),
            }
        )

    @router.route("GET", r"/api/backend/v1/myOrganizations", endpoint="v2.list_organizations")
    def list_organizations(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        with ctx.workspace.lock:
            names = sorted({p.workspace for p in ctx.workspace.projects.values()} or {ctx.workspace.name})
        return json_response([{"id": stable_uuid("organization", name), "name": name} for name in names])


def _spec_handler(api: str):
    def serve_spec(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        return Response(200, spec_bytes(api), JSON)

    return serve_spec


def project_dto(project: store.Project) -> dict[str, Any]:
    return {
        "id": project.uuid,
        "name": project.name,
        "organizationId": organization_id(project),
        "organizationName": project.workspace,
        "projectKey": project.key,
        "version": 2,
        "visibility": "priv",
    }


def _register_containers(router: Router) -> None:
    @router.route("GET", LB + r"/experiments", endpoint="v2.get_experiment")
    def get_experiment(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        holder = find_holder(ctx, _required(request, "experimentId"), request)
        if holder.run is None:
            return json_response(
                {
                    "id": holder.uuid,
                    "shortId": holder.project.key,
                    "type": "project",
                    "trashed": False,
                    "parentId": holder.uuid,
                    **_container_fields(holder.project),
                }
            )
        return json_response(
            {
                "id": holder.run.uuid,
                "shortId": holder.run.sys_id,
                "type": container_type(holder.run),
                "trashed": holder.run.trashed,
                "parentId": holder.project.uuid,
                **_container_fields(holder.project),
            }
        )

    @router.route("GET", LB + r"/attributes", endpoint="v2.get_attributes")
    def get_attributes(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        holder = find_holder(ctx, _required(request, "experimentId"), request)
        dtos = [
            attribute_dto(holder.project, attr, v2_type) for attr, v2_type in visible_attributes(holder.attributes())
        ]
        trashed = holder.run.trashed if holder.run is not None else False
        return json_response(
            {
                "id": holder.uuid,
                **_container_fields(holder.project),
                "trashed": trashed,
                "systemAttributes": {},
                "attributes": dtos,
            }
        )


ATOM_ENDPOINTS = {  # path segment → 2.x types it serves
    "floats": ("float",),
    "integers": ("int",),
    "booleans": ("bool",),
    "strings": ("string",),
    "datetimes": ("datetime",),
    "files": ("file",),
    "stringSets": ("stringSet",),
    "floatSeries": ("floatSeries",),
    "stringSeries": ("stringSeries",),
    "artifacts": ("artifact",),
}


def _register_atoms(router: Router) -> None:
    @router.route("GET", LB + r"/attributes/(?P<kind>" + "|".join(ATOM_ENDPOINTS) + ")", endpoint="v2.get_attribute")
    def get_attribute(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        holder = find_holder(ctx, _required(request, "experimentId"), request)
        attr, v2_type = _attribute(holder, request, *ATOM_ENDPOINTS[match["kind"]])
        return json_response(properties(holder.project, attr, v2_type))


def _register_series(router: Router) -> None:
    @router.route("GET", LB + r"/attributes/series/float", endpoint="v2.float_series_values")
    def float_values(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        return _series_values(
            find_holder(ctx, _required(request, "experimentId"), request), request, "floatSeries", wire_float
        )

    @router.route("GET", LB + r"/attributes/series/string", endpoint="v2.string_series_values")
    def string_values(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        return _series_values(
            find_holder(ctx, _required(request, "experimentId"), request), request, "stringSeries", str
        )

    @router.route("GET", LB + r"/attributes/series/image", endpoint="v2.image_series_values")
    def image_values(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        holder = find_holder(ctx, _required(request, "experimentId"), request)
        attr, _ = _attribute(holder, request, "imageSeries")
        return json_response({"totalItemCount": len(attr.points())})

    @router.route("GET", LB + r"/attributes/series/image/single", endpoint="v2.image_series_file")
    def image_value(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        holder = find_holder(ctx, _required(request, "experimentId"), request)
        attr, _ = _attribute(holder, request, "imageSeries")
        index = _int_param(request, "index", -1, low=-1, high=2**62)
        _, keys, _ = points_by_index(attr.points(), index, 1) if index >= 0 else (None, [], None)
        if len(keys) == 0:
            raise HttpError(404, f"image series {attr.path!r} has no point at index {index}", errorType="NOT_FOUND")
        stored = _stored_file(holder.project, _as_list(keys)[0], attr.path)
        return file_response(stored, stored.mime_type)


def _register_files(router: Router) -> None:
    @router.route("GET", LB + r"/attributes/download", endpoint="v2.download_file")
    def download(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        holder = find_holder(ctx, _required(request, "experimentId"), request)
        attr, _ = _attribute(holder, request, "file")
        name, ext, stored = _file_parts(holder.project, attr)
        return file_response(stored, "application/octet-stream", f"{name}.{ext}" if ext else name)

    @router.route("POST", LB + r"/attributes/downloadFileSetZipRequest", endpoint="v2.file_set_zip_request")
    def zip_request(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        holder = find_holder(ctx, _required(request, "experimentId"), request)
        attr, _ = _attribute(holder, request, "fileSet")
        return json_response({"id": encode_download_id(holder, attr.path)})

    @router.route("GET", LB + r"/download/downloadRequest", endpoint="v2.download_request")
    def download_request(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        download_id = _required(request, "id")
        decode_download_id(download_id)
        return json_response({"id": download_id, "downloadUrl": f"{ctx.base_url}{LB}/download/zip?id={download_id}"})

    @router.route("GET", LB + r"/download/zip", endpoint="v2.download_zip")
    def download_zip(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        _, holder_uuid, attribute = decode_download_id(_required(request, "id"))
        holder = find_holder(ctx, holder_uuid, request)
        attr = holder.attributes().get(attribute)
        if attr is None or attr.type != store.FILE_SET:
            raise HttpError(404, f"file set {attribute!r} not found", errorType="NOT_FOUND")
        leaf = attribute.rsplit("/", 1)[-1]
        return Response(
            200,
            zip_stream(holder.project, dict(attr.value or {}), attribute),
            "application/zip",
            {"Content-Disposition": f'attachment; filename="{leaf}.zip"'},
        )

    @router.route("GET", LB + r"/attributes/ls", endpoint="v2.list_file_set")
    def list_files(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        holder = find_holder(ctx, _required(request, "experimentId"), request)
        attr, _ = _attribute(holder, request, "fileSet")
        when = holder.run.get("sys/modification_time") if holder.run is not None else None
        stamp = iso_datetime(when or store.EPOCH)
        return json_response(
            list_file_set(dict(attr.value or {}), holder.project, request.query.get("path", ""), stamp)
        )


def artifact_files(project: store.Project, artifact_hash: str) -> list[dict[str, Any]]:
    """Files of the artifact with this hash (the first artifact attribute of any container that has it)."""
    for run in [*project.runs, *project.models, *project.model_versions()]:
        for attr in list(run.attributes.values()):
            if attr.type == "artifact" and (attr.value or {}).get("hash") == artifact_hash:
                return [_artifact_file_dto(f) for f in attr.value.get("files") or []]
    raise HttpError(404, f"artifact {artifact_hash!r} not found in {project.identifier}", errorType="NOT_FOUND")


def _artifact_file_dto(entry: dict[str, Any]) -> dict[str, Any]:
    metadata = sorted((entry.get("metadata") or {}).items())
    return {
        "filePath": entry["filePath"],
        "fileHash": entry["fileHash"],
        "type": entry.get("type", "S3"),
        "size": entry.get("size"),
        "metadata": [{"key": k, "value": str(v)} for k, v in metadata],
    }


def _register_artifacts(router: Router) -> None:
    @router.route("GET", r"/api/artifacts/v1/artifact/files", endpoint="v2.artifact_files")
    def list_artifact_files(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        project = ctx.project(_required(request, "projectIdentifier"))
        return json_response({"files": artifact_files(project, _required(request, "hash"))})


def _register_table(router: Router) -> None:
    @router.route("POST", LB + r"/leaderboard/attributes/search", endpoint="v2.search_attributes")
    def search_attributes(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        project = ctx.project(_required(request, "projectIdentifier"))
        term = request.query.get("search") or ""
        seen: dict[tuple[str, str], None] = {}
        for run in containers(project, requested_types(request)):
            for attr, v2_type in visible_attributes(run_attributes(run)):
                if term in attr.path:
                    seen[(attr.path, v2_type)] = None
        return json_response({"entries": [{"name": name, "type": v2_type} for name, v2_type in sorted(seen)]})

    @router.route("POST", LB + r"/leaderboard/entries/search", endpoint="v2.search_entries")
    def search_entries(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        project = ctx.project(_required(request, "projectIdentifier"))
        table = TableQuery.from_body(request.json())
        runs = SELECTIONS.get(project, table, requested_types(request))
        page = runs[table.offset : table.offset + table.limit]
        if reads_run_data(table.columns):
            for run in page:
                request.note_run(run.sys_id)
        return json_response(
            {
                "matchingItemCount": len(runs),
                "entries": [table_entry(project, run, table.columns, ctx.faults.table_omits) for run in page],
            }
        )

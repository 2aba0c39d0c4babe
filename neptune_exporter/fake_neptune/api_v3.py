"""Neptune 3.x (neptune-query 1.14) read endpoints of the fake server: search, definitions, values, series, files."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
import uuid as uuidlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
from neptune_query.generated.neptune_api.proto.neptune_pb.api.v1.model import (
    attributes_pb2,
    leaderboard_entries_pb2,
    requests_pb2,
    series_values_pb2,
)

from neptune_exporter.fake_neptune import nql, store, system, wire
from neptune_exporter.fake_neptune.server import HttpError, Request, Response, Router, ServerContext

# fake type → neptune-query (backend) type; types missing here (file_set, store.LEGACY_ONLY_TYPES) are invisible
# to 3.x
V3_TYPES: dict[str, str] = {
    store.FLOAT: "float",
    store.INT: "int",
    store.STRING: "string",
    store.BOOL: "bool",
    store.DATETIME: "datetime",
    store.STRING_SET: "stringSet",
    store.FLOAT_SERIES: "floatSeries",
    store.STRING_SERIES: "stringSeries",
    store.HISTOGRAM_SERIES: "histogramSeries",
    store.FILE: "fileRef",
    store.FILE_SERIES: "fileRefSeries",
}
V3_WIRE_TO_FAKE = {wire_name: fake for fake, wire_name in V3_TYPES.items()}
HIDDEN_PATHS = frozenset({"sys/state"})  # 2.x-only (experimentState)
SERIES_PAGE_SIZE = 1000  # points per page of endpoint E (string/histogram/file series)
STORAGE_PREFIX = "/_storage/"


# ---------------------------------------------------------------------------- the 3.x view of the store
def _stored_visible(run: store.Run) -> Iterator[store.Attribute]:
    """Stored attributes of 3.x types; sys/custom_run_id always present (defaults to sys/id)."""
    for attr in list(run.attributes.values()):
        if attr.type in V3_TYPES and attr.path not in HIDDEN_PATHS and _reports(run, attr.path):
            yield attr
    if "sys/custom_run_id" not in run.attributes:
        yield store.Attribute("sys/custom_run_id", store.STRING, run.sys_id)


def _reports(run: store.Run, path: str) -> bool:
    """sys/trashed is absent on servers that report only sys/archived (store.ARCHIVED_PATH_VARIANTS)."""
    return path != "sys/trashed" or system.reports_trashed(run)


def visible_attributes(run: store.Run) -> Iterator[store.Attribute]:
    """The attributes neptune-query sees: stored ones of 3.x types, then the derived system attributes."""
    stored = list(_stored_visible(run))
    yield from stored
    yield from system.v3_derived_attributes(run, stored)


def visible_attribute(run: store.Run, path: str) -> store.Attribute | None:
    if path == "sys/custom_run_id" and path not in run.attributes:
        return store.Attribute(path, store.STRING, run.sys_id)
    attr = run.attributes.get(path)
    if attr is not None and attr.type in V3_TYPES and path not in HIDDEN_PATHS and _reports(run, path):
        return attr
    if attr is None and path.startswith("sys/"):
        return system.v3_derived(run, path, lambda: list(_stored_visible(run)))
    return None


class VisibleAttributes(Mapping):
    """A run's attributes as neptune-query sees them, by path (what NQL evaluates in 3.x searches)."""

    def __init__(self, run: store.Run):
        self._run = run

    def __getitem__(self, path: str) -> store.Attribute:
        attr = visible_attribute(self._run, path)
        if attr is None:
            raise KeyError(path)
        return attr

    def __iter__(self) -> Iterator[str]:
        return (attr.path for attr in visible_attributes(self._run))

    def __len__(self) -> int:
        return sum(1 for _ in visible_attributes(self._run))


@dataclass(frozen=True)
class RunView:
    """A run seen through the 3.x vocabulary: 2.x-only types and paths are absent, as on a Neptune 3.x server."""

    run: store.Run

    @property
    def attributes(self) -> VisibleAttributes:
        return VisibleAttributes(self.run)


def resolve_run(ctx: ServerContext, identifier: str) -> tuple[store.Project, store.Run] | None:
    """`ws/proj/PROJ-1` or `CUSTOM/ws/proj/<custom id>` → (project, run)."""
    custom = identifier.startswith("CUSTOM/")
    parts = identifier.removeprefix("CUSTOM/").split("/", 2)
    if len(parts) != 3:
        return None
    project = ctx.workspace.project(f"{parts[0]}/{parts[1]}")
    if project is None:
        return None
    run = project.run(parts[2])  # indexed lookup by sys id, custom run id or uuid
    if run is None:
        return None
    run_key = (run.custom_run_id or run.sys_id) if custom else run.sys_id
    return (project, run) if run_key == parts[2] else None


def organization_id(workspace: str) -> str:
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"{workspace}.fake-neptune"))


def search_visible(run: store.Run, query: str | None) -> bool:
    """Archived runs are searched only when the query mentions sys/trashed or sys/archived (the fake's rule)."""
    text = query or ""
    return not run.trashed or "sys/trashed" in text or "sys/archived" in text


# ---------------------------------------------------------------------------- aggregates (cached)
@dataclass(frozen=True)
class FloatStats:
    last: float
    last_step: float
    min: float
    max: float
    average: float
    variance: float


STATS_CHUNK = 1 << 20
_STATS_ATTRIBUTE = "_fake_neptune_stats"  # (length, FloatStats) cached on the series object itself


def float_stats(series: store.Series) -> FloatStats | None:
    """last/min/max/average/variance (over finite values) of a float series, computed in chunks and cached."""
    count = len(series)
    if not count:
        return None
    cached = getattr(series, _STATS_ATTRIBUTE, None)
    if cached is not None and cached[0] == count:
        return cached[1]
    total, total_sq, finite, low, high = 0.0, 0.0, 0, math.inf, -math.inf
    after: float | None = None
    while True:
        steps, values, _ = series.window(after, None, None, STATS_CHUNK)
        if not len(steps):
            break
        vals = np.asarray(values, dtype=np.float64)
        ok = vals[np.isfinite(vals)]
        if ok.size:
            total, total_sq = total + float(ok.sum()), total_sq + float(np.square(ok).sum())
            finite, low, high = finite + ok.size, min(low, float(ok.min())), max(high, float(ok.max()))
        after = float(steps[-1])
    last = series.last()
    if last is None:  # the series shrank between the count and here: nothing to report
        return None
    last_step, last_value, _ = last
    mean = total / finite if finite else math.nan
    variance = max(0.0, total_sq / finite - mean * mean) if finite else math.nan
    stats = FloatStats(
        float(last_value), last_step, low if finite else math.nan, high if finite else math.nan, mean, variance
    )
    setattr(series, _STATS_ATTRIBUTE, (count, stats))
    return stats


# ---------------------------------------------------------------------------- proto attribute values
def fill_attribute(target: Any, attr: store.Attribute, project: store.Project) -> None:
    """Fill a ProtoAttributeDTO from a store attribute."""
    wire_type = V3_TYPES[attr.type]
    target.name, target.type = attr.path, wire_type
    filler = _FILLERS[attr.type]
    props = getattr(target, _PROPERTY_FIELDS[attr.type])
    props.attribute_name, props.attribute_type = attr.path, wire_type
    filler(props, attr, project)


def _fill_scalar(props, attr, project) -> None:
    props.value = attr.value


def _fill_datetime(props, attr, project) -> None:
    props.value = int(round(attr.value.timestamp() * 1000))


def _fill_string_set(props, attr, project) -> None:
    props.value.extend(sorted(attr.value))


def _fill_float_series(props, attr, project) -> None:
    stats = float_stats(attr.series)
    if stats is None:
        return
    props.last, props.last_step, props.min, props.max = stats.last, stats.last_step, stats.min, stats.max
    props.average, props.variance = stats.average, stats.variance


def _fill_last_of_series(props, attr, project) -> None:
    last = attr.series.last() if attr.series is not None else None
    if last is None:
        return
    props.last_step = last[0]
    if attr.type == store.STRING_SERIES:
        props.last = last[1]
    elif attr.type == store.HISTOGRAM_SERIES:
        fill_histogram(props.last, last[1])
    else:
        fill_file_ref(props.last, last[1], project)


def _fill_file(props, attr, project) -> None:
    fill_file_ref(props, attr.value, project)


def fill_histogram(target: Any, histogram: dict) -> None:
    target.type = str(histogram.get("type", "COUNTING"))
    target.edges.extend(float(e) for e in histogram.get("edges", []))
    target.values.extend(float(v) for v in histogram.get("values", []))


def fill_file_ref(target: Any, key: str, project: store.Project) -> None:
    blob = project.files.get(key)
    target.path = key
    target.sizeBytes = blob.size if blob else 0
    target.mimeType = blob.mime_type if blob else "application/octet-stream"


_FILLERS = {
    store.FLOAT: _fill_scalar,
    store.INT: _fill_scalar,
    store.STRING: _fill_scalar,
    store.BOOL: _fill_scalar,
    store.DATETIME: _fill_datetime,
    store.STRING_SET: _fill_string_set,
    store.FLOAT_SERIES: _fill_float_series,
    store.STRING_SERIES: _fill_last_of_series,
    store.HISTOGRAM_SERIES: _fill_last_of_series,
    store.FILE_SERIES: _fill_last_of_series,
    store.FILE: _fill_file,
}
_PROPERTY_FIELDS = {
    store.FLOAT: "float_properties",
    store.INT: "int_properties",
    store.STRING: "string_properties",
    store.BOOL: "bool_properties",
    store.DATETIME: "datetime_properties",
    store.STRING_SET: "string_set_properties",
    store.FLOAT_SERIES: "float_series_properties",
    store.STRING_SERIES: "string_series_properties",
    store.HISTOGRAM_SERIES: "histogram_series_properties",
    store.FILE: "file_ref_properties",
    store.FILE_SERIES: "file_ref_series_properties",
}


# ---------------------------------------------------------------------------- B / I: entries search
def _sort_key(run: store.Run, sorting: dict) -> tuple:
    sort_by = sorting.get("sortBy") or {}
    name = sort_by.get("name") or "sys/creation_time"
    attr = visible_attribute(run, name)
    value: Any = None
    if attr is not None and attr.type in store.SERIES_TYPES:
        last = attr.series.last() if attr.series is not None else None
        value = last[1] if last is not None and attr.type == store.FLOAT_SERIES else None
    elif attr is not None and attr.type != store.STRING_SET:
        value = attr.value
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return (missing, value if not missing else 0)


def search_runs(runs: list[store.Run], body: dict) -> list[store.Run]:
    """Runs matching `query` (experiments only for experimentLeader), sorted like the body asks."""
    query = (body.get("query") or {}).get("query")
    try:
        expr = nql.parse(query)
        leader = bool(body.get("experimentLeader"))
        matched = [
            r
            for r in runs
            if (r.experiment_head or not leader) and search_visible(r, query) and nql.evaluate(expr, RunView(r))
        ]
    except nql.NQLError as exc:
        raise HttpError(400, str(exc)) from exc
    sorting = body.get("sorting") or {}
    descending = sorting.get("dir", "descending") == "descending"
    present = [r for r in matched if not _sort_key(r, sorting)[0]]
    absent = [r for r in matched if _sort_key(r, sorting)[0]]
    try:
        present.sort(key=lambda r: _sort_key(r, sorting)[1], reverse=descending)
    except TypeError as exc:
        raise HttpError(400, f"cannot sort by {sorting.get('sortBy')}: mixed value types") from exc
    return present + absent


def _page(items: list, pagination: dict) -> list:
    offset = int(pagination.get("offset") or 0)
    limit = pagination.get("limit")
    return items[offset:] if limit is None else items[offset : offset + int(limit)]


def _entry(result: Any, project: store.Project, run: store.Run, paths: list[str]) -> Any:
    entry = result.entries.add(
        experiment_id=run.uuid,
        type="run",
        project_id=project.uuid,
        organization_id=organization_id(project.workspace),
        project_name=project.name,
        organization_name=project.workspace,
    )
    for path in paths:
        attr = visible_attribute(run, path)
        if attr is not None:
            fill_attribute(entry.attributes.add(), attr, project)
    return entry


def search_entries(ctx: ServerContext, request: Request, match) -> Response:
    project = ctx.project(request.query.get("projectIdentifier"))
    body = request.json()
    with ctx.workspace.lock:
        runs = search_runs(list(project.runs), body)
        page = _page(runs, body.get("pagination") or {})
        paths = [f["path"] for f in body.get("attributeFilters") or [] if f.get("path")]
        reads_data = any(not p.startswith("sys/") for p in paths)
        result = leaderboard_entries_pb2.ProtoLeaderboardEntriesSearchResultDTO(matching_item_count=len(runs))
        for run in page:
            _entry(result, project, run, paths)
            if reads_data:
                request.note_run(run.sys_id)
    return Response.proto(result.SerializeToString())


def global_search(ctx: ServerContext, request: Request, match) -> Response:
    body = request.json()
    with ctx.workspace.lock:
        pairs = [(p, r) for p in ctx.workspace.projects.values() for r in search_runs(list(p.runs), body)]
        result = leaderboard_entries_pb2.ProtoLeaderboardEntriesSearchResultDTO(matching_item_count=len(pairs))
        for project, run in _page(pairs, body.get("pagination") or {}):
            _entry(result, project, run, ["sys/id", "sys/name", "sys/custom_run_id"])
    return Response.proto(result.SerializeToString())


# ---------------------------------------------------------------------------- A: attribute definitions
def _name_filter(body: dict) -> nql.NameFilter:
    try:
        return nql.name_filter_from_body(body, V3_WIRE_TO_FAKE)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from exc


def _runs_for(ctx: ServerContext, projects: list[store.Project], ids: list[str] | None) -> list[tuple]:
    if ids is None:
        return [(p, r) for p in projects for r in p.runs if not r.trashed]
    found = [resolve_run(ctx, i) for i in ids]
    return [pair for pair in found if pair is not None]


def _token_page(items: list, next_page: dict) -> tuple[list, str | None]:
    limit = int(next_page.get("limit") or 10_000)
    token = next_page.get("nextPageToken")
    try:
        start = int(token) if token else 0
    except ValueError as exc:
        raise HttpError(400, f"invalid nextPageToken {token!r}") from exc
    end = start + limit
    return items[start:end], (str(end) if end < len(items) else None)


def attribute_definitions(ctx: ServerContext, request: Request, match) -> Response:
    body = request.json()
    projects = [ctx.project(identifier) for identifier in body.get("projectIdentifiers") or []]
    name_filter = _name_filter(body)
    with ctx.workspace.lock:
        seen: set[tuple[str, str]] = set()
        for _, run in _runs_for(ctx, projects, body.get("experimentIdsFilter")):
            seen.update(
                (a.path, V3_TYPES[a.type]) for a in visible_attributes(run) if name_filter.accepts(a.path, a.type)
            )
    page, token = _token_page(sorted(seen), body.get("nextPage") or {})
    next_page = {"nextPageToken": token} if token else {}
    return Response.json({"entries": [{"name": n, "type": t} for n, t in page], "nextPage": next_page})


# ---------------------------------------------------------------------------- C: attribute values
def attribute_values(ctx: ServerContext, request: Request, match) -> Response:
    project = ctx.project(request.query.get("projectIdentifier"))
    body = request.json()
    name_filter = _name_filter(body)
    next_page = body.get("nextPage") or {}
    room = max(1, int(next_page.get("limit") or 10_000))
    result = attributes_pb2.ProtoQueryAttributesResultDTO()
    token = None
    with ctx.workspace.lock:
        runs = [run for _, run in _runs_for(ctx, [project], body.get("experimentIdsFilter"))]
        run_at, attr_at = _resume_point(next_page.get("nextPageToken"))
        for index in range(run_at, len(runs)):
            if room == 0:
                token = f"{index}:0"
                break
            accepted = [a for a in visible_attributes(runs[index]) if name_filter.accepts(a.path, a.type)]
            start = attr_at if index == run_at else 0
            chosen = accepted[start : start + room]
            _add_values_entry(result, project, runs[index], chosen, request)
            room -= len(chosen)
            if start + len(chosen) < len(accepted):
                token = f"{index}:{start + len(chosen)}"
                break
    if token:
        result.nextPage.nextPageToken = token
    return Response.proto(result.SerializeToString())


def _add_values_entry(
    result: Any, project: store.Project, run: store.Run, attrs: list[store.Attribute], request: Request
) -> None:
    if not attrs:
        return
    entry = result.entries.add(experimentId=run.uuid, experimentShortId=run.sys_id)
    request.note_run(run.sys_id)
    for attr in attrs:
        fill_attribute(entry.attributes.add(), attr, project)


def _resume_point(token: str | None) -> tuple[int, int]:
    """(run index, attribute index) where a values page continues."""
    if not token:
        return 0, 0
    try:
        run_at, attr_at = token.split(":")
        return int(run_at), int(attr_at)
    except ValueError as exc:
        raise HttpError(400, f"invalid nextPageToken {token!r}") from exc


# ---------------------------------------------------------------------------- series windows with lineage
@dataclass(frozen=True)
class Segment:
    """Part of a (possibly inherited) series: points with lower < step <= upper."""

    series: store.Series
    lower: float | None
    upper: float | None


def lineage_segments(project: store.Project, run: store.Run, path: str, full: bool) -> list[Segment]:
    """FULL: the ancestors' points up to each fork step, then the run's own points after its fork step."""
    attr = run.attributes.get(path)
    own = [Segment(attr.series, None, None)] if attr is not None and attr.series is not None else []
    parent = project.run(run.fork_parent) if full and run.fork_parent else None
    if parent is None:
        return own
    cap = run.fork_step
    inherited = [Segment(s.series, s.lower, _min(s.upper, cap)) for s in lineage_segments(project, parent, path, True)]
    return inherited + [Segment(s.series, _max(s.lower, cap), s.upper) for s in own]


def _min(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass
class Window:
    steps: np.ndarray
    values: list | np.ndarray
    timestamps: np.ndarray


def read_window(
    segments: list[Segment],
    step_from: float | None,
    step_to: float | None,
    after: float | None,
    limit: int,
    descending: bool,
) -> Window:
    """Up to `limit` points in [step_from, step_to], strictly after `after` in the given order."""
    parts: list[tuple] = []
    remaining = limit
    ordered = reversed(segments) if descending else segments
    for seg in ordered:
        if remaining <= 0:
            break
        if descending:
            upper = _min(_min(step_to, seg.upper), None if after is None else float(np.nextafter(after, -np.inf)))
            steps, values, stamps = seg.series.window(seg.lower, step_from, upper, remaining, tail=True)
            steps, values, stamps = steps[::-1], values[::-1], stamps[::-1]
        else:
            steps, values, stamps = seg.series.window(
                _max(after, seg.lower), step_from, _min(step_to, seg.upper), remaining
            )
        remaining -= len(steps)
        parts.append((steps, values, stamps))
    return _concat(parts)


def _concat(parts: list[tuple]) -> Window:
    if not parts:
        return Window(np.empty(0), [], np.empty(0, dtype=np.int64))
    steps = np.concatenate([np.asarray(p[0], dtype=np.float64) for p in parts])
    stamps = np.concatenate([np.asarray(p[2], dtype=np.int64) for p in parts])
    if all(isinstance(p[1], np.ndarray) for p in parts):
        values: list | np.ndarray = np.concatenate([p[1] for p in parts])
    else:
        values = [v for p in parts for v in p[1]]
    return Window(steps, values, stamps)


def _series_request(ctx: ServerContext, request: Request, item: dict) -> tuple[store.Project, list[Segment]] | None:
    series = item.get("series") or {}
    identifier = (series.get("holder") or {}).get("identifier") or ""
    found = resolve_run(ctx, identifier)
    if found is None:
        return None
    project, run = found
    request.note_run(run.sys_id)
    attr = visible_attribute(run, series.get("attribute") or "")
    if attr is None or attr.type not in store.SERIES_TYPES:
        return project, []
    return project, lineage_segments(project, run, attr.path, series.get("lineage", "FULL") == "FULL")


def _step_range(body: dict) -> tuple[float | None, float | None]:
    step_range = body.get("stepRange") or {}
    return step_range.get("from"), step_range.get("to")


# ---------------------------------------------------------------------------- D: float series
def float_series(ctx: ServerContext, request: Request, match) -> Response:
    body = request.json()
    limit = int(body.get("perSeriesPointsLimit") or 10_000)
    descending = body.get("order") == "descending"
    step_from, step_to = _step_range(body)
    windows = []
    with ctx.workspace.lock:  # read under the lock, encode outside it so concurrent requests overlap
        for item in body.get("requests") or []:
            resolved = _series_request(ctx, request, item)
            if resolved is not None:
                window = read_window(resolved[1], step_from, step_to, item.get("afterStep"), limit, descending)
                windows.append((str(item.get("requestId", "")), window))
    chunks = [
        wire.encode_float_series_entry(
            request_id, wire.encode_float_points(w.timestamps, w.steps, np.asarray(w.values, np.float64))
        )
        for request_id, w in windows
    ]
    return Response.proto(b"".join(chunks))


# ---------------------------------------------------------------------------- E: string / histogram / file series
def _decode_search_after(item: dict) -> tuple[float | None, int | None]:
    token = (item.get("searchAfter") or {}).get("token")
    if not token:
        return None, None
    try:
        state = json.loads(base64.urlsafe_b64decode(token.encode()))
        return state["after"], state["left"]
    except (ValueError, KeyError, TypeError) as exc:
        raise HttpError(400, f"invalid searchAfter token {token!r}") from exc


def _encode_search_after(after: float, left: int | None) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after, "left": left}).encode()).decode()


def _fill_point_object(obj: Any, kind: str, value: Any, project: store.Project) -> None:
    if kind == store.STRING_SERIES:
        obj.stringValue = str(value)
    elif kind == store.HISTOGRAM_SERIES:
        fill_histogram(obj.histogram, value)
    else:
        fill_file_ref(obj.fileRef, value, project)


def series_values(ctx: ServerContext, request: Request, match) -> Response:
    body = request.json()
    requested_limit = body.get("perSeriesPointsLimit")
    descending = body.get("order") == "descending"
    step_from, step_to = _step_range(body)
    result = series_values_pb2.ProtoSeriesValuesResponseDTO()
    with ctx.workspace.lock:
        for item in body.get("requests") or []:
            resolved = _series_request(ctx, request, item)
            if resolved is None:
                continue
            project, segments = resolved
            after, left = _decode_search_after(item)
            if left is None and requested_limit is not None:
                left = int(requested_limit)
            want = SERIES_PAGE_SIZE if left is None else min(SERIES_PAGE_SIZE, left)
            window = read_window(segments, step_from, step_to, after, want + 1, descending)
            kind = segments[0].series.kind if segments else store.STRING_SERIES
            _add_series_page(result, item, window, want, left, kind, project)
    return Response.proto(result.SerializeToString())


def _add_series_page(
    result: Any, item: dict, window: Window, want: int, left: int | None, kind: str, project: store.Project
) -> None:
    count = min(want, len(window.steps))
    entry = result.series.add(requestId=str(item.get("requestId", "")))
    for i in range(count):
        point = entry.seriesValues.values.add(timestamp_millis=int(window.timestamps[i]), step=float(window.steps[i]))
        _fill_point_object(point.object, kind, window.values[i], project)
    remaining = None if left is None else left - count
    finished = len(window.steps) <= want or remaining == 0
    entry.searchAfter.finished = finished
    entry.searchAfter.token = "" if finished else _encode_search_after(float(window.steps[count - 1]), remaining)


# ---------------------------------------------------------------------------- F: buckets
def _formula_attribute(formula: str) -> str:
    if not (formula.startswith("${") and formula.endswith("}")):
        raise HttpError(400, f"unsupported customYFormula {formula!r}: only ${{attribute}} is supported")
    out, escaped = [], False
    for ch in formula[2:-1]:
        if escaped or ch != "\\":
            out.append(ch)
            escaped = False
        else:
            escaped = True
    return "".join(out)


def _all_points(segments: list[Segment], step_from, step_to) -> Iterator[Window]:
    after = None
    while True:
        window = read_window(segments, step_from, step_to, after, STATS_CHUNK, False)
        if not len(window.steps):
            return
        yield window
        after = float(window.steps[-1])


def _step_bounds(series_segments: list[list[Segment]]) -> tuple[float, float] | None:
    low, high = math.inf, -math.inf
    for segments in series_segments:
        for window in _all_points(segments, None, None):
            low, high = min(low, float(window.steps[0])), max(high, float(window.steps[-1]))
    return None if low == math.inf else (low, high)


def buckets(ctx: ServerContext, request: Request, match) -> Response:
    try:
        body = requests_pb2.ProtoGetTimeseriesBucketsRequest.FromString(request.body)
    except Exception as exc:  # protobuf raises DecodeError; answer 400 like a server would
        raise HttpError(400, f"request body is not a ProtoGetTimeseriesBucketsRequest: {exc}") from exc
    view = body.view
    result = series_values_pb2.ProtoTimeseriesBucketsDTO()
    with ctx.workspace.lock:
        wanted = []
        for expression in body.expressions:
            found = resolve_run(ctx, expression.runId)
            segments: list[Segment] = []
            if found is not None:
                project, run = found
                request.note_run(run.sys_id)
                path = _formula_attribute(expression.customYFormula)
                attr = visible_attribute(run, path)
                if attr is not None and attr.type == store.FLOAT_SERIES:
                    full = expression.lineage == requests_pb2.ProtoLineage.FULL
                    segments = lineage_segments(project, run, path, full)
            wanted.append((expression.requestId, segments))
        has_range = view.HasField("from") and view.HasField("to")
        bounds = (getattr(view, "from"), view.to) if has_range else _step_bounds([s for _, s in wanted])
        for request_id, segments in wanted:
            entry = result.entries.add(requestId=request_id)
            if bounds is not None:
                _fill_buckets(entry, segments, bounds, max(1, view.maxBuckets or 1000))
    return Response.proto(result.SerializeToString())


def _fill_buckets(entry: Any, segments: list[Segment], bounds: tuple[float, float], count: int) -> None:
    """Neptune's layout: bucket 0 = (-inf, from], then count-1 equal buckets over (from, to]; 1 = (from, inf)."""
    edges = _bucket_edges(bounds, count)
    acc: dict[int, dict] = {}
    for window in _all_points(segments, None, None if count == 1 else bounds[1]):
        values = np.asarray(window.values, dtype=np.float64)
        index = np.clip(np.searchsorted(edges[1:], window.steps, side="left"), 0, count - 1)
        for i in np.unique(index):
            _accumulate(acc.setdefault(int(i), {}), window.steps[index == i], values[index == i])
    for i in range(count):
        bucket = entry.bucket.add(index=i, fromX=float(edges[i]), toX=float(edges[i + 1]))
        if i in acc:
            _write_bucket(bucket, acc[i])


def _bucket_edges(bounds: tuple[float, float], count: int) -> np.ndarray:
    low, high = bounds
    if count == 1:
        return np.array([low, math.inf])
    inner = np.linspace(low, high, count) if high > low else np.full(count, low)
    return np.concatenate(([-math.inf], inner))


def _accumulate(state: dict, steps: np.ndarray, values: np.ndarray) -> None:
    finite = np.isfinite(values)
    state["nan"] = state.get("nan", 0) + int(np.isnan(values).sum())
    state["pinf"] = state.get("pinf", 0) + int(np.isposinf(values).sum())
    state["ninf"] = state.get("ninf", 0) + int(np.isneginf(values).sum())
    if not finite.any():
        return
    fs, fv = steps[finite], values[finite]
    state.setdefault("first", (float(fs[0]), float(fv[0])))
    state["last"] = (float(fs[-1]), float(fv[-1]))
    state["count"] = state.get("count", 0) + int(fv.size)
    state["sum"] = state.get("sum", 0.0) + float(fv.sum())
    state["min"] = min(state.get("min", math.inf), float(fv.min()))
    state["max"] = max(state.get("max", -math.inf), float(fv.max()))


def _write_bucket(bucket: Any, state: dict) -> None:
    bucket.nanCount, bucket.positiveInfCount, bucket.negativeInfCount = state["nan"], state["pinf"], state["ninf"]
    if "first" not in state:
        return
    bucket.first.x, bucket.first.y = state["first"]
    bucket.last.x, bucket.last.y = state["last"]
    bucket.finitePointCount, bucket.localSum = state["count"], state["sum"]
    bucket.localMin, bucket.localMax = state["min"], state["max"]


# ---------------------------------------------------------------------------- G / H: signed URLs and storage
def _signature(ctx: ServerContext, project_id: str, path: str, expires: int) -> str:
    message = f"{project_id}\n{path}\n{expires}".encode()
    return hmac.new(ctx.auth.api_key.encode(), message, hashlib.sha256).hexdigest()[:32]


def signed_urls(ctx: ServerContext, request: Request, match) -> Response:
    files = request.json().get("files") or []
    expires = int(time.time() + ctx.faults.signed_url_ttl_s)
    out = []
    for item in files:
        project_id, path = item.get("project_identifier") or "", item.get("path") or ""
        ctx.project(project_id)
        url = (
            f"{ctx.base_url}{STORAGE_PREFIX}{quote(project_id, safe='')}/{quote(path, safe='/')}"
            f"?expires={expires}&sig={_signature(ctx, project_id, path, expires)}"
        )
        out.append({"path": path, "project_identifier": project_id, "provider": "aws", "url": url})
    return Response.json({"files": out})


def storage_download(ctx: ServerContext, request: Request, match) -> Response:
    project_id, path = unquote(match["project"]), unquote(match["path"])
    try:
        expires = int(request.query.get("expires", "0"))
    except ValueError:
        expires = 0
    expected = _signature(ctx, project_id, path, expires)
    if not hmac.compare_digest(expected, request.query.get("sig", "")) or expires < time.time():
        return Response(400, b"<Error><Code>ExpiredToken</Code></Error>", "application/xml")
    project = ctx.workspace.project(project_id)
    blob = project.files.get(path) if project is not None else None
    if blob is None:
        return Response(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
    return Response(200, blob.chunks(), blob.mime_type, length=blob.size)


def register(router: Router) -> None:
    """Routes of the neptune-query (3.x) protocol."""
    lb = "/api/leaderboard/v1"
    router.route(
        "POST",
        lb + r"/leaderboard/attributes/definitions/query",
        attribute_definitions,
        endpoint="v3.attribute_definitions",
    )
    router.route("POST", lb + r"/proto/leaderboard/entries/search/?", search_entries, endpoint="v3.search")
    router.route("POST", lb + r"/proto/leaderboard/entries/global/search/?", global_search, endpoint="v3.global_search")
    router.route("POST", lb + r"/proto/leaderboard/attributes/query", attribute_values, endpoint="v3.attribute_values")
    router.route("POST", lb + r"/proto/attributes/series/float", float_series, endpoint="v3.float_series")
    router.route("POST", lb + r"/proto/attributes/series", series_values, endpoint="v3.series")
    router.route("POST", lb + r"/proto/attributes/timeseries/buckets", buckets, endpoint="v3.buckets")
    router.route("POST", r"/api/storagebridge/v1/signedUrl", signed_urls, endpoint="v3.signed_url")
    router.route(
        "GET",
        STORAGE_PREFIX + r"(?P<project>[^/]+)/(?P<path>.+)",
        storage_download,
        auth=False,
        endpoint="storage.download",
    )

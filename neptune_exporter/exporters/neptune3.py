"""Neptune 3.x source over the public neptune-query API: run discovery, streamed run export, typed errors."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from neptune_exporter.errors import (
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
from neptune_exporter.exporters.where import parse_where, to_neptune_query_filter
from neptune_exporter.model import AttributeType, ProjectId, RunRef, as_utc, project_files_dir, sanitize_name
from neptune_exporter.rows import parameter_rows, series_rows
from neptune_exporter.selection import AttributeSelection, RunSelection, compile_regex, matches_kind, matches_path
from neptune_exporter.settings import Settings, neptune_api_token
from neptune_exporter.storage.files import ExportedFile, disk_part, file_leaf, publish, staging_dir
from neptune_exporter.storage.manifest import Watermark

if TYPE_CHECKING:
    from neptune_query.filters import KNOWN_TYPES_LITERAL, BaseAttributeFilter

PARAMETER_TYPES: tuple[KNOWN_TYPES_LITERAL, ...] = ("float", "int", "string", "bool", "datetime", "string_set")
SERIES_TYPES: tuple[KNOWN_TYPES_LITERAL, ...] = ("float_series", "string_series", "histogram_series")
FILE_TYPES: tuple[KNOWN_TYPES_LITERAL, ...] = ("file", "file_series")
ALL_TYPES = PARAMETER_TYPES + SERIES_TYPES + FILE_TYPES

# sys/* attributes read while listing runs (absent ones are simply missing from the table).
LISTING_ATTRIBUTES = [
    "sys/id",
    "sys/custom_run_id",
    "sys/name",
    "sys/experiment/name",
    "sys/creation_time",
    "sys/modification_time",
    "sys/archived",
    "sys/trashed",
]
# The fork relation (3.x): the parent's run id (custom run id, else sys id — how runs are named here) and the
# fork step. Exported as ordinary parameter rows when selected, and always put in the manifest's source facts.
FORK_PARENT_ATTRIBUTES = ("sys/forking/parent", "sys/fork/parent")
FORK_STEP_ATTRIBUTES = ("sys/forking/step", "sys/fork/step")
FORK_ATTRIBUTES = FORK_PARENT_ATTRIBUTES + FORK_STEP_ATTRIBUTES
MAX_PUSHED_RUN_IDS = 100  # longer exact run-id lists are filtered locally to keep the query small
FILES_PER_DOWNLOAD = 100
SERIES_PER_REQUEST = 64
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STATUS = re.compile(r"(?:Response status|Last response status): (\d{3})")


# --------------------------------------------------------------------------- token and client setup


def required_token(token: str | None) -> str:
    """The token; InvalidTokenError when none was given."""
    if not token:
        raise InvalidTokenError(
            "no Neptune API token was given", "pass --api-token or set the NEPTUNE_API_TOKEN environment variable"
        )
    return token


def server_of_token(token: str | None) -> str:
    """The API URL a Neptune token points to; InvalidTokenError when missing or malformed."""
    try:
        data = json.loads(base64.b64decode(required_token(token).strip().encode(), validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        data = None
    if not isinstance(data, dict) or not (data.get("api_url") or data.get("api_address")):
        raise InvalidTokenError(
            "the Neptune API token is malformed (not a Neptune token)",
            "copy the API token again from your Neptune profile (it is a long base64 string)",
        )
    return str(data.get("api_url") or data.get("api_address")).rstrip("/")


def configure_neptune_query(settings: Settings) -> None:
    """Set neptune-query's knobs from our settings. The client reads them only from process-wide NEPTUNE_QUERY_*
    environment variables (at call time), so this is the one function that writes them; Neptune3Source calls it,
    with the token, right before each call into the client (never at import or in a constructor)."""
    os.environ["NEPTUNE_QUERY_RETRY_SOFT_TIMEOUT"] = str(settings.source_retry_timeout_s)
    os.environ["NEPTUNE_QUERY_RETRY_HARD_TIMEOUT"] = str(2 * settings.source_retry_timeout_s)
    os.environ["NEPTUNE_QUERY_ATTRIBUTE_VALUES_BATCH_SIZE"] = str(settings.attributes_per_request)
    os.environ["NEPTUNE_QUERY_SERIES_BATCH_SIZE"] = str(min(settings.attributes_per_request, SERIES_PER_REQUEST))
    os.environ.setdefault("NEPTUNE_QUERY_MAX_WORKERS", "8")
    os.environ.setdefault("NEPTUNE_ENABLE_COLORS", "false")


# --------------------------------------------------------------------------- errors


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _status_of(exc: BaseException) -> int | None:
    match = _STATUS.search(_ANSI.sub("", str(exc)))
    return int(match.group(1)) if match else None


def translate_error(exc: BaseException, project: str | None = None, query: bool = False) -> NeptuneExporterError:
    """A neptune-query (or network) exception as one of our typed errors with a remedy."""
    from neptune_query import exceptions as nqe

    name = type(exc).__name__
    if isinstance(exc, (nqe.NeptuneInvalidCredentialsError, nqe.NeptuneApiTokenNotProvided)):
        return InvalidTokenError(
            "the Neptune server rejected the API token",
            "check NEPTUNE_API_TOKEN / --api-token (copy it again from your profile)",
        )
    if isinstance(exc, nqe.NeptuneProjectInaccessible):
        return _project_error(project)
    if isinstance(exc, nqe.AttributeTypeInferenceError):
        return InvalidQueryError(
            f"--where: {_first_line(exc)}",
            "an attribute in --where has different types in different runs; use another attribute",
        )
    if isinstance(exc, nqe.NeptuneRetryError):
        if _status_of(exc) == 429:
            return RateLimitedError("the Neptune server kept rate-limiting requests", "retry later or lower --workers")
        return SourceUnavailableError(
            f"the Neptune server did not answer successfully ({_first_line(exc)})",
            "check the server and the network; the export resumes where it stopped when run again",
        )
    if isinstance(exc, nqe.NeptuneFileDownloadError):
        return SourceUnavailableError(f"a file download failed ({_first_line(exc)})", "run the export again")
    if isinstance(exc, nqe.NeptuneUnexpectedResponseError):
        return _unexpected_response(exc, project, query)
    if isinstance(exc, ValueError) and "'run_id' must be set" in str(exc):
        return UnsupportedError(
            "neptune-query cannot read files of a run without a custom run id",
            "exclude files for this run (--exclude files) or export it with --source neptune2 if it is a 2.x run",
        )
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)) or name.endswith(("ConnectError", "TimeoutException")):
        return SourceUnavailableError(
            f"cannot reach the Neptune server ({name}: {exc})", "check the server URL and network"
        )
    if isinstance(exc, nqe.NeptuneError):
        return TerminalError(
            f"neptune-query failed: {_first_line(exc)}", "check the options; report the message if it persists"
        )
    return TerminalError(f"neptune-query failed: {name}: {exc}", "report this message with the run it names")


def _project_error(project: str | None) -> ProjectNotFoundError:
    return ProjectNotFoundError(
        f"project {project!r} does not exist or the token has no access to it",
        "check the workspace/project name (-p workspace/project) and that your account can view it",
    )


def _unexpected_response(exc: BaseException, project: str | None, query: bool) -> NeptuneExporterError:
    status = _status_of(exc)
    if status in (401,):
        return InvalidTokenError("the Neptune server rejected the API token", "check NEPTUNE_API_TOKEN / --api-token")
    if status in (403, 404) and project is not None:
        return _project_error(project)
    if status == 400 and query:
        return InvalidQueryError(
            f"the Neptune server refused the run filter ({_ANSI.sub('', str(exc)).strip().splitlines()[-1]})",
            "simplify --where / --runs and check attribute names and types",
        )
    return TerminalError(
        f"unexpected answer from the Neptune server (HTTP {status})", "check the server version and the options"
    )


@contextmanager
def neptune_errors(
    project: str | None = None, run: str | None = None, attribute: str | None = None, query: bool = False
):
    """Re-raise anything neptune-query throws as a typed error carrying the run and attribute."""
    try:
        yield
    except NeptuneExporterError as exc:
        exc.run = exc.run or run
        exc.attribute = exc.attribute or attribute
        raise
    except Exception as exc:  # every foreign exception becomes one typed error
        error = translate_error(exc, project, query)
        error.run, error.attribute = run, attribute
        raise error from exc


# --------------------------------------------------------------------------- small conversions


def _python_datetime(value: Any) -> datetime | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        return as_utc(value)
    return None


def _present(value: Any) -> bool:
    if value is None or value is pd.NaT:
        return False
    return not (isinstance(value, float) and np.isnan(value))


def _text(value: Any) -> str | None:
    return str(value) if _present(value) and str(value) != "" else None


def _truthy(value: Any) -> bool:
    return bool(value) if _present(value) else False


def _column(frame: pd.DataFrame, name: str, type_name: str) -> pd.Series | None:
    key = f"{name}:{type_name}"
    return frame[key] if key in frame.columns else None


def parameter_value(type_name: str, value: Any) -> Any:
    """A table cell as the Python value rows.parameter_rows expects."""
    if type_name == "datetime":
        return _python_datetime(value)
    if type_name == "string_set":
        return sorted(value) if _present(value) else []
    if type_name == "int":
        return int(value)
    if type_name == "bool":
        return bool(value)
    if type_name == "float":
        return float(value)
    return value


@dataclass
class SeriesChunk:
    """Points of one series read from a wide neptune-query frame (ascending steps)."""

    path: str
    steps: np.ndarray
    values: np.ndarray
    timestamps_ms: np.ndarray

    def __len__(self) -> int:
        return int(self.steps.size)


def split_series_frame(frame: pd.DataFrame) -> dict[str, SeriesChunk]:
    """A fetch_metrics/fetch_series frame (index run, step; columns path × value/absolute_time) per path, vectorised."""
    if frame.empty or not isinstance(frame.columns, pd.MultiIndex):
        return {}
    steps = frame.index.get_level_values("step").to_numpy(dtype=np.float64)
    values = frame.xs("value", axis=1, level=1)  # one 2-D array per field: per-series slices copy nothing
    times_frame = frame.xs("absolute_time", axis=1, level=1)
    if not times_frame.columns.equals(values.columns):
        times_frame = times_frame.reindex(columns=values.columns)
    times, value_columns = times_frame.to_numpy(dtype="datetime64[ms]"), values.to_numpy()
    chunks = {}
    for position, path in enumerate(values.columns):
        present = ~np.isnat(times[:, position])
        if not present.any():
            continue
        chunks[path] = SeriesChunk(
            path, steps[present], value_columns[present, position], times[present, position].astype(np.int64)
        )
    return chunks


# --------------------------------------------------------------------------- files on disk


def step_label(step: float) -> str:
    return f"step_{step:.6f}".rstrip("0").rstrip(".")


def _staging_key(attribute: str, step: float | None) -> tuple:
    """Where neptune-query would put a download (its path sanitization): files sharing a key go in separate calls."""
    parts = tuple("".join(c if (c.isalnum() or c in "_-") else "_" for c in p) for p in attribute.split("/"))
    return parts, step


def collision_free_groups(files: list, size: int) -> Iterator[list]:
    """Groups of at most `size` files whose download targets cannot collide."""
    pending = list(files)
    while pending:
        group: list = []
        keys: set[tuple] = set()
        rest: list = []
        for item in pending:
            key = _staging_key(item.attribute_path, item.step)
            if key in keys or len(group) >= size:
                rest.append(item)
            else:
                keys.add(key)
                group.append(item)
        yield group
        pending = rest


# --------------------------------------------------------------------------- the source


class Neptune3Source:
    """Reads Neptune 3.x projects with neptune-query (the public API only)."""

    kind = "neptune3"

    def __init__(self, api_token: str | None = None, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        self._token = neptune_api_token(api_token)
        try:
            self.server = server_of_token(self._token)
        except InvalidTokenError:
            self.server = ""
        self._client_ready = False

    def __repr__(self) -> str:  # never shows the token
        return f"Neptune3Source(server={self.server!r})"

    def _ready(self) -> None:
        """Validate the token once; make it and our knobs neptune-query's (process-wide) configuration before every call."""
        import neptune_query

        token = required_token(self._token)
        if not self._client_ready:
            self.server = server_of_token(token)
            self._client_ready = True
        configure_neptune_query(self.settings)
        neptune_query.set_api_token(token)

    # ---------------------------------------------------------------- access and listing

    def check_access(self, project_id: ProjectId) -> None:
        """One small query: token accepted and project readable, else InvalidTokenError / ProjectNotFoundError."""
        _check_project_id(project_id)
        self._ready()
        from neptune_query import runs as nq_runs
        from neptune_query.filters import Attribute

        with neptune_errors(project=project_id):
            nq_runs.fetch_runs_table(
                project=project_id,
                attributes=["sys/id"],
                sort_by=Attribute("sys/creation_time", type="datetime"),
                limit=1,
            )

    def list_projects(self, workspace: str) -> list[ProjectId]:
        raise UnsupportedError(
            f"neptune-query cannot list the projects of workspace {workspace!r}",
            "name the projects with -p workspace/project (repeatable)",
        )

    def list_runs(self, project_id: ProjectId, selection: RunSelection) -> list[RunRef]:
        """Runs of the project matching the selection (server-side filter, then exact local checks)."""
        _check_project_id(project_id)
        runs_pattern = compile_regex(selection.runs_regex, "--runs")
        experiments_pattern = compile_regex(selection.experiments_regex, "--experiments")
        server_filter = build_run_filter(selection)
        self._ready()
        frame = self._listing_frame(project_id, server_filter)
        refs = [
            ref
            for ref in runs_from_table(project_id, frame)
            if _selected(ref, selection, runs_pattern, experiments_pattern)
        ]
        return refs

    def _listing_frame(self, project_id: ProjectId, server_filter) -> pd.DataFrame:
        from neptune_query import runs as nq_runs
        from neptune_query.filters import Attribute

        with neptune_errors(project=project_id, query=server_filter is not None):
            return nq_runs.fetch_runs_table(
                project=project_id,
                runs=server_filter,
                attributes=list(LISTING_ATTRIBUTES),
                sort_by=Attribute("sys/creation_time", type="datetime"),
                sort_direction="asc",
                type_suffix_in_column_names=True,
            )

    # ---------------------------------------------------------------- export

    def export_run(
        self,
        run: RunRef,
        attributes: AttributeSelection,
        files_root: Path,
        watermarks: dict[str, Watermark] | None = None,
        progress: ProgressCallback | None = None,
    ) -> RunContent:
        """A lazy stream of the run's rows; files are downloaded while the stream is consumed."""
        compile_regex(attributes.regex, "--attributes")
        self._ready()
        export = RunExport(self.settings, run, attributes, Path(files_root), watermarks or {}, progress, self._ready)
        content = RunContent(batches=export.batches(), files=export.files, source_facts=export.facts)
        return content


def _check_project_id(project_id: str) -> None:
    if not re.fullmatch(r"[^/\s]+/[^/\s]+", project_id or ""):
        raise ProjectNotFoundError(
            f"{project_id!r} is not a project name", "name projects as workspace/project, e.g. -p my-team/my-project"
        )


def archived_too():
    """A always-true condition naming sys/trashed: Neptune searches archived (trashed) runs only when asked."""
    from neptune_query.filters import Attribute, Filter

    trashed = Attribute("sys/trashed", type="bool")
    return Filter.exists(trashed) | ~Filter.exists(trashed)


def build_run_filter(selection: RunSelection):
    """The server-side part of a run selection as a neptune-query Filter (None: every run)."""
    from neptune_query.filters import Attribute, Filter

    parts = [archived_too()] if selection.include_archived else []
    if selection.where:
        parts.append(to_neptune_query_filter(parse_where(selection.where)))
    if selection.modified_after is not None:
        after = as_utc(selection.modified_after)
        parts.append(Filter.gt(Attribute("sys/modification_time", type="datetime"), after))
    if selection.run_ids and len(selection.run_ids) <= MAX_PUSHED_RUN_IDS:
        ids = Filter.eq(Attribute("sys/custom_run_id", type="string"), selection.run_ids[0])
        ids = ids | Filter.eq(Attribute("sys/id", type="string"), selection.run_ids[0])
        for run_id in selection.run_ids[1:]:
            ids = ids | Filter.eq(Attribute("sys/custom_run_id", type="string"), run_id)
            ids = ids | Filter.eq(Attribute("sys/id", type="string"), run_id)
        parts.append(ids)
    if selection.query:
        raise UnsupportedError("--query (raw NQL) is for Neptune 2.x sources", "use --where with --source neptune3")
    if not parts:
        return None
    result = parts[0]
    for part in parts[1:]:
        result = result & part
    return result


def _columns_first_present(frame: pd.DataFrame, names: tuple[str, ...], type_name: str) -> list:
    """Per row, the first of `names` that has a value (columns read once, not cell by cell)."""
    columns = [c.tolist() for name in names if (c := _column(frame, name, type_name)) is not None]
    result = []
    for row in range(len(frame)):
        result.append(next((col[row] for col in columns if _present(col[row])), None))
    return result


def runs_from_table(project_id: ProjectId, frame: pd.DataFrame) -> Iterator[RunRef]:
    """RunRefs from the listing table (custom run id as run id, else sys/id)."""
    if frame.empty:
        return
    sys_ids = _columns_first_present(frame, ("sys/id",), "string")
    customs = _columns_first_present(frame, ("sys/custom_run_id",), "string")
    experiments = _columns_first_present(frame, ("sys/experiment/name", "sys/name"), "string")
    created = _columns_first_present(frame, ("sys/creation_time",), "datetime")
    modified = _columns_first_present(frame, ("sys/modification_time",), "datetime")
    archived = _columns_first_present(frame, ("sys/archived", "sys/trashed"), "bool")
    for row in range(len(frame)):
        sys_id = _text(sys_ids[row])
        if sys_id is None:
            continue
        custom = _text(customs[row])
        custom = None if custom == sys_id else custom  # servers report sys/id when a run has no custom id
        yield RunRef(
            project_id=project_id,
            run_id=custom or sys_id,
            sys_id=sys_id,
            experiment_name=_text(experiments[row]),
            custom_run_id=custom,
            creation_time=_python_datetime(created[row]),
            modification_time=_python_datetime(modified[row]),
            archived=_truthy(archived[row]),
            source_kind="neptune3",
        )


def _selected(ref: RunRef, selection: RunSelection, runs_pattern, experiments_pattern) -> bool:
    if ref.archived and not selection.include_archived:
        return False
    if selection.run_ids and not ({ref.run_id, ref.sys_id, ref.custom_run_id} & set(selection.run_ids)):
        return False
    if runs_pattern is not None and not any(
        value is not None and runs_pattern.search(value) for value in (ref.run_id, ref.custom_run_id, ref.sys_id)
    ):
        return False
    if experiments_pattern is not None and not (
        ref.experiment_name and experiments_pattern.search(ref.experiment_name)
    ):
        return False
    if selection.modified_after is not None and ref.modification_time is not None:
        return ref.modification_time > as_utc(selection.modified_after)
    return True


def _series_values(type_name: str, values: np.ndarray) -> pa.Array | list[dict[str, Any]]:
    """A series chunk's values as `series_rows` takes them: histograms as dicts, the others as Arrow arrays."""
    if type_name == "histogram_series":
        return [{"type": h.type, "edges": list(h.edges), "values": list(h.values)} for h in values]
    if type_name == "string_series":
        return pa.array(values, type=pa.string())
    return pa.array(values.astype(np.float64, copy=False), type=pa.float64(), from_pandas=False)


# --------------------------------------------------------------------------- one run's export


@dataclass
class RunExport:
    """State of one run's streamed export: what it selects, where files go, what it found."""

    settings: Settings
    run: RunRef
    selection: AttributeSelection
    files_root: Path
    watermarks: dict[str, Watermark]
    progress: ProgressCallback | None
    use_token: Callable[[], None] = lambda: None  # makes this source's token neptune-query's before each call
    files: list[ExportedFile] = field(default_factory=list)
    facts: dict = field(default_factory=dict)

    # ---------------------------------------------------------------- plumbing

    @property
    def project(self) -> str:
        return self.run.project_id

    def runs_argument(self):
        """A filter selecting exactly this run by sys/id (archived runs included)."""
        from neptune_query.filters import Attribute, Filter

        by_id = Filter.eq(Attribute("sys/id", type="string"), self.run.sys_id)
        return by_id & archived_too() if self.run.archived else by_id

    def metric_runs_argument(self):
        """The custom run id when there is one: neptune-query then skips the run search (its fast path)."""
        return [self.run.custom_run_id] if self.run.custom_run_id else self.runs_argument()

    @contextmanager
    def errors(self, attribute: str | None = None):
        """Around every neptune-query call: this source's token, typed errors naming the run and attribute."""
        with neptune_errors(project=self.project, run=self.run.run_id, attribute=attribute):
            self.use_token()
            yield

    def report(self, batch: pa.RecordBatch, extra_bytes: int = 0) -> pa.RecordBatch:
        if self.progress is not None:
            self.progress(batch.num_rows, batch.nbytes + extra_bytes)
        return batch

    def lower_bound(self, path: str) -> float | None:
        """First step to fetch: just above the watermark's last step (None: from the start)."""
        mark = self.watermarks.get(path)
        if mark is None or mark.last_step is None:
            return None
        return float(np.nextafter(float(mark.last_step), np.inf))

    # ---------------------------------------------------------------- the stream

    def batches(self) -> Iterator[pa.RecordBatch]:
        found = self.selected_attributes()
        yield from self.parameter_batches(found.get("parameters", []))
        yield from self.series_batches(dict.fromkeys(found.get("float_series", []), "float_series"))
        other = {path: t for t in ("string_series", "histogram_series") for path in found.get(t, [])}
        yield from self.series_batches(other)  # one fetch_series for both kinds
        yield from self.file_batches(found.get("file", []))
        yield from self.file_series_batches(found.get("file_series", []))

    def selected_types(self) -> list[KNOWN_TYPES_LITERAL]:
        return [t for t in ALL_TYPES if matches_kind(AttributeType(t), self.selection)]

    def selected_attributes(self) -> dict[str, list]:
        """One table read: {"parameters": [(path, type, value)], "<series type>": [paths], "file": [File]}.

        The fork attributes are read whatever the selection, for the source facts; rows only when selected.
        """
        pattern = compile_regex(self.selection.regex, "--attributes")
        types = self.selected_types()
        found: dict[str, list] = {}
        frame = self.attribute_table()
        if frame.empty:
            return found
        for position, column in enumerate(frame.columns):
            path, _, type_name = column.rpartition(":")
            value = frame.iat[0, position]
            self.note_fork_fact(path, value)
            if type_name not in types or not matches_path(path, self.selection, pattern):
                continue
            if type_name in PARAMETER_TYPES:
                found.setdefault("parameters", []).append((path, type_name, value))
            elif type_name == "file":
                if _present(value):
                    found.setdefault("file", []).append(value)
            else:
                found.setdefault(type_name, []).append(path)
        return found

    def attribute_table(self) -> pd.DataFrame:
        """The run's row of selected types plus the fork attributes, columns `path:type` (names batched per request)."""
        from neptune_query import runs as nq_runs
        from neptune_query.filters import Attribute, AttributeFilter

        types = self.selected_types()
        names = list(self.selection.names) if self.selection.names and not self.selection.regex else None
        wanted: BaseAttributeFilter = AttributeFilter(name=list(FORK_ATTRIBUTES))
        if types:
            wanted = AttributeFilter(name=names, type=types) | wanted
        with self.errors():
            return nq_runs.fetch_runs_table(
                project=self.project,
                runs=self.runs_argument(),
                # neptune-query takes any BaseAttributeFilter (an `a | b` alternative too) but annotates AttributeFilter
                attributes=wanted,  # type: ignore[arg-type]
                sort_by=Attribute("sys/creation_time", type="datetime"),
                type_suffix_in_column_names=True,
            )

    # ---------------------------------------------------------------- parameters

    def parameter_batches(self, items: list[tuple[str, str, Any]]) -> Iterator[pa.RecordBatch]:
        for chunk in chunked(sorted(items, key=lambda item: item[0]), self.settings.attributes_per_request):
            rows = []
            for path, type_name, raw in chunk:
                if not _present(raw) and type_name != "float":
                    continue
                rows.append((path, type_name, parameter_value(type_name, raw)))
            if rows:
                yield self.report(parameter_rows(self.project, self.run.run_id, rows))

    def note_fork_fact(self, path: str, value: Any) -> None:
        """`fork_parent` (the parent's run id) and `fork_step` for the manifest, from the fork attributes."""
        if path in FORK_PARENT_ATTRIBUTES and _present(value):
            self.facts["fork_parent"] = str(value)
        elif path in FORK_STEP_ATTRIBUTES and _present(value):
            self.facts["fork_step"] = float(value)

    # ---------------------------------------------------------------- series

    def fetch_points(self, metrics: bool, names: list[str], step_range: tuple, limit: int) -> dict[str, SeriesChunk]:
        """The last `limit` points (per series) within the step range, as arrays (metrics: float series)."""
        from neptune_query import runs as nq_runs

        common = dict(
            project=self.project,
            runs=self.runs_argument(),
            attributes=list(names),
            include_time="absolute",
            step_range=step_range,
            lineage_to_the_root=False,
            tail_limit=limit,
        )
        with self.errors(attribute=names[0] if len(names) == 1 else None):
            if metrics:
                common["runs"] = self.metric_runs_argument()
                frame = nq_runs.fetch_metrics(**common, include_point_previews=self.selection.include_previews)
            else:
                frame = nq_runs.fetch_series(**common)
        return split_series_frame(frame)

    def series_windows(self, metrics: bool, names: list[str]) -> Iterator[SeriesChunk]:
        """Every point after the watermarks, in requests of ≤ series_batch_rows points (windows from the end).

        neptune-query only limits from the tail, so series are read backwards in rounds: a window holds the
        last points below the previous window. Series whose previous windows start at the same step (logged
        together) share every request; each chunk is in ascending step order.
        """
        by_bound: dict[float | None, list[str]] = {}
        for name in names:
            by_bound.setdefault(self.lower_bound(name), []).append(name)
        rows = max(1, self.settings.series_batch_rows)
        for low, group_names in by_bound.items():
            pending: dict[str, float | None] = dict.fromkeys(sorted(group_names))
            while pending:
                pending = yield from self.window_round(metrics, low, pending, rows)

    def window_round(
        self, metrics: bool, low: float | None, pending: dict[str, float | None], rows: int
    ) -> Generator[SeriesChunk, None, dict[str, float | None]]:
        """One window per pending series (name → first step already read, exclusive; None: none read yet).

        Returns the series that may have earlier points, with their new exclusive bound.
        """
        by_high: dict[float | None, list[str]] = {}
        for name, high in pending.items():
            by_high.setdefault(high, []).append(name)
        more: dict[str, float | None] = {}
        for high, shared in by_high.items():
            top = None if high is None else float(np.nextafter(high, -np.inf))
            if top is not None and low is not None and top < low:
                continue
            for group in chunked(shared, SERIES_PER_REQUEST):
                limit = max(1, rows // len(group))
                chunks = self.fetch_points(metrics, group, (low, top), limit)
                for name in group:
                    chunk = chunks.get(name)
                    if chunk is None:
                        continue
                    yield chunk
                    if len(chunk) >= limit:
                        more[name] = float(chunk.steps[0])
        return more

    def series_batches(self, types: dict[str, str]) -> Iterator[pa.RecordBatch]:
        """Rows of the series named in `types` (path → type; float series, or string and histogram ones, together)."""
        metrics = any(t == "float_series" for t in types.values())
        for chunk in self.series_windows(metrics, list(types)):
            type_name = types[chunk.path]
            batch = series_rows(
                self.project,
                self.run.run_id,
                chunk.path,
                type_name,
                chunk.steps,
                _series_values(type_name, chunk.values),
                chunk.timestamps_ms,
            )
            yield self.report(batch)

    # ---------------------------------------------------------------- files

    def run_folder(self) -> Path:
        return project_files_dir(self.files_root, self.project) / sanitize_name(self.run.run_id)

    def final_path(self, attribute: str, step: float | None, source_path: str) -> Path:
        folder = self.run_folder().joinpath(*(disk_part(p) for p in attribute.split("/") if p))
        leaf = file_leaf(source_path)
        return folder / (f"{step_label(step)}-{leaf}" if step is not None else leaf)

    def file_batches(self, files: list) -> Iterator[pa.RecordBatch]:
        for chunk in chunked(sorted(files, key=lambda f: f.attribute_path), FILES_PER_DOWNLOAD):
            stored = self.download(chunk)
            rows = [(f.attribute_path, "file", stored[(f.attribute_path, None)].relative_path) for f in chunk]
            yield self.report(parameter_rows(self.project, self.run.run_id, rows), sum(s.size for s in stored.values()))

    def file_series_batches(self, names: list[str]) -> Iterator[pa.RecordBatch]:
        for chunk in self.series_windows(False, names):
            for start in range(0, len(chunk), FILES_PER_DOWNLOAD):
                part = slice(start, start + FILES_PER_DOWNLOAD)
                files = list(chunk.values[part])
                stored = self.download(files)
                steps = chunk.steps[part]
                paths = [stored[(chunk.path, float(step))].relative_path for step in steps]
                batch = series_rows(
                    self.project, self.run.run_id, chunk.path, "file_series", steps, paths, chunk.timestamps_ms[part]
                )
                yield self.report(batch, sum(s.size for s in stored.values()))

    def download(self, files: list) -> dict[tuple[str, float | None], ExportedFile]:
        """Download neptune-query File objects, move them to their final place, record size and sha256."""
        stored: dict[tuple[str, float | None], ExportedFile] = {}
        for group in collision_free_groups(files, FILES_PER_DOWNLOAD):
            with staging_dir(self.files_root / ".staging", prefix="") as staging:
                downloaded = self.download_group(group, staging)
                for item in group:
                    key = (item.attribute_path, None if item.step is None else float(item.step))
                    stored[key] = self.place(item, downloaded.get(key))
        return stored

    def download_group(self, group: list, staging: Path) -> dict[tuple[str, float | None], Path]:
        from neptune_query import runs as nq_runs

        with self.errors(attribute=group[0].attribute_path if len(group) == 1 else None):
            frame = nq_runs.download_files(files=group, destination=staging)
        result: dict[tuple[str, float | None], Path] = {}
        for attribute in frame.columns:
            for (_, step), local in frame[attribute].items():
                if _present(local):
                    result[(attribute, None if not _present(step) else float(step))] = Path(local)
        return result

    def place(self, item, local: Path | None) -> ExportedFile:
        step = None if item.step is None else float(item.step)
        if local is None or not local.exists():
            raise TerminalError(
                f"file {item.path!r} of {item.attribute_path!r} is missing from Neptune storage",
                "exclude the attribute (--attributes / --exclude files) to export the rest of the run",
                run=self.run.run_id,
                attribute=item.attribute_path,
            )
        target = self.final_path(item.attribute_path, step, item.path)
        exported = publish(local, target, self.files_root, self.project, item.attribute_path, step)
        self.files.append(exported)
        return exported

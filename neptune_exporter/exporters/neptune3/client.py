"""neptune-query's setup (token, process-wide knobs) and its exceptions as our typed errors."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import warnings
from contextlib import contextmanager

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
from neptune_exporter.process_memory import collect_after_response
from neptune_exporter.settings import Settings

SERIES_PER_REQUEST = 64
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STATUS = re.compile(r"(?:Response status|Last response status): (\d{3})")


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
    quiet_client_retries()


def quiet_client_retries() -> None:
    """No warning (two lines on stderr) for each request neptune-query retries itself within its window: when it gives
    up, our retry policy logs one line naming the run and the attempt (the filter is kept once, however often set)."""
    from neptune_query import warnings as nq_warnings

    retried = (nq_warnings.Http429Warning, nq_warnings.Http503Warning, nq_warnings.Http5xxWarning)
    for category in (*retried, nq_warnings.HttpOtherWarning):
        warnings.filterwarnings("ignore", category=category)


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


def fetch_float_points(
    project: str, sys_id: str, names: list[str], step_range: tuple, limit: int, previews: bool
) -> dict[str, list[tuple]]:
    """The last `limit` points (per series) of the run's float series `names` within the step range: neptune-query's
    own request, paging and retries (`fetch_multiple_series_values`), for a run known by its sys id (no run search,
    no attribute definitions: `fetch_metrics`'s fast path) and without its pandas frame. Per path: the points as
    tuples (timestamp ms, step, value, is preview, completion), ascending steps."""
    from neptune_query.internal import client as nq_client
    from neptune_query.internal import context as nq_context
    from neptune_query.internal import identifiers as nq_ids
    from neptune_query.internal.retrieval.metrics import fetch_multiple_series_values
    from neptune_query.internal.retrieval.search import ContainerType

    run = nq_ids.RunIdentifier(nq_ids.ProjectIdentifier(project), sys_id=nq_ids.SysId(sys_id))
    wanted = {
        name: nq_ids.RunAttributeDefinition(run, nq_ids.AttributeDefinition(name, "float_series")) for name in names
    }
    found = fetch_multiple_series_values(
        client=nq_client.get_client(context=nq_context.validate_context(nq_context.get_context())),
        run_attribute_definitions=list(wanted.values()),
        include_inherited=False,
        container_type=ContainerType.RUN,
        include_preview=previews,
        step_range=step_range,
        tail_limit=limit,
    )
    collect_after_response()
    return {name: found.get(definition, []) for name, definition in wanted.items()}

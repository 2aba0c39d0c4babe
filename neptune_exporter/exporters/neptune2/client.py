"""The `neptune` client's process-wide setup, its exceptions as our typed errors, and retried table reads."""

from __future__ import annotations

import base64
import json
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

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
    first_line,
    plain_text,
)
from neptune_exporter.retry import call_with_retries
from neptune_exporter.settings import Settings

TOKEN_REMEDY = "pass a valid Neptune 2.x API token with --api-token or NEPTUNE_API_TOKEN (copy it from the Neptune UI)"
T = TypeVar("T")


def token_server(api_token: str | None) -> str:
    """The server address a 2.x token points to ('' when the token is missing or unreadable)."""
    if not api_token:
        return ""
    try:
        claims = json.loads(base64.b64decode(api_token.encode() + b"==="))
    except (ValueError, UnicodeDecodeError):
        return ""
    return str(claims.get("api_address") or claims.get("api_url") or "") if isinstance(claims, dict) else ""


def client_retry_timeout(settings: Settings) -> int:
    """Seconds the client keeps retrying 5xx/429/connection errors of one request (then: TransientError)."""
    return max(1, int(settings.source_retry_timeout_s))


def connection_pool_size(settings: Settings, runs_at_once: int) -> int:
    """Connections the client may use at once: per run exported at the same time, an attribute reader and a page
    prefetcher per attribute worker (`settings.workers`); plus the listing and token requests."""
    return max(1, runs_at_once) * 2 * max(1, settings.workers) + 2


def size_connection_pool(session: Any, size: int) -> None:
    """Room for `size` connections to each server in a requests session (requests keeps 10: more threads than that
    make urllib3 discard connections, one "Connection pool is full" warning each)."""
    from requests.adapters import HTTPAdapter

    for prefix in ("https://", "http://"):
        session.mount(prefix, HTTPAdapter(pool_maxsize=size))


def configure_client(settings: Settings, runs_at_once: int = 1) -> None:
    """Point the client's retry window (NEPTUNE_RETRIES_TIMEOUT) at our retry policy, size its connection pool to
    the workers (the client shares one HTTP session per token in the process) and quiet its logging."""
    import neptune.internal.backends.hosted_client as hosted_client

    size = connection_pool_size(settings, runs_at_once)
    hosted_client._set_pool_size = lambda http_client: size_connection_pool(http_client.session, size)  # its hook
    seconds = client_retry_timeout(settings)
    os.environ["NEPTUNE_RETRIES_TIMEOUT"] = str(seconds)
    import neptune.common.backends.utils as client_retries

    client_retries.retries_timeout = seconds  # read at import time by the client; set for this process
    logging.getLogger("neptune").setLevel(logging.ERROR)
    from neptune.common.warnings import NeptuneDeprecationWarning

    # reading a model registry out is what its deprecation notice asks for: no warning on every export
    warnings.filterwarnings("ignore", "Neptune's model registry has been deprecated", NeptuneDeprecationWarning)


def open_project(project_id: str, api_token: str | None) -> Any:
    """The project's read-only container (client errors as typed errors); configure_client first."""
    import neptune

    try:
        return neptune.init_project(project=project_id, api_token=api_token, mode="read-only")
    except Exception as exc:  # noqa: BLE001 - mapped to a typed error
        raise typed_error(exc, project=project_id) from exc


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
    text = first_line(str(error)) or name
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
    status = http_status(error)
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


def http_status(error: BaseException) -> int | None:
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
    return " ".join(plain_text(text).split())[:300]


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

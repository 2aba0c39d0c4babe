"""The MLflow client of a load (one writer at a time into a SQLite store), and MLflow and HTTP failures as our typed
errors: server trouble is transient, refusals are terminal."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from neptune_exporter.errors import NeptuneExporterError, TargetError, TargetUnavailableError

TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}

# SQLAlchemy's notes around the error in an MLflow error from a database store; its details (the statement, every
# bound value: kilobytes for a batch of points, then a link) start with the first "[SQL:" line.
SQLALCHEMY_NOTES = ("(Background on this error at:", "(raised as a result of Query-invoked")


def one_line(error: Exception) -> str:
    """The error's text on one line, without SQLAlchemy's notes, statement and values."""
    kept = []
    for line in (line.strip() for line in str(error).splitlines()):
        if line.startswith("[SQL:"):
            break
        if line and not line.startswith(SQLALCHEMY_NOTES):
            kept.append(line)
    return " ".join(kept) or type(error).__name__


def translate_error(action: str, error: Exception) -> NeptuneExporterError:
    """MLflow/HTTP failure → typed error: server trouble is transient, refusals are terminal."""
    code = getattr(error, "error_code", "")
    if isinstance(error, requests.RequestException) or code in TRANSIENT_CODES:
        return TargetUnavailableError(
            f"MLflow failed to {action}: {one_line(error)}",
            "check the tracking server is up; the load resumes where it stopped",
        )
    return TargetError(
        f"MLflow refused to {action}: {one_line(error)}", "check the tracking URI and permissions; rerun after fixing"
    )


@contextmanager
def mlflow_errors(action: str):
    """Translate MLflow and HTTP errors raised inside the block."""
    try:
        yield
    except (MlflowException, requests.RequestException) as error:
        raise translate_error(action, error) from error


# MlflowClient methods that move artifact bytes only (to the run's artifact folder): they need no database write.
ARTIFACT_ONLY = frozenset({"log_artifact", "log_artifacts", "download_artifacts", "list_artifacts"})
_STORE_LOCKS: dict[str, threading.Lock] = {}
_STORE_LOCKS_GUARD = threading.Lock()


def sqlite_store_path(tracking_uri: str) -> str | None:
    """The database file of a `sqlite:///` tracking URI (None for any other store)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return os.path.realpath(os.path.expanduser(tracking_uri[len("sqlite:///") :].split("?", 1)[0]))


def store_lock(path: str) -> threading.Lock:
    """The one lock of this process for a SQLite store."""
    with _STORE_LOCKS_GUARD:
        return _STORE_LOCKS.setdefault(path, threading.Lock())


class OneWriterClient:
    """An MlflowClient whose calls into a SQLite store take turns.

    SQLite has one write lock per database. Parallel writers of one process wait for it in SQLite's busy handler
    (sleeps of up to 100 ms), and two transactions that both read before writing can fail at once with `database is
    locked` whatever the busy timeout (neither can wait for the other). Taking turns in the process costs nothing
    SQLite would not serialise anyway; artifact copies (no database write) still run in parallel. Another process
    writing to the same file is still met by the retry policy.
    """

    def __init__(self, client: MlflowClient, lock: threading.Lock):
        self._client, self._lock = client, lock

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name in ARTIFACT_ONLY or not callable(attribute):
            return attribute
        return self._in_turn(attribute)

    def _in_turn(self, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return method(*args, **kwargs)

        return call


def tracking_client(tracking_uri: str) -> MlflowClient:
    """The client of a load: for a `sqlite:///` store, one whose calls take turns (`OneWriterClient`)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    path = sqlite_store_path(tracking_uri)
    return client if path is None else OneWriterClient(client, store_lock(path))  # type: ignore[return-value]


def tracking_store(client: MlflowClient) -> Any:
    """The store a client writes through (a `RestStore` for a server, a `SqlAlchemyStore` for a database): MLflow's
    private `_tracking_client.store`, kept in reach by the pinned MLflow versions."""
    return client._tracking_client.store

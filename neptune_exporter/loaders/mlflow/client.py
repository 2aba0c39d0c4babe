"""MLflow and HTTP failures as our typed errors: server trouble is transient, refusals are terminal."""

from __future__ import annotations

from contextlib import contextmanager

import requests
from mlflow.exceptions import MlflowException

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

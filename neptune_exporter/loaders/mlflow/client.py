"""MLflow and HTTP failures as our typed errors: server trouble is transient, refusals are terminal."""

from __future__ import annotations

from contextlib import contextmanager

import requests
from mlflow.exceptions import MlflowException

from neptune_exporter.errors import NeptuneExporterError, TargetError, TargetUnavailableError

TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}


def translate_error(action: str, error: Exception) -> NeptuneExporterError:
    """MLflow/HTTP failure → typed error: server trouble is transient, refusals are terminal."""
    code = getattr(error, "error_code", "")
    if isinstance(error, requests.RequestException) or code in TRANSIENT_CODES:
        return TargetUnavailableError(
            f"MLflow failed to {action}: {error}", "check the tracking server is up; the load resumes where it stopped"
        )
    return TargetError(
        f"MLflow refused to {action}: {error}", "check the tracking URI and permissions; rerun after fixing"
    )


@contextmanager
def mlflow_errors(action: str):
    """Translate MLflow and HTTP errors raised inside the block."""
    try:
        yield
    except (MlflowException, requests.RequestException) as error:
        raise translate_error(action, error) from error

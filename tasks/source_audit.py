"""Prefect tasks of the validate-source flow: thin wrappers around `neptune_exporter.validation.source_audit`."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from neptune_exporter.errors import NeptuneExporterError, TerminalError
from neptune_exporter.settings import Settings
from neptune_exporter.validation import source_audit as library
from tasks.policy import rejected


@task(name="check-audit-options", cache_policy=NO_CACHE)
def check_options(options: dict) -> None | State:
    """Fail fast (one clear message) on a missing export folder, a bad regex or no project."""
    try:
        library.check_audit_options(library.AuditOptions.from_json(options))
    except TerminalError as error:
        return rejected(error)
    return None


@task(name="audit-project", cache_policy=NO_CACHE)
def audit_project(options: dict, project_id: str) -> list[dict] | State:
    """One project's runs compared with the server (JSON per run); Failed with the fix when the server refuses."""
    parsed = library.AuditOptions.from_json(options)
    try:
        runs = library.audit_one_project(parsed, Settings.from_env(), project_id)
    except NeptuneExporterError as error:  # refused, or still failing after the retries
        return rejected(error)
    return [run.to_json() for run in runs]

"""Prefect tasks of the load and validate flows: thin wrappers around `neptune_exporter.load` calls."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from neptune_exporter import interrupt
from neptune_exporter import load as library
from neptune_exporter.errors import TerminalError, failure_message
from neptune_exporter.loaders.base import Loader
from neptune_exporter.settings import Settings
from neptune_exporter.validation.report import RunValidation
from tasks.policy import failed, interrupted, rejected

DIFFERENCES_IN_MESSAGE = 3

_loaders: dict[tuple[str, str], Any] = {}
_loaders_lock = threading.Lock()


def _cached(make: Callable[[library.LoadOptions, Settings], Any], options: dict) -> Any:
    """One `make(options)` per target options in this process (clients and caches shared by all tasks)."""
    key = (make.__name__, json.dumps(options, sort_keys=True))
    with _loaders_lock:
        if key not in _loaders:
            _loaders[key] = make(library.LoadOptions.from_json(options), Settings.from_env())
        return _loaders[key]


def loader_for(options: dict) -> Loader:
    """The target's loader for these options."""
    return _cached(library.make_loader, options)


def validator_for(options: dict) -> library.Validator:
    """The target's validator for these options (independent of the loader)."""
    return _cached(library.make_validator, options)


@task(name="check-target", cache_policy=NO_CACHE)
def check_target(options: dict) -> State | None:
    """Fail fast when the target cannot be reached or written: the task ends Failed with the error and its fix."""
    try:
        library.check_target(loader_for(options))
    except TerminalError as error:
        return rejected(error)
    return None


@task(name="select-runs", cache_policy=NO_CACHE)
def select_runs(options: dict) -> list[list[dict]] | State:
    """Exported runs to load, in fork waves (parents first), as JSON; Failed with the fix when there are none or the
    export folder is wrong."""
    try:
        runs = library.select_runs(library.LoadOptions.from_json(options))
    except TerminalError as error:
        return rejected(error)
    return [[asdict(run) for run in wave] for wave in library.fork_waves(runs)]


@task(name="load-run", task_run_name="load {run[project_id]}/{run[run_id]}", cache_policy=NO_CACHE)
def load_run(options: dict, run: dict) -> dict | State:
    """Load one run idempotently (the target's tags decide skip / redo); `load_one` retries transient errors.
    A run that failed ends the task Failed with its error and fix as message (its result in the state); one stopped
    on Ctrl-C / SIGTERM ends Cancelled, left incomplete in the target for the rerun to redo."""
    parsed, to_load = library.LoadOptions.from_json(options), library.RunToLoad(**run)
    try:
        interrupt.raise_if_requested()
        result = asdict(library.load_one(loader_for(options), parsed, to_load, Settings.from_env().retry))
    except interrupt.Interrupted:
        stopped = library.LoadResult(to_load.project_id, to_load.run_id, interrupt.INTERRUPTED)
        return interrupted(f"{to_load.project_id}/{to_load.run_id}: stopped on Ctrl-C / SIGTERM", asdict(stopped))
    return failed(failure_message(result["error"]), result) if result["status"] == "failed" else result


@task(name="validate-run", task_run_name="validate {run[project_id]}/{run[run_id]}", cache_policy=NO_CACHE)
def validate_run(options: dict, run: dict) -> dict | State:
    """Compare one run in the target with its export; the RunValidation as JSON (Failed when the run differs)."""
    parsed = library.LoadOptions.from_json(options)
    validation = library.validate_one(
        validator_for(options), parsed, library.RunToLoad(**run), Settings.from_env().retry
    )
    return validation.to_json() if validation.ok else failed(validation_message(validation), validation.to_json())


def validation_message(validation: RunValidation) -> str:
    """Why a run failed validation: its error, or how many differences and the first few."""
    if validation.error:
        return failure_message(validation.error)
    shown = "; ".join(
        f"{d.kind} {d.key}: {d.problem} (expected {d.expected!r}, got {d.actual!r})"
        for d in validation.differences[:DIFFERENCES_IN_MESSAGE]
    )
    more = (
        f"; … {len(validation.differences) - DIFFERENCES_IN_MESSAGE} more in the report"
        if len(validation.differences) > DIFFERENCES_IN_MESSAGE
        else ""
    )
    return f"{len(validation.differences)} difference(s): {shown}{more}"

"""Prefect tasks of the load and validate flows: thin wrappers around `neptune_exporter.load` calls."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict

from prefect import task
from prefect.cache_policies import NO_CACHE

from neptune_exporter import load as library
from neptune_exporter.loaders.base import Loader
from neptune_exporter.settings import Settings

_loaders: dict[str, Loader] = {}
_loaders_lock = threading.Lock()


def loader_for(options: dict) -> Loader:
    """One loader per target options in this process (clients and experiment caches shared by all tasks)."""
    key = json.dumps(options, sort_keys=True)
    with _loaders_lock:
        if key not in _loaders:
            _loaders[key] = library.make_loader(library.LoadOptions.from_json(options), Settings.from_env())
        return _loaders[key]


@task(name="check-target", cache_policy=NO_CACHE)
def check_target(options: dict) -> None:
    """Fail fast (one clear message) when the target cannot be reached or written."""
    library.check_target(loader_for(options))


@task(name="select-runs", cache_policy=NO_CACHE)
def select_runs(options: dict) -> list[list[dict]]:
    """Exported runs to load, in fork waves (parents first), as JSON."""
    runs = library.select_runs(library.LoadOptions.from_json(options))
    return [[asdict(run) for run in wave] for wave in library.fork_waves(runs)]


@task(name="load-run", task_run_name="load {run[project_id]}/{run[run_id]}", cache_policy=NO_CACHE)
def load_run(options: dict, run: dict) -> dict:
    """Load one run idempotently (the target's tags decide skip / redo); `load_one` retries transient errors."""
    parsed = library.LoadOptions.from_json(options)
    return asdict(library.load_one(loader_for(options), parsed, library.RunToLoad(**run), Settings.from_env().retry))


@task(name="validate-run", task_run_name="validate {run[project_id]}/{run[run_id]}", cache_policy=NO_CACHE)
def validate_run(options: dict, run: dict) -> dict:
    """Compare one run in the target with its export; the RunValidation as JSON."""
    parsed = library.LoadOptions.from_json(options)
    return library.validate_one(loader_for(options), parsed, library.RunToLoad(**run), Settings.from_env().retry).to_json()

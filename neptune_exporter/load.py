"""Load exports into a target and validate them (library, no Prefect): options, target registry, the plain loops."""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from neptune_exporter.errors import (
    InvalidOptionError,
    NeptuneExporterError,
    NoRunsSelectedError,
    OutputPathError,
    TargetUnavailableError,
)
from neptune_exporter.loaders.base import ExportedRun, Loader, LoadResult
from neptune_exporter.loaders.client_env import apply_client_defaults
from neptune_exporter.model import sanitize_name
from neptune_exporter.retry import RetryPolicy, call_with_retries
from neptune_exporter.settings import Settings
from neptune_exporter.storage import lock
from neptune_exporter.storage.manifest import manifest_path
from neptune_exporter.validation.report import RunValidation, ValidationReport

log = logging.getLogger(__name__)

# Target name → "module:factory"; the factory is called as factory(options, settings) and returns a Loader.
TARGETS: dict[str, str] = {
    "mlflow": "neptune_exporter.loaders.mlflow:MlflowLoader.from_options",
    "wandb": "neptune_exporter.loaders.wandb:WandbLoader.from_options",
    "goodseed": "neptune_exporter.loaders.goodseed:GoodseedLoader.from_options",
    "zenml": "neptune_exporter.loaders.zenml:ZenmlLoader.from_options",
    "comet": "neptune_exporter.loaders.comet:CometLoader.from_options",
}


# Target name → "module:factory" of its validator (independent of the loader), called like the loader's.
VALIDATORS: dict[str, str] = {
    "mlflow": "neptune_exporter.validation.mlflow:MlflowValidator.from_options",
    "wandb": "neptune_exporter.validation.wandb:WandbValidator.from_options",
    "goodseed": "neptune_exporter.validation.goodseed:GoodseedValidator.from_options",
    "zenml": "neptune_exporter.validation.zenml:ZenmlValidator.from_options",
    "comet": "neptune_exporter.validation.comet:CometValidator.from_options",
}


class Validator(Protocol):
    """Compares one exported run with what its target holds (validation/<target>.py)."""

    def validate(self, data_root: Path, files_root: Path, project_id: str, run_id: str) -> RunValidation: ...


def register_target(name: str, factory: str, validator: str | None = None) -> None:
    """Plug in a target by name ("module:attr.path" of factories taking (options, settings))."""
    TARGETS[name] = factory
    if validator:
        VALIDATORS[name] = validator


@dataclass(frozen=True)
class LoadOptions:
    """What to load where; JSON-typed so it can be a Prefect flow parameter."""

    target: str = "mlflow"
    data_path: str = "./exports/data"
    files_path: str = "./exports/files"
    projects: tuple[str, ...] = ()
    runs_regex: str | None = None
    workers: int = 4
    mlflow_tracking_uri: str | None = None
    experiment_name_template: str = "{project}/{experiment}"
    step_multiplier: int | None = None
    wandb_dir: str | None = None
    wandb_entity: str | None = None
    wandb_project_template: str | None = None
    comet_dir: str | None = None
    comet_workspace: str | None = None
    comet_project_template: str | None = None
    report_path: str | None = None  # validation reports go here (default: next to the data folder, "reports")
    goodseed_home: str | None = None  # GoodSeed: its home folder (default GOODSEED_HOME, else ~/.goodseed)
    goodseed_project_template: str | None = None  # GoodSeed: project per Neptune project (default "{project}")
    zenml_dir: str | None = None  # the ZenML local store's folder (default ./zenml-store)
    zenml_model_template: str | None = None  # ZenML model per project (default {project_id})

    def __post_init__(self) -> None:
        object.__setattr__(self, "projects", tuple(self.projects or ()))
        object.__setattr__(self, "data_path", str(self.data_path))
        object.__setattr__(self, "files_path", str(self.files_path))
        if self.target == "mlflow" and not self.mlflow_tracking_uri:
            object.__setattr__(self, "mlflow_tracking_uri", os.environ.get("MLFLOW_TRACKING_URI") or None)

    def to_json(self) -> dict:
        data = asdict(self)
        data["projects"] = list(self.projects)
        return data

    @classmethod
    def from_json(cls, data: dict) -> LoadOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidOptionError(
                f"unknown load option(s): {', '.join(unknown)}", f"use only: {', '.join(sorted(known))}"
            )
        return cls(**data)


def report_dir(options: LoadOptions) -> Path:
    """Folder of validation reports: the option, else `<data folder>/../reports`."""
    return Path(options.report_path) if options.report_path else Path(options.data_path).resolve().parent / "reports"


def _build(registry: dict[str, str], options: LoadOptions, settings: Settings) -> Any:
    """Call the target's factory named in `registry` with (options, settings)."""
    if options.target not in registry:
        raise InvalidOptionError(f"unknown target {options.target!r}", f"use one of: {', '.join(sorted(registry))}")
    module_name, _, attribute_path = registry[options.target].partition(":")
    apply_client_defaults(options.target)  # some clients read them when imported
    factory: Any = importlib.import_module(module_name)
    for name in attribute_path.split("."):
        factory = getattr(factory, name)
    return factory(options, settings)


def make_loader(options: LoadOptions, settings: Settings) -> Loader:
    """The target's loader, found by name in TARGETS."""
    return _build(TARGETS, options, settings)


def make_validator(options: LoadOptions, settings: Settings) -> Validator:
    """The target's validator, found by name in VALIDATORS (it shares no mapping code with the loader)."""
    return _build(VALIDATORS, options, settings)


# ----------------------------------------------------------------------------- selecting runs


@dataclass(frozen=True)
class RunToLoad:
    """One exported run to load: ids plus its fork parent (for ordering parents first)."""

    project_id: str
    run_id: str
    fork_parent: str | None = None


def select_runs(options: LoadOptions) -> list[RunToLoad]:
    """Runs in the export matching the options; OutputPathError when the export folder is missing."""
    from neptune_exporter.storage.exported_run import list_stored_runs

    data_root = Path(options.data_path)
    if not data_root.is_dir():
        raise OutputPathError(
            f"export folder {data_root} does not exist", "pass the --data-path (-d) an export wrote to"
        )
    files_root = Path(options.files_path)
    runs = []
    for stored in list_stored_runs(data_root, projects=options.projects or None, runs_regex=options.runs_regex):
        exported = ExportedRun.from_stored(stored, data_root, files_root)
        runs.append(RunToLoad(exported.project_id, exported.run_id, exported.fork_parent))
    if not runs:
        raise nothing_selected(options)
    return runs


PARTS_GLOB = "*_part_*.parquet"


def nothing_selected(options: LoadOptions) -> NoRunsSelectedError:
    """Why no run was selected: the folder looked in, what was expected there, and the likely fix."""
    from neptune_exporter.storage.exported_run import list_stored_runs

    data_root = Path(options.data_path)
    found = sorted({stored.project_id for stored in list_stored_runs(data_root)})
    if found and options.projects and not set(options.projects) & set(found):
        expected = ", ".join(str(data_root / sanitize_name(p) / PARTS_GLOB) for p in options.projects)
        return NoRunsSelectedError(
            f"no exported run of {', '.join(options.projects)} in {data_root}: expected {expected}",
            f"pass -p with an exported project: {', '.join(found)}",
        )
    if found:
        return NoRunsSelectedError(
            f"no exported run in {data_root} matches --runs {options.runs_regex!r}"
            + (f" in {', '.join(options.projects)}" if options.projects else ""),
            f"loosen --runs; exported project(s) there: {', '.join(found)}",
        )
    return NoRunsSelectedError(
        f"no exported run in {data_root}: expected {data_root / '<project-dir>' / PARTS_GLOB}",
        data_root_hint(data_root),
    )


def data_root_hint(data_root: Path) -> str:
    """The fix for a -d without exported runs: its subfolder that holds them (the export root was given), if any."""
    for folder in sorted(p for p in data_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if any(project.is_dir() and any(project.glob(PARTS_GLOB)) for project in folder.iterdir()):
            return f"pass -d {folder} (the export's data folder, inside the folder given)"
    return "pass the --data-path (-d) an export wrote to: its data folder, e.g. ./exports/data"


def target_identity(options: LoadOptions) -> str:
    """Which target a load writes to (the same export loaded into two targets at once is fine, into one is not)."""
    if options.target == "mlflow":
        return f"mlflow {options.mlflow_tracking_uri}"
    if options.target == "goodseed":
        home = options.goodseed_home or os.environ.get("GOODSEED_HOME") or "~/.goodseed"
        return f"goodseed {os.path.abspath(os.path.expanduser(home))}"
    if options.target == "zenml":
        from neptune_exporter.storage.zenml_store import zenml_dir

        return f"zenml {zenml_dir(options.zenml_dir)}"
    if options.target == "comet":
        return f"comet {os.path.abspath(options.comet_dir) if options.comet_dir else 'default dir'}"
    where = os.path.abspath(options.wandb_dir) if options.wandb_dir else "default dir"
    return f"{options.target} entity={options.wandb_entity} project={options.wandb_project_template} {where}"


def target_key(options: LoadOptions) -> str:
    """A short name of `target_identity` for lock files."""
    return hashlib.blake2b(target_identity(options).encode(), digest_size=8).hexdigest()


@contextmanager
def run_load_lock(options: LoadOptions, run: RunToLoad) -> Iterator[None]:
    """Hold `<run>.load-<target>.lock` next to the run's manifest while loading it (`lock.hold_run`): one process
    loads a run into a target at a time (a distributed chunk its parent gave up may still run). RunInUseError naming
    the holder when another process has it; a read-only export loads unlocked (its load lock said so)."""
    with ExitStack() as stack:
        try:
            stack.enter_context(
                lock.hold_run(
                    manifest_path(options.data_path, run.project_id, run.run_id),
                    lock.RUN_LOAD_LOCK_SUFFIX.format(target=target_key(options)),
                    f"load of {run.project_id}/{run.run_id}",
                    "none needed: it is retried, and the next load completes the run",
                    create_folder=False,
                )
            )
        except OutputPathError as error:
            log.debug("loading %s/%s without its run lock: %s", run.project_id, run.run_id, error)
        yield


@contextmanager
def load_lock(
    options: LoadOptions, if_locked: str = "stop", on_wait: Callable[[str], object] | None = None
) -> Iterator[None]:
    """Hold `<data>/.neptune-exporter.load-<target>.lock` (storage/lock.py) while loading this export into this
    target; PathLockedError naming the holder when another load does ("stop"). A read-only export loads unlocked."""
    identity = target_identity(options)
    path = Path(options.data_path) / lock.LOAD_LOCK.format(target=target_key(options))
    with ExitStack() as stack:
        try:
            if path.parent.is_dir():  # a missing export folder is `select_runs`' error to report
                stack.enter_context(lock.hold(path, f"load into {identity}", if_locked, on_wait, create_folder=False))
        except OutputPathError as error:
            log.warning("%s; loading without a lock: make sure no other load of it into this target runs", error)
        yield


def fork_waves(runs: list[RunToLoad]) -> list[list[RunToLoad]]:
    """Runs in waves so a fork's parent (when selected) is loaded in an earlier wave and can be linked."""
    selected = {(r.project_id, r.run_id): r for r in runs}
    depth: dict[tuple[str, str], int] = {}

    def depth_of(key: tuple[str, str], seen: frozenset[tuple[str, str]] = frozenset()) -> int:
        if key not in depth:
            run = selected[key]
            parent = (run.project_id, run.fork_parent) if run.fork_parent else None
            chained = parent is not None and parent in selected and parent not in seen
            depth[key] = 1 + depth_of(parent, seen | {key}) if parent is not None and chained else 0
        return depth[key]

    waves: dict[int, list[RunToLoad]] = {}
    for key, run in selected.items():
        waves.setdefault(depth_of(key), []).append(run)
    return [waves[d] for d in sorted(waves)]


# ----------------------------------------------------------------------------- loading


class LoadProgress(Protocol):
    def on_plan(self, total_runs: int) -> None: ...

    def on_run_done(self, result: LoadResult) -> None: ...


def load_one(
    loader: Loader,
    options: LoadOptions,
    run: RunToLoad,
    policy: RetryPolicy,
    sleep: Callable[[float], object] = time.sleep,
) -> LoadResult:
    """The per-run verb the Prefect task and `run_load` both call: load one run under the one retry policy;
    a terminal error, or a transient one left when the policy is spent, becomes a failed result."""

    def action() -> LoadResult:
        with run_load_lock(options, run):
            return loader.load_run(Path(options.data_path), Path(options.files_path), run.project_id, run.run_id)

    try:
        return call_with_retries(action, policy, what=f"loading {run.project_id}/{run.run_id}", sleep=sleep)
    except NeptuneExporterError as error:
        log.error("loading %s/%s failed: %s", run.project_id, run.run_id, error)
        return LoadResult(run.project_id, run.run_id, "failed", error=error.to_record())


def check_target(loader: Loader) -> None:
    """Fail fast before any work when the target cannot be used."""
    loader.check_target()


def run_load(
    options: LoadOptions, settings: Settings, progress: LoadProgress | None = None, if_locked: str = "stop"
) -> list[LoadResult]:
    """Under `load_lock`: load every selected run (parents before forks), `options.workers` at a time."""
    loader = make_loader(options, settings)
    runs = select_runs(options)
    check_target(loader)
    if progress:
        progress.on_plan(len(runs))
    results: list[LoadResult] = []
    with load_lock(options, if_locked), ThreadPoolExecutor(max(1, options.workers), "load") as pool:
        for wave in fork_waves(runs):
            for result in pool.map(lambda run: load_one(loader, options, run, settings.retry), wave):
                results.append(result)
                if progress:
                    progress.on_run_done(result)
    return results


# ----------------------------------------------------------------------------- validating


def validate_one(
    validator: Validator,
    options: LoadOptions,
    run: RunToLoad,
    policy: RetryPolicy,
    sleep: Callable[[float], object] = time.sleep,
) -> RunValidation:
    """The per-run verb of the validate task and `run_validate`: compare one run in the target with its export,
    reading the target under the one retry policy; errors become a run entry, never an exception."""
    data_root, files_root = Path(options.data_path), Path(options.files_path)
    try:
        return call_with_retries(
            lambda: validator.validate(data_root, files_root, run.project_id, run.run_id),
            policy,
            what=f"validating {run.project_id}/{run.run_id}",
            sleep=sleep,
        )
    except NeptuneExporterError as error:
        return RunValidation(run.project_id, run.run_id, None, error=error.to_record())


def run_validate(options: LoadOptions, settings: Settings) -> ValidationReport:
    """Validate every selected run against the target; the report lists every difference."""
    validator = make_validator(options, settings)
    runs = select_runs(options)
    check_target(make_loader(options, settings))
    report = ValidationReport(target=options.target)
    with ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="validate") as pool:
        report.runs.extend(pool.map(lambda run: validate_one(validator, options, run, settings.retry), runs))
    return report


__all__ = [
    "LoadOptions",
    "LoadResult",
    "RunToLoad",
    "TARGETS",
    "TargetUnavailableError",
    "check_target",
    "fork_waves",
    "load_lock",
    "load_one",
    "make_loader",
    "make_validator",
    "register_target",
    "run_load",
    "run_validate",
    "select_runs",
    "validate_one",
]

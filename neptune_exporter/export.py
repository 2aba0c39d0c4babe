"""The export verbs as a plain library (no Prefect): preflight → discover → plan → export one run (export_results.py:
what they produce).

The on-disk rules live below: selection.py (what to export), storage/incremental.py (plans, merges, strays),
storage/manifest.py and storage/parquet.py (the files)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from neptune_exporter.errors import (
    InvalidOptionError,
    NeptuneExporterError,
    OutputPathError,
    RunInUseError,
    TerminalError,
    UnsupportedError,
    disk_full_cause,
)
from neptune_exporter.export_results import (
    RunExportResult,
    error_record,
)
from neptune_exporter.exporters.base import Source
from neptune_exporter.model import RunRef, iso_utc_ms, run_ref_to_json
from neptune_exporter.retry import call_with_retries
from neptune_exporter.rows import empty_batch
from neptune_exporter.selection import ExportOptions, compile_regex
from neptune_exporter.settings import Settings, neptune_api_token
from neptune_exporter.storage import fan_out, incremental, integrity, lock, space
from neptune_exporter.storage.files import ExportedFile, remove_staging_leftovers, run_files_dir
from neptune_exporter.storage.incremental import RunPlan
from neptune_exporter.storage.manifest import (
    STATUS_COMPLETE,
    STATUS_FAILED,
    Manifest,
    PartInfo,
    compute_checksum,
    manifest_path,
    read_manifest,
    write_manifest,
)
from neptune_exporter.storage.parquet import AttributeStats, RunWriter

log = logging.getLogger(__name__)


class ProgressSink(Protocol):
    """Receives progress; implementations must be thread-safe (runs export in parallel)."""

    def on_plan(self, total_runs: int) -> None: ...

    def on_points(self, points: int, bytes: int) -> None: ...

    def on_run_done(self, result: RunExportResult) -> None: ...


# ----------------------------------------------------------------------------- source, preflight, discovery


def make_source(options: ExportOptions, settings: Settings) -> Source:
    """The Source for `options.source` (imported lazily so unused clients never load), its requests sized for
    `options.workers` runs at once (`Settings.for_runs_at_once`)."""
    token = neptune_api_token(options.api_token)
    settings = settings.for_runs_at_once(options.workers)
    if options.source == "neptune3":
        from neptune_exporter.exporters.neptune3 import Neptune3Source

        return Neptune3Source(token, settings)
    if options.source == "neptune2":
        from neptune_exporter.exporters.neptune2 import Neptune2Source

        return Neptune2Source(token, settings, runs_at_once=options.workers)
    raise InvalidOptionError(f"source {options.source!r} is not supported", "use source neptune3 or neptune2")


def check_writable(path: Path | str, option: str) -> Path:
    """Prove the folder can be written, or created, without creating anything (no folder appears before every input
    check passed): an existing folder takes a probe file (removed); a missing one needs a writable nearest existing
    parent. OutputPathError otherwise."""
    path = Path(path)
    remedy = f"point {option} to a folder you can write to, or fix its permissions"
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{option} {path} is a file, not a folder", remedy)
    existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise OutputPathError(f"{option} {path} is not writable: {existing} is a file, not a folder", remedy)
    if existing != path.absolute():
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OutputPathError(f"{option} {path} is not writable: its parent {existing} is not writable", remedy)
        return path
    probe = path / f".neptune-exporter-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputPathError(f"{option} {path} is not writable: {exc.strerror or exc}", remedy) from None
    return path


def _check_regexes(options: ExportOptions) -> None:
    compile_regex(options.runs.runs_regex, "--runs")
    compile_regex(options.runs.experiments_regex, "--experiments")
    compile_regex(options.attributes.regex, "--attributes")
    compile_regex(options.include_projects, "--include-projects")
    compile_regex(options.exclude_projects, "--exclude-projects")
    if options.runs.where:
        from neptune_exporter.exporters.where import parse_where

        parse_where(options.runs.where)


def _workspace_projects(options: ExportOptions, source: Source) -> list[str]:
    if not options.workspace:
        return []
    include = compile_regex(options.include_projects, "--include-projects")
    exclude = compile_regex(options.exclude_projects, "--exclude-projects")
    return [
        project
        for project in source.list_projects(options.workspace)
        if (include is None or include.search(project)) and not (exclude and exclude.search(project))
    ]


def preflight(options: ExportOptions, source: Source) -> list[str]:
    """Check everything before any download: regexes, --where, output folders, projects and access."""
    _check_regexes(options)
    if options.workers < 1:
        raise InvalidOptionError(f"workers must be at least 1, got {options.workers}", "pass --workers 1 or more")
    if options.processes is not None and options.processes < 0:
        raise InvalidOptionError(
            f"processes must be 0 or more, got {options.processes}", "pass --processes 0 (this process) or more"
        )
    check_writable(options.data_path, "--data-path")
    check_writable(options.files_path, "--files-path")
    projects = list(dict.fromkeys([*options.projects, *_workspace_projects(options, source)]))
    if not projects:
        raise InvalidOptionError(
            "no project selected", "pass -p WORKSPACE/PROJECT, set NEPTUNE_PROJECT, or loosen the workspace filters"
        )
    for project in projects:
        source.check_access(project)
    _models_lister(options, source)
    return projects


def _models_lister(options: ExportOptions, source: Source):
    """The source's `list_models` when --include-models is set (None otherwise); UnsupportedError without one."""
    if not options.include_models:
        return None
    lister = getattr(source, "list_models", None)
    if lister is None:
        raise UnsupportedError(
            f"--include-models: the {getattr(source, 'kind', options.source)} source has no model registry",
            "export models with --source neptune2 (the model registry is a Neptune 2.x feature), or drop --include-models",
        )
    return lister


def discover(source: Source, options: ExportOptions, projects: Iterable[str]) -> list[RunRef]:
    """Runs of every project matching the run selection (filters applied by the source), then its models and
    model versions when `include_models` is set (scoped RunRefs: they live in `<project-dir>/<scope>/`)."""
    list_models = _models_lister(options, source)
    runs: list[RunRef] = []
    for project in projects:
        runs.extend(source.list_runs(project, options.runs))
        if list_models is not None:
            runs.extend(list_models(project, options.runs))
    return runs


# ----------------------------------------------------------------------------- planning and exporting one run


def plan_runs(runs: Iterable[RunRef], options: ExportOptions) -> list[RunPlan]:
    """Each run's plan against its manifest (storage/incremental.py holds the rules)."""
    return incremental.plan_runs(runs, Path(options.data_path), options.fingerprint())


def _source_record(source: Source, run: RunRef, facts: dict) -> dict:
    record = {
        "kind": getattr(source, "kind", run.source_kind),
        "server": getattr(source, "server", None),
        "project_id": run.project_id,
        "run_id": run.run_id,
        "sys_id": run.sys_id,
        "custom_run_id": run.custom_run_id,
        "experiment_name": run.experiment_name,
        "name": run.name,
        "creation_time": iso_utc_ms(run.creation_time),
        "modification_time": iso_utc_ms(run.modification_time),
        "fork_parent": None,
        "fork_step": None,
    }
    record.update({k: v for k, v in facts.items() if k in record and v is not None})
    if run.scope:
        record["scope"] = run.scope
    return record


@dataclass
class _Attempt:
    """State of one export attempt of a run."""

    kept: Manifest | None  # complete manifest whose parts stay (incremental) or None
    previous: Manifest | None
    writer: RunWriter
    stats: AttributeStats = field(default_factory=AttributeStats)
    superseded: set[str] = field(default_factory=set)
    rewritten: list[PartInfo] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    attribute_errors: list[TerminalError] = field(default_factory=list)


def _begin(plan: RunPlan, options: ExportOptions, settings: Settings, data_root: Path) -> _Attempt:
    run = plan.run
    previous = read_manifest(manifest_path(data_root, run.project_id, run.run_id, run.scope))
    complete = previous if previous is not None and previous.is_complete() else None
    incremental.remove_strays(
        data_root, run.project_id, run.run_id, previous, run.scope
    )  # listed parts go only once replaced
    remove_staging_leftovers(run_files_dir(options.files_path, run.project_id, run.run_id, run.scope))
    resumes = (
        plan.action == "incremental"
        and complete is not None
        and complete.options.get("fingerprint") == options.fingerprint()
    )
    writer = RunWriter(data_root, run.project_id, run.run_id, settings.part_target_bytes, run.scope)
    return _Attempt(kept=complete if resumes else None, previous=previous, writer=writer)


def _stream(attempt: _Attempt, source: Source, plan: RunPlan, options: ExportOptions, progress) -> list[ExportedFile]:
    watermarks = attempt.kept.watermarks() if attempt.kept else None
    marks = incremental.unscaled_marks(watermarks)
    callback = progress.on_points if progress is not None else None
    content = source.export_run(plan.run, options.attributes, Path(options.files_path), watermarks, callback)
    for batch in content.batches:
        batch = incremental.watermark_filter(batch, marks)
        attempt.writer.write(batch)
        attempt.stats.add(batch)
    attempt.facts = content.source_facts
    attempt.attribute_errors = content.attribute_errors
    return content.files


def _rewrite_superseded(attempt: _Attempt, data_root: Path) -> None:
    """Incremental rule: a single-value attribute the new export wrote again replaces its older rows.

    Kept parts holding such rows are copied (minus those rows) into new parts and dropped once the new
    manifest is written, so every reader — ours or the peer tool's, which reads all parts — sees each
    parameter once with its latest value, and the run's rows equal those of a fresh full export.
    """
    if attempt.kept is None:
        return
    attempt.superseded = incremental.single_value_paths(attempt.stats)
    if not attempt.superseded:
        return
    attempt.rewritten = incremental.parts_holding(data_root, attempt.kept, attempt.superseded)
    for part in attempt.rewritten:
        incremental.rewrite_without(attempt.writer, data_root, part, attempt.superseded)


def _complete_manifest(attempt: _Attempt, source: Source, plan: RunPlan, options: ExportOptions, files) -> Manifest:
    kept, new_parts = attempt.kept, attempt.writer.close()
    rewritten = {p.path for p in attempt.rewritten}
    parts = [p for p in (kept.parts if kept else []) if p.path not in rewritten] + new_parts
    single = incremental.kept_single_value_parts(kept, rewritten)
    file_entries = incremental.merge_files(kept, files)
    return Manifest(
        status=STATUS_COMPLETE,
        source=_source_record(source, plan.run, attempt.facts),
        options=options.manifest_options(),
        parts=parts,
        attributes=incremental.merge_attributes(kept, attempt.stats, attempt.superseded),
        files=file_entries,
        checksum=compute_checksum(parts, file_entries),
        single_value_parts=None if single is None else single + attempt.writer.single_value_parts,
    )


def export_run(
    source: Source,
    plan: RunPlan,
    options: ExportOptions,
    settings: Settings,
    progress: ProgressSink | None = None,
    recheck: bool = False,
) -> RunExportResult:
    """Export one run under its run lock: parts first, manifest last; TerminalError → failed manifest; TransientError
    (RunInUseError while another process exports it) propagates. `recheck`: plan the run again once the lock is held
    (that other process may have completed it)."""
    if plan.action == "skip":
        return _done(progress, skipped_result(plan, options))
    data_root = Path(options.data_path)
    with run_lock(data_root, plan.run):
        if recheck and (plan := plan_runs([plan.run], options)[0]).action == "skip":
            return _done(progress, skipped_result(plan, options))
        return _export_locked(source, plan, options, settings, progress)


def run_lock(data_root: Path, run: RunRef) -> AbstractContextManager[None]:
    """Hold `<run>.export.lock` next to the run's manifest (`lock.hold_run`): one process exports a run at a time (a
    chunk its parent gave up may still run). RunInUseError naming the holder when another process has it."""
    return lock.hold_run(
        manifest_path(data_root, run.project_id, run.run_id, run.scope),
        lock.RUN_LOCK_SUFFIX,
        f"export of {run.key()}",
        "none needed: it is retried, and the next export completes the run",
    )


def _export_locked(
    source: Source, plan: RunPlan, options: ExportOptions, settings: Settings, progress: ProgressSink | None
) -> RunExportResult:
    run, data_root = plan.run, Path(options.data_path)
    path = manifest_path(data_root, run.project_id, run.run_id, run.scope)
    attempt = _begin(plan, options, settings, data_root)
    try:
        files = _stream(attempt, source, plan, options, progress)
        _rewrite_superseded(attempt, data_root)
        if attempt.kept is None and attempt.writer.rows == 0:
            attempt.writer.write(empty_batch())  # part 0 marks an empty run exported for the peer tool too
        manifest = _complete_manifest(attempt, source, plan, options, files)
        errors = [error_record(run.project_id, run.run_id, e) for e in attempt.attribute_errors]
        if errors:  # the attributes that could not be read: the run's others are in its parts, the run is failed
            manifest.status, manifest.errors = STATUS_FAILED, errors
    except TerminalError as error:
        attempt.writer.abort()
        if disk_full_cause(error) is not None:
            raise  # `export_one` names the full folder and its free space
        return _done(progress, record_failure(plan, options, [error_record(run.project_id, run.run_id, error)], source))
    except BaseException:
        attempt.writer.abort()
        raise
    write_manifest(data_root, manifest)
    incremental.drop_obsolete(data_root, attempt.previous, manifest)
    kept_paths = incremental.listed_parts(attempt.kept)
    written_bytes = sum(p.bytes for p in manifest.parts if p.path not in kept_paths)
    incremental.ensure_part_zero(data_root, manifest)
    integrity.remember_written(data_root, manifest, [p for p in manifest.parts if p.path not in kept_paths])
    result = RunExportResult(
        run.project_id,
        run.run_id,
        manifest.status,
        str(path),
        errors=manifest.errors,
        rows=attempt.stats.rows,
        points=attempt.stats.points,
        files=len(files),
        bytes=written_bytes,
        action=plan.action,
    )
    return _done(progress, result)


def skipped_result(plan: RunPlan, options: ExportOptions) -> RunExportResult:
    """The result of a run the plan skips (unchanged since its complete export): nothing new."""
    run = plan.run
    path = manifest_path(Path(options.data_path), run.project_id, run.run_id, run.scope)
    return RunExportResult(run.project_id, run.run_id, "skipped", str(path), action="skip")


def finished_result(plan: RunPlan, options: ExportOptions, action: str) -> RunExportResult:
    """The result of a run an earlier attempt of this export finished (a crashed chunk of a distributed export) but
    did not report: what its complete manifest holds, as exported by `action`."""
    run = plan.run
    path = manifest_path(Path(options.data_path), run.project_id, run.run_id, run.scope)
    manifest = read_manifest(path)
    if manifest is None or not manifest.is_complete():
        raise ValueError(f"run {run.key()} has no complete manifest at {path}")
    return RunExportResult(
        run.project_id,
        run.run_id,
        STATUS_COMPLETE,
        str(path),
        rows=sum(part.rows for part in manifest.parts),
        points=fan_out.series_points(manifest),
        files=len(manifest.files),
        bytes=sum(part.bytes for part in manifest.parts),
        action=action,
    )


def _done(progress: ProgressSink | None, result: RunExportResult) -> RunExportResult:
    if progress is not None:
        progress.on_run_done(result)
    return result


def record_failure(
    plan: RunPlan, options: ExportOptions, errors: list[dict], source: Source | None = None
) -> RunExportResult:
    """Write a failed manifest (keeping whatever an earlier export listed, untouched) and return a failed result."""
    run, data_root = plan.run, Path(options.data_path)
    previous = read_manifest(manifest_path(data_root, run.project_id, run.run_id, run.scope))
    manifest = Manifest(
        status=STATUS_FAILED,
        source=previous.source if previous else _source_record(source, run, {}) if source else run_ref_to_json(run),
        options=options.manifest_options(),
        parts=[p for p in previous.parts if (data_root / p.path).is_file()] if previous else [],
        attributes=dict(previous.attributes) if previous else {},
        files=list(previous.files) if previous else [],
        errors=errors,
        single_value_parts=previous.single_value_parts if previous else None,
    )
    manifest.source["run_id"], manifest.source["project_id"] = run.run_id, run.project_id
    if run.scope:
        manifest.source["scope"] = run.scope
    path = write_manifest(data_root, manifest)
    return RunExportResult(run.project_id, run.run_id, STATUS_FAILED, str(path), errors=errors, action=plan.action)


# ----------------------------------------------------------------------------- the library loop


def export_one(
    source: Source,
    plan: RunPlan,
    options: ExportOptions,
    settings: Settings,
    progress: ProgressSink | None = None,
    sleep: Callable[[float], object] = time.sleep,
) -> RunExportResult:
    """The per-run verb the Prefect task and `run_export` both call: `export_run` under the one retry policy;
    an error left when the policy is spent (or a terminal one) becomes a failed run with its remedy (a full disk:
    which folder, its free space and the fix)."""
    in_use = False  # once another process held the run, each attempt plans it again under the lock

    def attempt() -> RunExportResult:
        nonlocal in_use
        try:
            return export_run(source, plan, options, settings, progress, recheck=in_use)
        except RunInUseError:
            in_use = True
            raise

    try:
        return call_with_retries(attempt, settings.retry, what=f"run {plan.run.key()}", sleep=sleep)
    except Exception as raised:  # noqa: BLE001 - one failed run must never stop the others; it is recorded below
        error = space.disk_full_error(raised, output_folders(options), plan.run.run_id) or raised
        if not isinstance(error, NeptuneExporterError):
            log.exception("run %s failed unexpectedly", plan.run.key())
        record = error_record(plan.run.project_id, plan.run.run_id, error)
        return _done(progress, record_failure_if_room(plan, options, record, source))


def output_folders(options: ExportOptions) -> dict[str, Path]:
    """The folders an export writes to, by the option naming them."""
    return {"--data-path": Path(options.data_path), "--files-path": Path(options.files_path)}


def record_failure_if_room(plan: RunPlan, options: ExportOptions, record: dict, source: Source) -> RunExportResult:
    """`record_failure`; on a disk too full for the failed manifest, the failed result alone (the manifest on disk
    stays as it was, and the next export finds the run to do all the same)."""
    try:
        return record_failure(plan, options, [record], source)
    except OSError as error:
        if disk_full_cause(error) is None:
            raise
        return RunExportResult(
            plan.run.project_id, plan.run.run_id, STATUS_FAILED, None, errors=[record], action=plan.action
        )


def checked_projects(source: Source, options: ExportOptions, settings: Settings) -> list[str]:
    """`preflight` under the one retry policy (as the flow's Prefect task retries it): the projects to export."""
    return call_with_retries(lambda: preflight(options, source), settings.retry, what="preflight")


def plan_export(
    source: Source, options: ExportOptions, settings: Settings, projects: list[str] | None = None
) -> list[RunPlan]:
    """Discovery and plan of the projects preflight passed (preflight first when not given), under the retry policy."""
    projects = checked_projects(source, options, settings) if projects is None else projects
    runs = call_with_retries(lambda: discover(source, options, projects), settings.retry, what="discovery")
    return plan_runs(runs, options)


@contextmanager
def export_lock(
    options: ExportOptions, if_locked: str = "stop", on_wait: Callable[[str], object] | None = None
) -> Iterator[None]:
    """Hold the data path's lock (`<data>/.neptune-exporter.lock`, storage/lock.py) for one export, then remove the
    tmp files dead writers left there; PathLockedError naming the holder when another export holds it ("stop")."""
    data_root = Path(options.data_path)
    with lock.hold(data_root / lock.EXPORT_LOCK, "export", if_locked, on_wait):
        incremental.remove_leftovers(data_root)
        yield

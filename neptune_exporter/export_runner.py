"""Where runs are exported: in the caller's threads, or in worker processes (`--processes N`, each with its own
Neptune client and a few runs in flight, results and points sent back); and `run_export`, the plain library loop."""

from __future__ import annotations

import itertools
import logging
import math
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from neptune_exporter import interrupt
from neptune_exporter.errors import WorkerProcessDiedError
from neptune_exporter.export import (
    ProgressSink,
    checked_projects,
    export_lock,
    export_one,
    make_source,
    plan_export,
    record_failure,
    skipped_result,
)
from neptune_exporter.export_results import RunExportResult, error_record, write_export_summary
from neptune_exporter.exporters.base import Source
from neptune_exporter.selection import ExportOptions
from neptune_exporter.settings import Settings, neptune_api_token
from neptune_exporter.storage.incremental import RunPlan

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
POLL_S = 0.2  # how often the pump and the workers look at stop requests and at each other


# ----------------------------------------------------------------------------- how many processes


def source_address(options: ExportOptions) -> str:
    """The Neptune server's address the token names ("" when it names none)."""
    from neptune_exporter.exporters.neptune2.client import token_server  # both token kinds: base64 JSON

    return token_server(neptune_api_token(options.api_token))


def process_count(options: ExportOptions) -> int:
    """Worker processes for this export: `options.processes` when given (0 = export in this process); by default
    cores − 1 when the source is remote, and none for a server on this machine (it needs the cores itself)."""
    if options.processes is not None:
        return options.processes
    host = urlparse(source_address(options)).hostname or ""
    if not host or host in LOOPBACK_HOSTS:
        return 0
    return max(0, (os.cpu_count() or 1) - 1)


# ----------------------------------------------------------------------------- the worker side


def _stop_when_asked(stop: Any) -> None:
    if stop.is_set():
        raise interrupt.Interrupted()


@dataclass
class _PointsBack:
    """A worker's sink for one run: points go back to the caller; a stop request ends the run between batches."""

    job: int
    events: Any
    stop: Any

    def on_plan(self, total_runs: int) -> None:
        return None

    def on_points(self, points: int, bytes_: int) -> None:
        self.events.put(("points", self.job, points, bytes_))
        _stop_when_asked(self.stop)

    def on_run_done(self, result: Any) -> None:
        return None  # the caller reports the run done when its result arrives


def _run_job(job: int, plan: RunPlan, options: ExportOptions, settings: Settings, source, events, stop) -> None:
    try:
        _stop_when_asked(stop)
        result = export_one(source, plan, options, settings, _PointsBack(job, events, stop))
    except interrupt.Interrupted:
        events.put(("interrupted", job, None))
    except BaseException as error:  # noqa: BLE001 - export_one records every error; this reports anything else
        events.put(("crashed", job, f"{type(error).__name__}: {error}"))
    else:
        events.put(("result", job, result))


class _EventsOut:
    """A worker's end of its own pipe to the caller; its threads take turns to write. The pipe is this worker's
    alone: a queue shared by all workers has a lock across processes, which a worker killed while writing keeps
    forever (then no other worker's result ever arrives)."""

    def __init__(self, writer: Connection):
        self._writer, self._lock = writer, threading.Lock()

    def put(self, event: tuple) -> None:
        with self._lock:
            self._writer.send(event)


def _worker_main(options: ExportOptions, settings: Settings, threads: int, jobs: Any, writer: Any, stop: Any) -> None:
    """A worker process: its own client, `threads` runs at a time, until told to end or its parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the caller, which stops the runs through `stop`
    events = _EventsOut(writer)
    parent = os.getppid()
    source = make_source(replace(options, workers=threads), settings)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="export") as pool:
        while os.getppid() == parent:
            try:
                item = jobs.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if item is None:
                break
            job, plan = item
            pool.submit(_run_job, job, plan, options, settings, source, events, stop)


# ----------------------------------------------------------------------------- the caller's side


@dataclass
class _Job:
    plan: RunPlan
    future: Future
    progress: ProgressSink | None
    worker: int


@dataclass
class _Worker:
    process: BaseProcess
    jobs: Any  # the caller → worker queue
    events: Connection  # the caller's end of the worker's pipe


class ExportProcesses:
    """Worker processes exporting runs; `export_one(plan, progress)` is called from the caller's threads (the
    Prefect tasks, or `run_export`'s pool) and blocks until the run's result comes back."""

    def __init__(self, options: ExportOptions, settings: Settings, processes: int):
        self.options, self.settings = options, settings
        self.threads = max(1, math.ceil(options.workers / processes))
        self._context = multiprocessing.get_context("spawn")  # never fork a process full of threads
        self._stop = self._context.Event()
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._jobs: dict[int, _Job] = {}
        self._ending = False  # no new worker replaces one that ends
        self._closing = False  # the pump stops
        self._workers: list[_Worker] = [self._start_worker() for _ in range(processes)]
        self._pump = threading.Thread(target=self._pump_events, name="export-processes", daemon=True)
        self._pump.start()

    def _start_worker(self) -> _Worker:
        jobs = self._context.Queue()
        reader, writer = self._context.Pipe(duplex=False)
        args = (self.options, self.settings, self.threads, jobs, writer, self._stop)
        process = self._context.Process(target=_worker_main, args=args, name="neptune-exporter-worker", daemon=True)
        process.start()
        writer.close()  # the worker holds it: its end closes when the worker ends
        return _Worker(process, jobs, reader)

    def export_one(self, plan: RunPlan, progress: ProgressSink | None = None) -> RunExportResult:
        """Export `plan` in the least busy worker; its result (Interrupted when a stop request ended it)."""
        if plan.action == "skip":  # nothing to read: answered here
            skipped = skipped_result(plan, self.options)
            if progress is not None:
                progress.on_run_done(skipped)
            return skipped
        future: Future = Future()  # held here: the pump drops the job from `_jobs` as soon as its result arrives
        with self._lock:
            worker = min(range(len(self._workers)), key=lambda w: sum(j.worker == w for j in self._jobs.values()))
            job = next(self._ids)
            self._jobs[job] = _Job(plan, future, progress, worker)
            self._workers[worker].jobs.put((job, plan))
        result: RunExportResult | None = future.result()
        if result is None:
            raise interrupt.Interrupted()
        return result

    def _pump_events(self) -> None:
        """Points to each run's sink, results to their callers; stop requests to the workers; a dead worker's runs
        fail with the reason and a new worker takes its place."""
        while not self._closing:
            if interrupt.requested():
                self._stop.set()
            self._replace_dead_workers()  # on every turn: other workers' points must not hide a dead one
            readers = [worker.events for worker in self._workers if not worker.events.closed]
            if not readers:  # every worker has ended (the export is closing)
                time.sleep(POLL_S)
                continue
            ready = wait(readers, timeout=POLL_S)
            for reader in [r for r in readers if r in ready]:  # as Connections (wait() is typed more loosely)
                try:
                    kind, job, *payload = reader.recv()
                except (EOFError, OSError):  # its worker ended: `_replace_dead_workers` fails its runs
                    reader.close()
                    continue
                self._handle(kind, job, payload)

    def _handle(self, kind: str, job: int, payload: list) -> None:
        with self._lock:
            entry = self._jobs.get(job) if kind == "points" else self._jobs.pop(job, None)
        if entry is None:
            return
        if kind == "points":
            self._forward_points(entry, *payload)
        elif kind == "result":
            self._finish(entry, payload[0])
        elif kind == "interrupted":
            entry.future.set_result(None)
        else:
            self._finish(entry, self._failed(entry.plan, f"its worker process failed: {payload[0]}"))

    def _forward_points(self, entry: _Job, points: int, bytes_: int) -> None:
        if entry.progress is None:
            return
        try:
            entry.progress.on_points(points, bytes_)
        except interrupt.Interrupted:  # the caller's sink asks to stop (Ctrl-C): every worker stops between batches
            self._stop.set()

    def _finish(self, entry: _Job, result: RunExportResult) -> None:
        if entry.progress is not None:
            entry.progress.on_run_done(result)
        entry.future.set_result(result)

    def _failed(self, plan: RunPlan, reason: str) -> RunExportResult:
        error = WorkerProcessDiedError(
            f"run {plan.run.key()} was not exported: {reason}",
            "rerun the export (it redoes this run); if memory ran out, pass fewer --processes or --workers",
            run=plan.run.run_id,
        )
        return record_failure(plan, self.options, [error_record(plan.run.project_id, plan.run.run_id, error)])

    def _replace_dead_workers(self) -> None:
        for index, worker in enumerate(self._workers):
            process = worker.process
            if process.is_alive() or self._ending:
                continue
            with self._lock:
                lost = [job for job, entry in self._jobs.items() if entry.worker == index]
                entries = [self._jobs.pop(job) for job in lost]
                worker.events.close()
                self._workers[index] = self._start_worker()
            log.warning("an export worker process ended (exit code %s); %d run(s) failed", process.exitcode, len(lost))
            for entry in entries:
                self._finish(
                    entry, self._failed(entry.plan, f"its worker process ended (exit code {process.exitcode})")
                )

    def close(self) -> None:
        """End the workers (their runs in flight finish first), then the pump."""
        self._ending = True
        for worker in self._workers:
            worker.jobs.put(None)
        for process in [worker.process for worker in self._workers]:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)
        self._closing = True
        self._pump.join(timeout=5)


class RunExporter(Protocol):
    """Exports one run at a time per calling thread: `InProcess` or `ExportProcesses`."""

    def export_one(self, plan: RunPlan, progress: ProgressSink | None = None) -> RunExportResult: ...

    def close(self) -> None: ...


@dataclass
class InProcess:
    """Runs exported in the caller's threads, all through one client."""

    source: Source
    options: ExportOptions
    settings: Settings

    def export_one(self, plan: RunPlan, progress: ProgressSink | None = None) -> RunExportResult:
        return export_one(self.source, plan, self.options, self.settings, progress)

    def close(self) -> None:
        return None


def open_run_exporter(options: ExportOptions, settings: Settings, source: Source) -> RunExporter:
    """Worker processes when `process_count` says so (`source` then only plans), else this process's threads."""
    count = process_count(options)
    return ExportProcesses(options, settings, count) if count > 0 else InProcess(source, options, settings)


@contextmanager
def run_exporter(options: ExportOptions, settings: Settings, source: Source) -> Iterator[RunExporter]:
    """`open_run_exporter`, closed after the block."""
    exporter = open_run_exporter(options, settings, source)
    try:
        yield exporter
    finally:
        exporter.close()


def run_export(
    options: ExportOptions, settings: Settings, progress: ProgressSink | None = None, if_locked: str = "stop"
) -> list[RunExportResult]:
    """Preflight (before the lock: a bad input stops before any folder is made), then under `export_lock`:
    `plan_export`, each run on a bounded thread pool (its work in this process or in worker processes), and the
    project summaries; the results."""
    source = make_source(options, settings)
    projects = checked_projects(source, options, settings)
    with export_lock(options, if_locked):
        plans = plan_export(source, options, settings, projects)
        if progress is not None:
            progress.on_plan(len(plans))
        with (
            run_exporter(options, settings, source) as exporter,
            ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="export") as pool,
        ):
            futures = [pool.submit(exporter.export_one, plan, progress) for plan in plans]
            results = [future.result() for future in futures]
        write_export_summary(Path(options.data_path), results, options)
    return results

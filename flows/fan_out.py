"""`export --distribute`: the parent flow runs each chunk of its plan as its own `export-chunk/<source>` flow run on a
work pool (at most K at a time), watches it through its heartbeat on the shared data path, retries a lost one under
the one retry policy, and hands back every run's result for the one summary (storage/fan_out.py holds the files).

A chunk never takes the data path's lock (its parent holds it for the whole export); it first checks the parent's
marker, so a worker that does not see the same data path fails at once with the shared-storage message.
"""

from __future__ import annotations

import contextvars
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelling, Crashed

from neptune_exporter import export as library
from neptune_exporter import export_results, interrupt
from neptune_exporter.errors import (
    ChunkFailedError,
    ChunkLostError,
    InvalidOptionError,
    TerminalError,
    failure_record,
)
from neptune_exporter.retry import call_with_retries
from neptune_exporter.settings import Settings
from neptune_exporter.storage import fan_out
from neptune_exporter.storage.fan_out import ChunkFiles, Distribution, plan_key
from neptune_exporter.storage.incremental import RunPlan

CHUNK_FLOW = "export-chunk"
POLL_SECONDS = 2.0
BEATS_PER_TIMEOUT = 10  # a chunk beats this many times within the time after which its parent calls it lost
PENDING_PATIENCE = 5  # a worker may take this many times `chunk_lost_after_s` to start a chunk's process
DEPLOY_FIX = "create the chunk deployments: prefect deploy --all --prefect-file deployments/prefect.yaml"
LOST_FIX = "the export retries the chunk; if chunks keep getting lost, check the workers (their logs, memory)"


def chunk_deployment(source: str) -> str:
    return f"{CHUNK_FLOW}/{source}"


def check_chunk_deployment(source: str, work_pool: str) -> None:
    """InvalidOptionError unless `export-chunk/<source>` exists on the Prefect server and runs on `work_pool`."""
    name = chunk_deployment(source)
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise InvalidOptionError(
                f"--distribute: the Prefect server {PREFECT_API_URL.value()} has no deployment {name}", DEPLOY_FIX
            ) from None
    if deployment.work_pool_name != work_pool:
        where = f"work pool {deployment.work_pool_name!r}" if deployment.work_pool_name else "a `serve` process"
        raise InvalidOptionError(
            f"--distribute: deployment {name} runs on {where}, not on work pool {work_pool!r}",
            f"pass --work-pool {deployment.work_pool_name}"
            if deployment.work_pool_name
            else f"{DEPLOY_FIX} (its work pool is {work_pool!r})",
        )


# ----------------------------------------------------------------------------- the chunk's side


class ChunkReport:
    """What a chunk tells its distributing parent: each finished run's result (journaled on the shared data path),
    and whether the parent gave this attempt up (then it starts no further run). A no-op for an in-process chunk."""

    def __init__(self, files: ChunkFiles | None = None):
        self.files = files

    def finished(self, result: dict) -> None:
        if self.files is not None:
            self.files.append(result)

    def given_up(self) -> bool:
        return self.files is not None and self.files.given_up()


@contextmanager
def reporting(data_path: str, shared: dict | None) -> Iterator[ChunkReport]:
    """For a chunk run by a distributing parent (`shared` set): check the parent's marker (StorageNotSharedError),
    beat while the block runs and journal each finished run's result."""
    if shared is None:
        yield ChunkReport()
        return
    fan_out.check_marker(data_path, shared["token"])
    files = ChunkFiles(data_path, shared["token"], shared["chunk"], int(shared["attempt"]))
    with files.beating(float(shared["beat_seconds"])):
        yield ChunkReport(files)


# ----------------------------------------------------------------------------- the parent's side


class LifeSigns:
    """When a chunk's flow run counts as lost: pending (a worker starts its process) for PENDING_PATIENCE x
    `lost_after` seconds, or running with a heartbeat that stood still for `lost_after` seconds. The clock only runs
    while the run is pending or running (a scheduled run waits for a free worker) and restarts at each change."""

    def __init__(self, lost_after: float):
        self.lost_after, self.seen, self.since = lost_after, (None, None), time.monotonic()

    def silent_for_too_long(self, state: StateType | None, beat: str | None) -> str | None:
        """Why the run counts as lost now (None while it does not)."""
        now = time.monotonic()
        if (state, beat) != self.seen or state not in (StateType.PENDING, StateType.RUNNING):
            self.seen, self.since = (state, beat), now
            return None
        patience = self.lost_after * (PENDING_PATIENCE if state == StateType.PENDING else 1)
        if now - self.since <= patience:
            return None
        if state == StateType.PENDING:
            return f"stayed pending for {patience:.0f} s (its worker never started it)"
        return f"gave no sign of life for {patience:.0f} s (its worker or process is gone)"


class FanOut:
    """One distributed export: the chunks' flow runs, their results (by run key) as they arrive, their failures."""

    def __init__(self, options: library.ExportOptions, distribution: Distribution, on_done: Callable[[dict], None]):
        self.options, self.distribution, self.on_done = options, distribution, on_done
        self.settings = Settings.from_env()
        self.results: dict[str, dict] = {}
        self.refused: dict | None = None  # the error record of a chunk that failed terminally: no chunk starts after
        self.token = ""
        self._lock = threading.Lock()

    def run(self, plans: list[dict]) -> list[dict]:
        """Every planned run's result, in plan order (runs a stop request left undone have none)."""
        check_chunk_deployment(self.options.source, self.distribution.work_pool)
        context = FlowRunContext.get()
        owner = f"export flow run {context.flow_run.name}" if context and context.flow_run else "an export"
        self.token = fan_out.write_marker(self.options.data_path, owner)
        for plan in plans:
            if plan["action"] == "skip":  # nothing to fetch: no chunk needed
                self.report(library.skipped_result(RunPlan.from_json(plan), self.options).to_json())
        to_do = [plan for plan in plans if plan["action"] != "skip"]
        chunks = fan_out.split_plans(
            to_do, self.distribution.chunk_runs, fan_out.plan_weights(to_do, self.options.data_path)
        )
        get_run_logger().info(
            "distributing %d run(s) in %d chunk(s) of at most %d on work pool %r, at most %d at a time",
            len(to_do),
            len(chunks),
            self.distribution.chunk_runs,
            self.distribution.work_pool,
            self.distribution.max_parallel,
        )
        with ThreadPoolExecutor(max_workers=self.distribution.max_parallel, thread_name_prefix="chunk") as pool:
            futures = [
                pool.submit(contextvars.copy_context().run, self.run_chunk, f"c{number:04d}", chunk)
                for number, chunk in enumerate(chunks, 1)
            ]
            for future in futures:
                future.result()
        return [self.results[plan_key(plan)] for plan in plans if plan_key(plan) in self.results]

    def finish(self) -> None:
        """The results are merged into the summary: the journals and the marker go."""
        fan_out.clear(self.options.data_path, self.token)

    def report(self, result: dict) -> None:
        """A run's result, once (the live view hears of it)."""
        key = f"{result['project_id']}/{result['run_id']}"
        with self._lock:
            if key in self.results:
                return
            self.results[key] = result
            self.on_done(result)

    def collect(self, chunk: str) -> None:
        for result in fan_out.finished_results(self.options.data_path, self.token, chunk).values():
            self.report(result)

    def run_chunk(self, chunk: str, plans: list[dict]) -> None:
        """The chunk's flow run, retried under the retry policy while it gets lost; its runs failed when it fails
        terminally or the policy is spent."""
        attempts = itertools.count(1)
        try:
            call_with_retries(
                lambda: self.attempt(chunk, plans, next(attempts)), self.settings.retry, what=f"chunk {chunk}"
            )
        except TerminalError as error:
            with self._lock:
                self.refused = self.refused or error.to_record()
            self.fail_rest(plans, self.refused)
        except ChunkLostError as error:
            self.fail_rest(plans, error.to_record())

    def fail_rest(self, plans: list[dict], record: dict) -> None:
        """The chunk's runs without a result are failed with `record` (no manifest written: the next export redoes
        them as it finds them)."""
        for plan in plans:
            if plan_key(plan) not in self.results:
                run = plan["run"]
                error = {
                    "project": run["project_id"],
                    "run": run["run_id"],
                    "attribute": None,
                    **{key: record.get(key) for key in ("error_type", "message", "remedy")},
                }
                self.report(
                    export_results.RunExportResult(
                        run["project_id"], run["run_id"], "failed", None, errors=[error], action=plan["action"]
                    ).to_json()
                )

    def attempt(self, chunk: str, plans: list[dict], attempt: int) -> None:
        """One flow run of the chunk's runs that have no result yet (re-planned on a retry: a run an earlier attempt
        completed is not fetched again); raises ChunkLostError / ChunkFailedError when it ends without them."""
        if self.refused is not None:
            raise ChunkFailedError(self.refused["message"], self.refused.get("remedy") or "")
        if interrupt.requested():
            return
        self.collect(chunk)
        remaining = [plan for plan in plans if plan_key(plan) not in self.results]
        if attempt > 1:
            remaining = self.replan(remaining)
        if not remaining:
            return
        files = ChunkFiles(self.options.data_path, self.token, chunk, attempt)
        beat_seconds = max(1.0, self.settings.chunk_lost_after_s / BEATS_PER_TIMEOUT)
        flow_run = run_deployment(
            chunk_deployment(self.options.source),
            parameters={
                "plans": remaining,
                "options": self.options.to_json(),
                "shared": {"token": self.token, "chunk": chunk, "attempt": attempt, "beat_seconds": beat_seconds},
            },
            flow_run_name=f"{chunk} attempt {attempt}: {len(remaining)} run(s)",
            timeout=0,
            tags=["neptune-exporter"],
        )
        self.watch(flow_run, chunk, files, remaining)

    def replan(self, plans: list[dict]) -> list[dict]:
        """Plans again from the manifests; runs an earlier attempt completed get their result from their manifest."""
        fresh = library.plan_runs([RunPlan.from_json(plan).run for plan in plans], self.options)
        again = []
        for old, new in zip(plans, fresh, strict=True):
            if new.action == "skip":
                self.report(library.finished_result(new, self.options, old["action"]).to_json())
            elif new.action == "redo" and old["action"] == "full":  # the crashed attempt's parts: a new run still
                again.append({**new.to_json(), "action": "full"})
            else:
                again.append(new.to_json())
        return again

    def watch(self, flow_run: FlowRun, chunk: str, files: ChunkFiles, plans: list[dict]) -> None:
        """Until the chunk's flow run ends: its journal read as it grows; lost (marked Crashed, ChunkLostError) when
        its heartbeat stands still for `chunk_lost_after_s` while it runs (PENDING_PATIENCE times that while a worker
        starts its process); cancelled on a stop."""
        clock = LifeSigns(self.settings.chunk_lost_after_s)
        stopping = False
        with get_client(sync_client=True) as client:
            while True:
                time.sleep(POLL_SECONDS)
                self.collect(chunk)
                run = client.read_flow_run(flow_run.id)
                state = run.state
                if state is not None and state.is_final():
                    self.collect(chunk)
                    return self.judge(run, chunk, plans)
                if interrupt.requested() and not stopping:  # the worker stops the chunk between two runs
                    client.set_flow_run_state(run.id, Cancelling(message="the distributing export was stopped"))
                    stopping = True
                silent = clock.silent_for_too_long(state.type if state else None, files.read_beat())
                if silent is not None:
                    self.mark_lost(client, run, files, f"chunk {chunk}: flow run {run.name!r} {silent}")

    def mark_lost(self, client, run: FlowRun, files: ChunkFiles, message: str) -> None:
        """Give the attempt up (it starts no further run if it still runs), mark its flow run Crashed, retry."""
        files.give_up(message)
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)
        raise ChunkLostError(message, LOST_FIX)

    def judge(self, run: FlowRun, chunk: str, plans: list[dict]) -> None:
        """A chunk flow run that ended: done when every run has its result (a handled failure included); else lost
        (retried) or, when its own code failed it (e.g. the data path is not shared), failed for good."""
        missing = sum(plan_key(plan) not in self.results for plan in plans)
        state = run.state
        if not missing or state is None or (state.type == StateType.CANCELLED and interrupt.requested()):
            return
        if state.type == StateType.FAILED:
            record = failure_record(state.message or "the chunk failed")
            record["message"] = f"{record['message']} (chunk {chunk}, flow run {run.name!r})"
            with self._lock:
                self.refused = self.refused or record
            raise ChunkFailedError(record["message"], record.get("remedy") or "")
        raise ChunkLostError(
            f"chunk {chunk}: flow run {run.name!r} ended {state.name} with {missing} of {len(plans)} run(s) not done"
            + (f": {state.message}" if state.message else ""),
            LOST_FIX,
        )

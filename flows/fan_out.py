"""`export|load|validate --distribute`: the parent flow runs each chunk of its runs as its own flow run of
`export-chunk/<source>`, `load-chunk/<target>` or `validate-chunk/<target>` on a work pool (at most K at a time),
watches it through its heartbeat on the shared data path, retries a lost one under the one retry policy, and hands
back every run's result for the one summary (storage/fan_out.py holds the files).

A chunk never takes the data path's lock (its parent holds it for the whole export or load); it first checks the
parent's marker, so a worker that does not see the same data path fails at once with the shared-storage message.
"""

from __future__ import annotations

import contextvars
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
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
    ChunkNotStartedError,
    InvalidOptionError,
    StorageNotSharedError,
    TerminalError,
    failure_message,
    failure_record,
)
from neptune_exporter.retry import RetryPolicy, call_with_retries, one_line
from neptune_exporter.settings import Settings
from neptune_exporter.storage import fan_out
from neptune_exporter.storage.fan_out import ChunkFiles, Distribution, plan_key
from neptune_exporter.storage.incremental import RunPlan
from tasks.policy import failed

CHUNK_FLOW = "export-chunk"
POLL_SECONDS = 2.0
BEATS_PER_TIMEOUT = 10  # a chunk beats this many times within the time after which its parent calls it lost
PENDING_PATIENCE = 5  # a worker may take this many times `chunk_lost_after_s` to start a chunk's process
DEPLOY_FIX = "create the chunk deployments: prefect deploy --all --prefect-file deployments/prefect.yaml"
LOST_FIX = "the parent flow retries the chunk; if chunks keep getting lost, check the workers (their logs, memory)"
START_FIX = "check the Prefect server (its log, its load), then run the command again: it redoes only the runs not done"


def check_chunk_deployment(name: str, work_pool: str) -> None:
    """InvalidOptionError unless deployment `name` (`export-chunk/<source>`, ...) exists on the Prefect server and
    runs on `work_pool`."""
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


def server_unavailable(error: httpx.HTTPError) -> bool:
    """The Prefect server did not answer, timed out, or answered 429 / 5xx (worth asking again)."""
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code == 429 or error.response.status_code >= 500
    return isinstance(error, httpx.TransportError)


def create_chunk_run(deployment: str, parameters: dict, name: str, key: str, policy: RetryPolicy) -> FlowRun:
    """One flow run of `deployment` per idempotency `key`, however often the request goes out: the Prefect client
    sends a request that timed out again, and the server may have created the run the first time; with the key it
    answers with that run, not a second one loading the same runs at the same time. A server that does not answer is
    retried under `policy` with the same key (ChunkNotStartedError once spent); a refusal is ChunkFailedError."""

    def create() -> FlowRun:
        try:
            return run_deployment(
                deployment,
                parameters=parameters,
                flow_run_name=name,
                timeout=0,
                tags=["neptune-exporter"],
                idempotency_key=key,
            )
        except httpx.HTTPError as error:
            if not server_unavailable(error):
                refused = f"{name}: the Prefect server refused its flow run: {one_line(error)}"
                raise ChunkFailedError(refused, DEPLOY_FIX) from error
            raise ChunkNotStartedError(
                f"{name}: the Prefect server did not answer creating its flow run ({one_line(error)})", START_FIX
            ) from error

    return call_with_retries(create, policy, what=f"start {name}")


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
    where = fan_out.place(data_path, shared["command"])
    fan_out.check_marker(where, shared["token"])
    files = ChunkFiles(str(where), shared["token"], shared["chunk"], int(shared["attempt"]))
    with files.beating(float(shared["beat_seconds"])):
        yield ChunkReport(files)


def as_chunk(data_path: str, shared: dict | None, body: Callable[[ChunkReport], Any]) -> Any:
    """`body(report)` inside `reporting`: a chunk flow's result; Failed with the shared-storage message (no run
    touched) when this worker does not see the parent's data path."""
    try:
        with reporting(data_path, shared) as report:
            return body(report)
    except StorageNotSharedError as error:
        return failed(failure_message(error.to_record()), [])


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


class Distributor:
    """One distributed flow run: chunks of its runs as flow runs of deployment `<chunk flow>/<name>` on a work pool,
    their results (by run key) as they arrive, their failures. The flow's own part (what a run is, a chunk's
    parameters, the result of a run its chunk could not do) comes from a subclass."""

    chunk_flow = ""
    verb = "process"

    def __init__(self, name: str, data_path: str, distribution: Distribution, on_done: Callable[[dict], None]):
        self.name, self.data_path, self.distribution, self.on_done = name, data_path, distribution, on_done
        self.settings = Settings.from_env()
        self.results: dict[str, dict] = {}
        self.refused: dict | None = None  # the error record of a chunk that failed terminally: no chunk starts after
        self.token = ""
        self.chunk_count = 0  # chunks dispatched so far (a load dispatches one fork wave after the other)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------- what a subclass tells

    def item_key(self, item: dict) -> str:
        """The `project/run` key of one item of the plan (the key of its result)."""
        return f"{item['project_id']}/{item['run_id']}"

    def chunk_parameters(self, items: list[dict]) -> dict:
        """The chunk flow's parameters for these items (besides `shared`)."""
        raise NotImplementedError

    def failed_result(self, item: dict, record: dict) -> dict:
        """The result of an item its chunk could not do (`record`: the error record)."""
        raise NotImplementedError

    def replan(self, items: list[dict]) -> list[dict]:
        """The items a retry of a chunk still has to do (default: all of them)."""
        return items

    def split(self, items: list[dict]) -> list[list[dict]]:
        """The items in chunks of at most `chunk_runs`, by project."""
        return fan_out.split_plans(items, self.distribution.chunk_runs, project=lambda item: item["project_id"])

    # ------------------------------------------------------------------------- the distribution

    @property
    def deployment(self) -> str:
        return f"{self.chunk_flow}/{self.name}"

    @property
    def command(self) -> str:
        """The distributed command (`export-neptune3`, `load-mlflow`, ...): its own place in the data path."""
        return f"{self.chunk_flow.removesuffix('-chunk')}-{self.name}"

    @property
    def where(self) -> Path:
        return fan_out.place(self.data_path, self.command)

    def start(self) -> None:
        """The chunk deployment is there; the marker is written (once per distribution) and the chunks of an earlier
        distribution (a killed parent's) have stopped, so a plan made after this sees everything they did."""
        if self.token:
            return
        check_chunk_deployment(self.deployment, self.distribution.work_pool)
        context = FlowRunContext.get()
        name = context.flow_run.name if context and context.flow_run else "?"
        self.token = fan_out.write_marker(
            self.where,
            f"{context.flow.name if context else 'a'} flow run {name}",
            alive_for=self.settings.chunk_lost_after_s,
            on_wait=get_run_logger().warning,
        )

    def run(self, items: list[dict]) -> list[dict]:
        """Every item's result, in order (items a stop request left undone have none)."""
        self.start()
        self.dispatch(items)
        return [self.results[self.item_key(item)] for item in items if self.item_key(item) in self.results]

    def dispatch(self, items: list[dict]) -> None:
        """The items as chunks on the work pool, at most `max_parallel` at a time, until all ended."""
        chunks = self.split(items)
        get_run_logger().info(
            "distributing %d run(s) to %s in %d chunk(s) of at most %d on work pool %r, at most %d at a time",
            len(items),
            self.verb,
            len(chunks),
            self.distribution.chunk_runs,
            self.distribution.work_pool,
            self.distribution.max_parallel,
        )
        first, self.chunk_count = self.chunk_count, self.chunk_count + len(chunks)
        with ThreadPoolExecutor(max_workers=self.distribution.max_parallel, thread_name_prefix="chunk") as pool:
            futures = [
                pool.submit(contextvars.copy_context().run, self.run_chunk, f"c{number:04d}", chunk)
                for number, chunk in enumerate(chunks, first + 1)
            ]
            for future in futures:
                future.result()

    def finish(self) -> None:
        """The results are merged into the summary: the journals and the marker go."""
        if self.token:
            fan_out.clear(self.where, self.token)

    def report(self, result: dict) -> None:
        """A run's result, once (the live view hears of it)."""
        key = f"{result['project_id']}/{result['run_id']}"
        with self._lock:
            if key in self.results:
                return
            self.results[key] = result
            self.on_done(result)

    def collect(self, chunk: str) -> None:
        for result in fan_out.finished_results(self.where, self.token, chunk).values():
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
        except (ChunkLostError, ChunkNotStartedError) as error:
            self.fail_rest(plans, error.to_record())

    def fail_rest(self, plans: list[dict], record: dict) -> None:
        """The chunk's runs without a result are failed with `record` (nothing written for them: the next run of the
        flow redoes them as it finds them)."""
        for plan in plans:
            if self.item_key(plan) not in self.results:
                self.report(self.failed_result(plan, record))

    def attempt(self, chunk: str, plans: list[dict], attempt: int) -> None:
        """One flow run of the chunk's runs that have no result yet (re-planned on a retry: a run an earlier attempt
        completed is not fetched again); raises ChunkLostError / ChunkFailedError when it ends without them."""
        if self.refused is not None:
            raise ChunkFailedError(self.refused["message"], self.refused.get("remedy") or "")
        if interrupt.requested():
            return
        self.collect(chunk)
        remaining = [plan for plan in plans if self.item_key(plan) not in self.results]
        if attempt > 1:
            remaining = self.replan(remaining)
        if not remaining:
            return
        files = ChunkFiles(str(self.where), self.token, chunk, attempt)
        beat_seconds = max(1.0, self.settings.chunk_lost_after_s / BEATS_PER_TIMEOUT)
        shared = {
            "command": self.command,
            "token": self.token,
            "chunk": chunk,
            "attempt": attempt,
            "beat_seconds": beat_seconds,
        }
        flow_run = create_chunk_run(
            self.deployment,
            {**self.chunk_parameters(remaining), "shared": shared},
            f"{chunk} attempt {attempt}: {len(remaining)} run(s)",
            f"neptune-exporter/{self.command}/{self.token}/{chunk}/{attempt}",
            self.settings.retry,
        )
        self.watch(flow_run, chunk, files, remaining)

    def watch(self, flow_run: FlowRun, chunk: str, files: ChunkFiles, plans: list[dict]) -> None:
        """Until the chunk's flow run ends: its journal read as it grows; lost (marked Crashed, ChunkLostError) when
        its heartbeat stands still for `chunk_lost_after_s` while it runs (PENDING_PATIENCE times that while a worker
        starts its process); cancelled on a stop. While the Prefect server does not answer, the run keeps its last
        known state and the heartbeat on the data path decides."""
        clock = LifeSigns(self.settings.chunk_lost_after_s)
        stopping, run, unanswered = False, flow_run, 0
        with get_client(sync_client=True) as client:
            while True:
                time.sleep(POLL_SECONDS)
                self.collect(chunk)
                try:
                    run, unanswered = client.read_flow_run(flow_run.id), 0
                except httpx.HTTPError as error:
                    if not server_unavailable(error):
                        raise
                    if not unanswered:
                        get_run_logger().warning(
                            "chunk %s: the Prefect server did not answer (%s); watching its heartbeat", chunk, error
                        )
                    unanswered += 1
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
        """Give the attempt up (it starts no further run if it still runs), mark its flow run Crashed (when the
        server answers), retry."""
        files.give_up(message)
        try:
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
        except httpx.HTTPError as error:
            if not server_unavailable(error):
                raise
            get_run_logger().warning("could not mark flow run %r Crashed: %s", run.name, error)
        raise ChunkLostError(message, LOST_FIX)

    def judge(self, run: FlowRun, chunk: str, plans: list[dict]) -> None:
        """A chunk flow run that ended: done when every run has its result (a handled failure included); else lost
        (retried) or, when its own code failed it (e.g. the data path is not shared), failed for good."""
        missing = sum(self.item_key(plan) not in self.results for plan in plans)
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


class FanOut(Distributor):
    """A distributed export: `export-chunk/<source>` flow runs of the plan's runs (a skipped run needs none)."""

    chunk_flow = CHUNK_FLOW
    verb = "export"

    def __init__(self, options: library.ExportOptions, distribution: Distribution, on_done: Callable[[dict], None]):
        super().__init__(options.source, options.data_path, distribution, on_done)
        self.options = options

    def item_key(self, item: dict) -> str:
        return plan_key(item)

    def chunk_parameters(self, items: list[dict]) -> dict:
        return {"plans": items, "options": self.options.to_json()}

    def split(self, items: list[dict]) -> list[list[dict]]:
        return fan_out.split_plans(
            items, self.distribution.chunk_runs, fan_out.plan_weights(items, self.options.data_path)
        )

    def run(self, plans: list[dict]) -> list[dict]:
        self.start()
        for plan in plans:
            if plan["action"] == "skip":  # nothing to fetch: no chunk needed
                self.report(library.skipped_result(RunPlan.from_json(plan), self.options).to_json())
        self.dispatch([plan for plan in plans if plan["action"] != "skip"])
        return [self.results[plan_key(plan)] for plan in plans if plan_key(plan) in self.results]

    def failed_result(self, item: dict, record: dict) -> dict:
        run = item["run"]
        error = {
            "project": run["project_id"],
            "run": run["run_id"],
            "attribute": None,
            **{key: record.get(key) for key in ("error_type", "message", "remedy")},
        }
        return export_results.RunExportResult(
            run["project_id"], run["run_id"], "failed", None, errors=[error], action=item["action"]
        ).to_json()

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


class RunsFanOut(Distributor):
    """A distributed load or validation: `load-chunk/<target>` / `validate-chunk/<target>` flow runs of the selected
    runs; a retried chunk loads its runs again (the target's tags make a load idempotent)."""

    def __init__(
        self,
        chunk_flow: str,
        options: dict,
        distribution: Distribution,
        on_done: Callable[[dict], None],
        failed_result: Callable[[dict, dict], dict],
    ):
        super().__init__(options["target"], options["data_path"], distribution, on_done)
        self.chunk_flow, self.verb = chunk_flow, chunk_flow.removesuffix("-chunk")
        self.options, self.make_failed = options, failed_result

    def chunk_parameters(self, items: list[dict]) -> dict:
        return {"options": self.options, "runs": items}

    def failed_result(self, item: dict, record: dict) -> dict:
        return self.make_failed(item, record)

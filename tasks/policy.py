"""Prefect retries, caching and handled failures: `retry_condition_fn` from the library's one retry policy
(`neptune_exporter.retry`), and how a handled failure becomes a Failed state with a message.

Per-run tasks get no Prefect retries: their library verb retries under the policy itself, so a task shows as
retried in the UI only when Prefect really runs it again (the discovery tasks, for errors no library layer retried).
"""

from __future__ import annotations

import json
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.states import Cancelled, Failed, State

from neptune_exporter.errors import TerminalError, failure_message
from neptune_exporter.retry import RetryPolicy, should_retry
from neptune_exporter.settings import Settings


def failure_of(state: State) -> BaseException | None:
    """The exception a failed task state carries, when it carries one."""
    data: Any = state.data
    if isinstance(data, BaseException):
        return data
    try:
        result = state.result(raise_on_failure=False)
    except Exception as exc:  # the stored result could not be read: judge by that error
        return exc
    return result if isinstance(result, BaseException) else None


def retry_transient(task: Any, task_run: Any, state: State) -> bool:
    """`retry_condition_fn`: retry only what `retry.should_retry` retries (transient, not already retried)."""
    error = failure_of(state)
    return error is not None and should_retry(error)


def retry_options(policy: RetryPolicy | None = None) -> dict[str, Any]:
    """Keyword arguments for `@task` implementing the settings' RetryPolicy on transient errors."""
    policy = policy or Settings.from_env().retry
    return {
        "retries": max(0, policy.attempts - 1),
        "retry_delay_seconds": policy.delays() or 0,
        "retry_condition_fn": retry_transient,
    }


def cache_policy(*ignored_inputs: str) -> CachePolicy:
    """INPUTS + TASK_SOURCE (never INPUTS alone), leaving out inputs that must not shape the key."""
    inputs: CachePolicy = INPUTS
    for name in ignored_inputs:
        inputs = inputs - name
    return inputs + TASK_SOURCE


def cached_task_options(*ignored_inputs: str) -> dict[str, Any]:
    """Keyword arguments for `@task`: reusable small JSON results keyed by the policy above."""
    return {
        "cache_policy": cache_policy(*ignored_inputs),
        "persist_result": True,
        "result_serializer": "json",
    }


class RunsFailed(Exception):
    """A handled failure (runs failed or differ): the data of a Failed state, carrying the result its caller needs.

    Its message is the state's message; `result` is the run's pointer (per-run task), the chunk's pointers
    (subflow) or the flow's summary (flow). Prefect's JSON serializer keeps only the message.
    """

    def __init__(self, message: str, result: Any = None):
        super().__init__(message, result)
        self.message, self.result = message, result

    def __str__(self) -> str:
        return self.message


def failed(message: str, result: Any) -> State:
    """A Failed state with a message and an exception as data: Prefect logs no traceback for it."""
    return Failed(message=message, data=RunsFailed(message, result))


def rejected(error: TerminalError) -> State:
    """The Failed state of a step that refused its input (token, project, path, regex...): its one line with the fix,
    no traceback; the flow ends with it (`{"rejected": line}` as result)."""
    line = failure_message(error.to_record())
    return failed(line, {"rejected": line})


def interrupted(message: str, result: Any) -> State:
    """A Cancelled state (the run or flow stopped on Ctrl-C / SIGTERM, its work left for the rerun) carrying its
    caller's result as `failed` does."""
    return Cancelled(message=message, data=RunsFailed(message, result))


def detached(data: Any) -> Any:
    """A fresh copy of JSON data sharing no object with any task or subflow result.

    Prefect records a task's inputs by the identity of objects earlier results held (strings included), so passing
    results (or anything sharing their objects) draws dependency arrows and `flow_run` inputs the UI cannot render.
    """
    return json.loads(json.dumps(data))

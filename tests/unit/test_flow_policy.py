"""The Prefect retry/caching policy: transient errors no library layer retried are retried with the settings' backoff."""

from prefect import flow, task
from prefect.cache_policies import CompoundCachePolicy
from prefect.states import Failed

from neptune_exporter.errors import InvalidTokenError, RateLimitedError
from neptune_exporter.retry import RetryPolicy, mark_spent
from tasks.policy import cache_policy, retry_options, retry_transient


def test_only_transient_failures_are_retried():
    assert retry_transient(None, None, Failed(data=RateLimitedError("429", "wait")))
    assert retry_transient(None, None, Failed(data=ConnectionResetError("reset")))
    assert not retry_transient(None, None, Failed(data=InvalidTokenError("bad token", "set NEPTUNE_API_TOKEN")))
    assert not retry_transient(None, None, Failed(data=ValueError("bug")))
    assert not retry_transient(None, None, Failed(data=mark_spent(RateLimitedError("429", "wait"))))  # retried below


def test_retry_options_follow_the_retry_policy():
    options = retry_options(RetryPolicy(attempts=4, backoff_seconds=2, backoff_max_seconds=5))
    assert options["retries"] == 3
    assert options["retry_delay_seconds"] == [2, 4, 5]
    assert options["retry_condition_fn"] is retry_transient


def test_cache_policy_is_inputs_plus_task_source_without_ignored_inputs():
    policy = cache_policy("plan", "options")
    assert isinstance(policy, CompoundCachePolicy)
    by_name = {type(p).__name__: p for p in policy.policies}
    assert set(by_name) == {"Inputs", "TaskSource"}
    assert set(by_name["Inputs"].exclude) == {"plan", "options"}


calls: list[str] = []
fast_retries = retry_options(RetryPolicy(attempts=3, backoff_seconds=0, backoff_max_seconds=0))


@task(**fast_retries)
def flaky(kind: str) -> str:
    calls.append(kind)
    if kind == "transient" and calls.count(kind) < 3:
        raise RateLimitedError("429 Too Many Requests", "wait and retry")
    if kind == "terminal":
        raise InvalidTokenError("token rejected", "set NEPTUNE_API_TOKEN")
    if kind == "spent":
        raise mark_spent(RateLimitedError("429 Too Many Requests", "wait and retry"))
    return "ok"


@flow
def run_flaky(kind: str) -> str:
    state = flaky(kind, return_state=True)
    return type(state.result(raise_on_failure=False)).__name__ if state.is_failed() else state.result()


def test_a_real_task_retries_transient_errors_until_success_and_terminal_errors_never(prefect_harness):
    calls.clear()
    assert run_flaky("transient") == "ok"
    assert calls.count("transient") == 3
    assert run_flaky("terminal") == "InvalidTokenError"
    assert calls.count("terminal") == 1
    assert run_flaky("spent") == "RateLimitedError"  # the library already retried it: Prefect does not again
    assert calls.count("spent") == 1

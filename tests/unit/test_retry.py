"""The one retry policy: transient errors only, Retry-After honoured, one layer per error, an injected sleep."""

from __future__ import annotations

import pytest

from neptune_exporter import settings
from neptune_exporter.errors import (
    InvalidTokenError,
    RateLimitedError,
    SourceUnavailableError,
    TargetError,
    TargetUnavailableError,
    TerminalError,
    disk_full_cause,
)
from neptune_exporter.retry import RetryPolicy, call_with_retries, retry_delay, should_retry


def failing(error: BaseException, times: int, calls: list):
    """A call that raises `error` `times` times, then returns "ok"; every call is counted in `calls`."""

    def call():
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "ok"

    return call


def test_the_policy_is_the_settings_one():
    assert RetryPolicy is settings.RetryPolicy and settings.Settings().retry == RetryPolicy()


def test_retries_only_transient_errors():
    calls, waits = [], []
    flaky = failing(TargetUnavailableError("down", "wait"), 2, calls)
    assert (
        call_with_retries(flaky, RetryPolicy(attempts=3, backoff_seconds=0.001), sleep=waits.append) == "ok"
        and len(calls) == 3
    )
    calls.clear()
    with pytest.raises(TargetError):
        call_with_retries(
            failing(TargetError("no", "fix it"), 9, calls),
            RetryPolicy(attempts=5, backoff_seconds=0.001),
            sleep=waits.append,
        )
    assert len(calls) == 1


def test_waits_follow_the_backoff_and_the_last_error_is_raised_after_the_budget():
    calls, waits = [], []
    error = SourceUnavailableError("503", "retry later")
    with pytest.raises(SourceUnavailableError) as raised:
        call_with_retries(
            failing(error, 99, calls),
            RetryPolicy(attempts=4, backoff_seconds=2, backoff_max_seconds=5),
            sleep=waits.append,
        )
    assert raised.value is error and len(calls) == 4 and waits == [2, 4, 5]


def test_retry_after_wins_over_a_shorter_backoff():
    limited = RateLimitedError("429", "slow down")
    limited.retry_after = 7.5
    policy = RetryPolicy(attempts=3, backoff_seconds=1, backoff_max_seconds=60)
    assert [retry_delay(limited, policy, attempt) for attempt in range(2)] == [7.5, 7.5]
    assert retry_delay(SourceUnavailableError("503", "later"), policy, 1) == 2.0
    calls, waits = [], []
    assert call_with_retries(failing(limited, 2, calls), policy, sleep=waits.append) == "ok" and waits == [7.5, 7.5]


def test_never_retries_a_terminal_error_even_one_flagged_transient():
    odd = TerminalError("refused", "fix the input")
    odd.transient = True  # a terminal error is never retried, whatever its flag says
    assert not should_retry(odd) and not should_retry(InvalidTokenError("bad", "set the token"))
    assert not should_retry(ValueError("bug"))
    assert should_retry(ConnectionResetError("reset")) and should_retry(RateLimitedError("429", "wait"))


def test_one_layer_per_error_nested_retries_never_multiply():
    calls, waits = [], []
    inner = lambda: call_with_retries(
        failing(SourceUnavailableError("503", "later"), 99, calls), RetryPolicy(attempts=5), sleep=waits.append
    )  # noqa: E731
    with pytest.raises(SourceUnavailableError) as raised:
        call_with_retries(inner, RetryPolicy(attempts=5), sleep=waits.append)
    assert len(calls) == 5 and len(waits) == 4  # the outer layer saw a spent error: no 5 x 5
    assert not should_retry(raised.value)


def test_one_attempt_policy_calls_once_and_marks_the_error_spent():
    calls = []
    with pytest.raises(ConnectionError) as raised:
        call_with_retries(failing(ConnectionError("down"), 9, calls), RetryPolicy(attempts=1), sleep=pytest.fail)
    assert len(calls) == 1 and not should_retry(raised.value)


def test_a_transient_looking_error_caused_by_a_full_disk_is_not_retried():
    full = OSError(28, "No space left on device")
    download = RuntimeError("File download ended in an unexpected error.")  # a client's wrapper, its cause the disk
    download.__cause__ = full
    wrapped = SourceUnavailableError("a file download failed", "run the export again")
    wrapped.__cause__ = download
    pyarrow_style = OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")
    assert disk_full_cause(wrapped) is full and disk_full_cause(pyarrow_style) is pyarrow_style
    assert disk_full_cause(SourceUnavailableError("down", "wait")) is None
    calls: list = []
    with pytest.raises(SourceUnavailableError):
        call_with_retries(failing(wrapped, 5, calls), RetryPolicy(attempts=5), sleep=lambda _: None)
    assert len(calls) == 1 and not should_retry(wrapped)

"""The one retry policy: which errors are retried, how long to wait (Retry-After honoured), and the retry loop.

Attempt budget (README, "Settings"): a request is first retried by its client within the client's own window
(`source_retry_timeout_s`); then ours, `RetryPolicy.attempts` attempts, by exactly one layer — the innermost
`call_with_retries` that sees the error. When a layer gives up it marks the error spent, so no outer layer
(the per-run verb, a Prefect task) retries it again: attempts are never multiplied.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from neptune_exporter.errors import TerminalError, is_transient
from neptune_exporter.settings import RetryPolicy

__all__ = ["RetryPolicy", "call_with_retries", "mark_spent", "retry_delay", "should_retry"]

log = logging.getLogger(__name__)
T = TypeVar("T")
SPENT = "retries_spent"  # attribute set on an error whose retries one layer has already used up


def should_retry(error: BaseException) -> bool:
    """Transient per `errors.is_transient`, never a TerminalError, and not already retried by an inner layer."""
    return is_transient(error) and not isinstance(error, TerminalError) and not getattr(error, SPENT, False)


def mark_spent(error: BaseException) -> BaseException:
    """Mark `error` as retried to the end of the budget (outer layers then report it instead of retrying)."""
    try:
        setattr(error, SPENT, True)
    except AttributeError:  # an exception type with __slots__: it can only be retried by one layer anyway
        pass
    return error


def retry_delay(error: BaseException, policy: RetryPolicy, attempt: int) -> float:
    """Wait before retry number `attempt` + 1 (0-based): the policy's backoff, at least the server's Retry-After."""
    delays = policy.delays()
    base = delays[min(attempt, len(delays) - 1)] if delays else 0.0
    try:
        retry_after = float(getattr(error, "retry_after", None) or 0.0)
    except (TypeError, ValueError):
        retry_after = 0.0
    return max(base, retry_after)


def one_line(error: BaseException) -> str:
    """The error's text on one line (a retry is one log line, whatever the client put in its message)."""
    return " ".join(str(error).split()) or type(error).__name__


def call_with_retries(
    fn: Callable[[], T], policy: RetryPolicy, *, what: str = "a call", sleep: Callable[[float], object] = time.sleep
) -> T:
    """`fn()`, retried per `policy` on errors `should_retry` accepts; the last error re-raised, marked spent."""
    attempts = max(1, policy.attempts)
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as error:  # re-raised below unless it is retried
            if not should_retry(error):
                raise
            if attempt + 1 == attempts:
                mark_spent(error)
                raise
            delay = retry_delay(error, policy, attempt)
            log.warning("%s: %s; attempt %d of %d in %.1fs", what, one_line(error), attempt + 2, attempts, delay)
            sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises on its last attempt")

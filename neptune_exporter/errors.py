"""Typed errors: terminal (user or data problems, never retried) and transient (retried), each with a remedy."""

from __future__ import annotations

import errno
import re

# terminal control sequences (colours, cursor moves: CSI and OSC) and other control characters but tab and newline
_CONTROL_CODES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]"
)


def plain_text(text: str) -> str:
    """Text without terminal control codes (the `neptune` client colours its messages: `\\x1b[95m`)."""
    return _CONTROL_CODES.sub("", text)


def first_line(text: str) -> str:
    """The first line of a client's message that says something: control codes gone, rules (`----Name----`) skipped."""
    for line in plain_text(text).splitlines():
        line = line.strip()
        if line and not line.startswith("---"):
            return line
    return ""


class NeptuneExporterError(Exception):
    """Base error: a one-line problem statement plus the fix a user should apply."""

    transient = False

    def __init__(self, message: str, remedy: str = "", *, run: str | None = None, attribute: str | None = None):
        message, remedy = plain_text(message), plain_text(remedy)
        super().__init__(message)
        self.message = message
        self.remedy = remedy
        self.run = run
        self.attribute = attribute

    def __str__(self) -> str:
        return f"{self.message} — fix: {self.remedy}" if self.remedy else self.message

    def to_record(self) -> dict:
        """JSON-friendly record for error reports and manifests."""
        return {
            "error_type": type(self).__name__,
            "transient": self.transient,
            "message": self.message,
            "remedy": self.remedy,
            "run": self.run,
            "attribute": self.attribute,
        }


def failure_message(record: dict | None) -> str:
    """One line from an error record (`to_record`, an export's error report): `ErrorType: message — fix: remedy`
    (attribute named when known). The CLI's failure lines, reports and Prefect state messages all use it."""
    record = record or {}
    where = f" (attribute {record['attribute']})" if record.get("attribute") else ""
    text = f"{record.get('error_type') or 'Error'}: {record.get('message') or 'unknown error'}{where}"
    return f"{text} — fix: {record['remedy']}" if record.get("remedy") else text


def failure_record(line: str) -> dict:
    """The record behind a `failure_message` line (error type, message, remedy): a failure known only by its line,
    e.g. a Prefect state message."""
    text, _, remedy = line.partition(" — fix: ")
    error_type, separator, message = text.partition(": ")
    if not separator or not error_type.isidentifier():
        error_type, message = "Error", text
    return {"error_type": error_type, "message": message, "remedy": remedy or None}


class TerminalError(NeptuneExporterError):
    """Retrying will not help: bad input, missing access, corrupt data."""


class TransientError(NeptuneExporterError):
    """May succeed when retried: network trouble, rate limits, server errors."""

    transient = True


# ---- terminal: user input
class InvalidTokenError(TerminalError):
    """The Neptune API token was rejected or is malformed."""


class ProjectNotFoundError(TerminalError):
    """A project does not exist or the token has no access to it."""


class InvalidQueryError(TerminalError):
    """A `--where`/`--query` expression could not be parsed or was refused by the server."""


class InvalidRegexError(TerminalError):
    """A regex option is not a valid regular expression."""


class InvalidOptionError(TerminalError):
    """A CLI option or flow parameter has an invalid value."""


class OutputPathError(TerminalError):
    """An output or input folder cannot be created, written or read."""


class DiskFullError(OutputPathError):
    """A write failed because the disk of an output folder is full."""


class CorruptPartError(TerminalError):
    """A Parquet part on disk cannot be read or does not match the schema."""


class DamagedExportError(CorruptPartError):
    """A part of an exported run differs from what its manifest records (missing, truncated, overwritten)."""


class StepOutOfRangeError(TerminalError):
    """A step the Parquet step column (decimal128(18,6)) cannot hold exactly, or a target's integer steps cannot."""


class NoRunsSelectedError(TerminalError):
    """A load or validation found no exported run where it looked."""


class PathLockedError(TerminalError):
    """Another export (or load) holds the lock of the folder it would write to."""


class StorageNotSharedError(TerminalError):
    """A distributed export's chunk does not see the marker its parent wrote in the data path (not shared storage)."""


class ChunkFailedError(TerminalError):
    """A chunk of a distributed export ended Failed without results for its runs (its message says why)."""


class WorkerProcessDiedError(TerminalError):
    """An export worker process (`--processes`) ended while it exported a run; the rerun redoes the run."""


class UnsupportedError(TerminalError):
    """The source or target cannot do what was asked."""


class TargetError(TerminalError):
    """A load target refused data in a way retrying will not fix."""


# ---- transient: the network and servers
class SourceUnavailableError(TransientError):
    """The Neptune server could not be reached or answered with a server error."""


class RateLimitedError(TransientError):
    """The server asked us to slow down."""

    retry_after: float = 0.0  # seconds the server asked to wait (its Retry-After); retry.py waits at least this


class ChunkLostError(TransientError):
    """A chunk of a distributed export crashed, or its process stopped beating (its worker was killed)."""


class ChunkNotStartedError(TransientError):
    """The Prefect server did not confirm the flow run of a distributed chunk (it may have created it: the next try
    asks for the same flow run by its idempotency key)."""


class RunInUseError(TransientError):
    """Another process exports or loads the same run right now (a distributed chunk given up while it still runs)."""


class TargetUnavailableError(TransientError):
    """The load target could not be reached or answered with a server error."""


NO_SPACE_TEXT = "no space left on device"  # pyarrow's OSError may carry the errno only in its text
CAUSES_FOLLOWED = 10


def disk_full_cause(error: BaseException) -> OSError | None:
    """The "no space left on device" (or quota exceeded) OSError behind `error`, itself or one of its causes (a
    client may wrap it in its own download error); None when the disk is not what failed."""
    cause: BaseException | None = error
    for _ in range(CAUSES_FOLLOWED):
        if cause is None:
            return None
        if isinstance(cause, OSError) and (
            cause.errno in (errno.ENOSPC, errno.EDQUOT) or NO_SPACE_TEXT in str(cause).lower()
        ):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def is_transient(error: BaseException) -> bool:
    """True when retrying may help (used by the single retry policy): never for a full disk."""
    if disk_full_cause(error) is not None:
        return False
    if isinstance(error, NeptuneExporterError):
        return error.transient
    return isinstance(error, (ConnectionError, TimeoutError))

"""The one settings module: typed defaults, each overridable by an environment variable (see README)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "NEPTUNE_EXPORTER_"
MIN_SERIES_REQUEST_ROWS = 10_000  # points per series request at least, however many runs share a process
WANDB_OFFLINE_DIR = "./wandb-runs"  # W&B offline runs go here when no --wandb-dir is given
COMET_OFFLINE_DIR = "./comet-archives"  # Comet offline archives go here when no --comet-dir is given


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


@dataclass(frozen=True)
class RetryPolicy:
    """The numbers of the one retry policy (applied by `neptune_exporter.retry`): attempts, exponential backoff, cap."""

    attempts: int = 5
    backoff_seconds: float = 1.0
    backoff_max_seconds: float = 60.0

    def delays(self) -> list[float]:
        """Waits before each retry (attempts - 1 of them)."""
        return [min(self.backoff_max_seconds, self.backoff_seconds * 2**i) for i in range(self.attempts - 1)]


@dataclass(frozen=True)
class Settings:
    """Every tunable of the tool. `Settings.from_env()` reads NEPTUNE_EXPORTER_* overrides."""

    data_path: Path = Path("./exports/data")
    files_path: Path = Path("./exports/files")
    workers: int = 4
    series_batch_rows: int = 200_000  # points per series request at most (neptune-query has a fixed cost per call)
    series_points_in_flight: int = 200_000  # points one process's runs read at once: a request asks for ≤ its share
    part_target_bytes: int = 50 * 1024 * 1024  # parts roll near this size
    attributes_per_request: int = 500  # attribute names per fetch call
    runs_per_task_batch: int = 500  # runs submitted per batch so one flow run stays < ~2,000 task runs
    chunk_lost_after_s: int = 120  # a distributed export's chunk that stops beating this long is lost (then retried)
    dead_run_after_s: int = 0  # a Running flow run without a Prefect heartbeat this long is dead (0: 3 beat intervals)
    source_retry_timeout_s: int = 60  # a Neptune client retries one request this long, then our RetryPolicy takes over
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def for_runs_at_once(self, runs: int) -> Settings:
        """These settings for `runs` runs exported at once by one process: a series request asks for at most its
        share of `series_points_in_flight` (a point costs ~300-500 bytes inside the client while a response is
        decoded), never fewer than MIN_SERIES_REQUEST_ROWS (each request has its fixed cost)."""
        share = max(MIN_SERIES_REQUEST_ROWS, self.series_points_in_flight // max(1, runs))
        return replace(self, series_batch_rows=min(self.series_batch_rows, share))

    @classmethod
    def from_env(cls) -> Settings:
        """Defaults overridden by NEPTUNE_EXPORTER_<FIELD> environment variables."""
        values: dict[str, Any] = {}  # Path or int, per field
        for f in fields(cls):
            if f.name == "retry":
                continue
            raw = _env(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = Path(raw) if f.name.endswith("_path") else int(raw)
        retry = RetryPolicy(
            attempts=int(_env(ENV_PREFIX + "RETRY_ATTEMPTS") or RetryPolicy.attempts),
            backoff_seconds=float(_env(ENV_PREFIX + "RETRY_BACKOFF_SECONDS") or RetryPolicy.backoff_seconds),
            backoff_max_seconds=float(
                _env(ENV_PREFIX + "RETRY_BACKOFF_MAX_SECONDS") or RetryPolicy.backoff_max_seconds
            ),
        )
        return cls(retry=retry, **values)


def neptune_api_token(explicit: str | None = None) -> str | None:
    """Token from the option or NEPTUNE_API_TOKEN; never logged or written to disk."""
    return explicit or _env("NEPTUNE_API_TOKEN")


def default_projects() -> list[str]:
    """Projects from NEPTUNE_PROJECT when none are given."""
    value = _env("NEPTUNE_PROJECT")
    return [value] if value else []

"""Prefect settings for CLI runs, applied as environment variables before Prefect is first imported."""

from __future__ import annotations

import os
from typing import MutableMapping

EPHEMERAL_STARTUP_TIMEOUT_SECONDS = 120

# For every Prefect process we start (CLI runs, `prefect server start`, the deployments' runner).
ANALYTICS_OFF: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}

# CLI runs, whether or not a server is configured: no analytics, quiet Prefect loggers in the terminal.
QUIET_DEFAULTS: dict[str, str] = {
    **ANALYTICS_OFF,
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_SERVER_LEVEL": "WARNING",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}

# Applied only without PREFECT_API_URL: a local subprocess server that a fresh machine starts reliably.
EPHEMERAL_DEFAULTS: dict[str, str] = {
    "PREFECT_SERVER_EPHEMERAL_ENABLED": "true",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": str(EPHEMERAL_STARTUP_TIMEOUT_SECONDS),
}


def prefect_settings(environ: MutableMapping[str, str]) -> dict[str, str]:
    """The Prefect variables a CLI run needs that `environ` does not already set."""
    wanted = dict(QUIET_DEFAULTS)
    if not environ.get("PREFECT_API_URL"):
        wanted.update(EPHEMERAL_DEFAULTS)
    return {name: value for name, value in wanted.items() if not environ.get(name)}


def configure_prefect(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the missing Prefect variables; must run before `prefect` is imported. Returns what was set."""
    target = os.environ if environ is None else environ
    added = prefect_settings(target)
    target.update(added)
    return added


def uses_ephemeral_server(environ: MutableMapping[str, str] | None = None) -> bool:
    """True when runs go to Prefect's local ephemeral server rather than PREFECT_API_URL."""
    return not (os.environ if environ is None else environ).get("PREFECT_API_URL")

"""Shared e2e fixtures: a real `prefect server start` (SQLite in a temp folder) and CLI subprocess helpers."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.server import PrefectServer

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> Iterator[PrefectServer]:
    """One Prefect server per session on a free port (healthy in 8-25 s)."""
    with PrefectServer(tmp_path_factory.mktemp("prefect-server")) as server:
        yield server


def cli_env(extra: dict[str, str], prefect_home: Path) -> dict[str, str]:
    """A clean environment for the CLI: no inherited Neptune/Prefect settings, no W&B service of this process (the CLI
    starts its own), the repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEPTUNE_", "PREFECT_")) and k != "WANDB_SERVICE"}
    env.update({"PYTHONPATH": str(REPO_ROOT), "PREFECT_HOME": str(prefect_home), "PYTHONWARNINGS": "ignore"})
    env.update(extra)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "neptune_exporter.cli", *args]


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    """Run `neptune-exporter ARGS` to completion, output captured as text."""
    return subprocess.run(cli_command(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def flow_runs(prefect_home: Path) -> list[tuple[str, str, str]]:
    """(flow name, state name, state message) of every flow run the local servers recorded under `prefect_home`."""
    with sqlite3.connect(prefect_home / "prefect.db") as db:
        return db.execute(
            "SELECT flow.name, flow_run.state_name, flow_run_state.message FROM flow_run"
            " JOIN flow ON flow.id = flow_run.flow_id JOIN flow_run_state ON flow_run_state.id = flow_run.state_id"
        ).fetchall()

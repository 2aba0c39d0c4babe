"""Start and stop a local `prefect server start` (SQLite under a PREFECT_HOME folder, or PostgreSQL) and serve the
deployments."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from neptune_exporter.prefect_env import ANALYTICS_OFF

HEALTH_TIMEOUT_SECONDS = 180.0
# Credentials only the processes running flows need: never in the Prefect server's environment.
SECRETS = ("NEPTUNE_API_TOKEN", "WANDB_API_KEY")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a local Prefect server and its clients: own PREFECT_HOME (SQLite there), no analytics."""
    env = {**os.environ, **ANALYTICS_OFF, "PREFECT_HOME": str(home.resolve())}
    env.pop("PREFECT_API_URL", None)
    return {**env, **(extra or {})}


class PrefectServer:
    """`prefect server start` on 127.0.0.1 in a child process; `api_url` once healthy."""

    def __init__(
        self, home: Path, port: int = 0, log_path: Path | None = None, database_url: str | None = None
    ) -> None:
        """`database_url`: a `postgresql+asyncpg://...` URL for a PostgreSQL database (SQLite in `home` without)."""
        self.home, self.port = Path(home), port or free_port()
        self.log_path = log_path or self.home / "server.log"
        self.database_url = database_url
        self.process: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def client_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for processes talking to this server."""
        return {**server_env(self.home, extra), "PREFECT_API_URL": self.api_url}

    def process_env(self) -> dict[str, str]:
        """The server process's environment: its API and UI on this port (the UI asks this API), no SECRETS."""
        env = server_env(
            self.home,
            {
                "PREFECT_SERVER_API_HOST": "127.0.0.1",
                "PREFECT_SERVER_API_PORT": str(self.port),
                "PREFECT_SERVER_UI_API_URL": self.api_url,
                "PREFECT_UI_API_URL": self.api_url,
                **({"PREFECT_SERVER_DATABASE_CONNECTION_URL": self.database_url} if self.database_url else {}),
            },
        )
        return {name: value for name, value in env.items() if name not in SECRETS}

    def start(self) -> PrefectServer:
        self.home.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--analytics-off",
            "--no-background",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, env=self.process_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT_SECONDS) -> None:
        """Poll /api/health until it answers; RuntimeError naming the log when the server dies or never answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"prefect server exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.api_url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"prefect server did not answer within {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_process(process: subprocess.Popen | None, grace_seconds: float = 10.0) -> None:
    """Stop the child's process group: SIGINT (a clean Python exit), then SIGTERM, then SIGKILL."""
    if process is None:
        return
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signum)
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def serve_deployments(env: dict[str, str], log_path: Path | None = None) -> subprocess.Popen:
    """`python -m deployments.serve` in a child process (its own session) against the server in `env`.

    It runs in the caller's working directory, never the package's: entrypoints name modules (importable from the
    installed package or the checkout on PYTHONPATH), and flow runs refuse relative paths naming this directory."""
    root = Path(__file__).resolve().parent.parent
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))}
    output = open(log_path, "ab") if log_path else None
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "deployments.serve"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,
        )
    finally:
        if output:
            output.close()

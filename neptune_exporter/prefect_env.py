"""Prefect settings for CLI runs, applied as environment variables before Prefect is first imported."""

from __future__ import annotations

import atexit
import importlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import MutableMapping
from pathlib import Path

from neptune_exporter.errors import OutputPathError

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
    """Set the missing Prefect variables (and, for this process, skip slow unused imports); before `prefect` is
    imported. Returns what was set."""
    target = os.environ if environ is None else environ
    added = prefect_settings(target)
    target.update(added)
    if environ is None:
        skip_slow_unused_imports()
    return added


# Optional modules that get imported with Prefect although nothing of ours uses them. rfc3987_syntax (installed
# with jsonschema[format-nongpl], which bravado-core of the `neptune` 2.x client requires) builds Lark parsers for
# every IRI grammar rule when imported: ~1.8 s of CPU in each process that imports Prefect, ~5 s of the local
# server's start. Without it jsonschema only stops checking the "iri" / "iri-reference" formats.
SLOW_UNUSED_IMPORTS = ("rfc3987_syntax",)


def skip_slow_unused_imports() -> list[str]:
    """Make SLOW_UNUSED_IMPORTS unimportable in this process (the import system's `sys.modules[name] = None`),
    unless already imported; the names skipped."""
    skipped = [name for name in SLOW_UNUSED_IMPORTS if name not in sys.modules]
    for name in skipped:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` now raises ImportError at once
    return skipped


def prefect_home(environ: MutableMapping[str, str] | None = None) -> Path:
    """Where Prefect keeps its database (local server), task results and profiles: PREFECT_HOME, else ~/.prefect."""
    value = (os.environ if environ is None else environ).get("PREFECT_HOME") or "~/.prefect"
    return Path(value).expanduser()


def check_prefect_home(environ: MutableMapping[str, str] | None = None) -> Path:
    """PREFECT_HOME, created if missing (its parent must exist) and proven writable; OutputPathError otherwise (before
    any Prefect process starts, instead of the local server's database error)."""
    home = prefect_home(environ)
    probe = home / f".neptune-exporter-write-test-{os.getpid()}"
    try:
        home.mkdir(exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OutputPathError(
            f"the Prefect home {home} cannot be used: {error.strerror or error}",
            "set PREFECT_HOME to a folder you can write to (Prefect keeps its database and task results there), "
            "or HOME to your home folder",
        ) from None
    return home


def uses_ephemeral_server(environ: MutableMapping[str, str] | None = None) -> bool:
    """True when runs go to Prefect's local ephemeral server rather than PREFECT_API_URL."""
    return not (os.environ if environ is None else environ).get("PREFECT_API_URL")


# ----------------------------------------------------------------------------- local server started early

# What Prefect's own ephemeral mode serves (prefect.server.api.server.SubprocessASGIServer, 3.9.1), started here
# without importing prefect.server in this process (that import alone costs several seconds).
LOCAL_SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
# Services a server that lives as long as one CLI command has no use for (the environment may turn them back on):
# automations (triggers, actions) and the event store (events stay off the database; flow and task runs, their
# states and artifacts are still recorded). They cost ~30 ms of server CPU per task run on the 2 cores the export
# needs (200 small runs: server CPU 21.2 / 16.8 s → 13.4 / 11.8 s).
LOCAL_SERVER_DEFAULTS = {
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_ACTIONS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
}
PREFECT_API_APP = "prefect.server.api.server:create_app"
HEALTH_POLL_SECONDS = 0.1
STOP_TIMEOUT_SECONDS = 5.0
EXIT_WAIT_SECONDS = 1.0  # at exit: a command stopped by Ctrl-C says its line and ends within seconds
PARENT_POLL_SECONDS = 0.25


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_server_env(environ: MutableMapping[str, str]) -> dict[str, str]:
    """The local server's environment: LOCAL_SERVER_DEFAULTS unless `environ` sets them, then LOCAL_SERVER_ENV."""
    return {**LOCAL_SERVER_DEFAULTS, **environ, **LOCAL_SERVER_ENV}


def server_command(port: int) -> list[str]:
    """A child Python serving Prefect's API app on 127.0.0.1:port for as long as this process lives (`serve_api`)."""
    return [sys.executable, "-m", __name__, str(port), str(os.getpid())]


def serve_api(port: int, parent_pid: int) -> None:
    """Serve Prefect's API app with uvicorn on 127.0.0.1:port, as Prefect's ephemeral mode does, minus the slow
    unused imports; returns when the server stops (SIGTERM / SIGINT, or `parent_pid` ending)."""
    die_with_parent(parent_pid)
    skip_slow_unused_imports()
    import uvicorn

    uvicorn.run(PREFECT_API_APP, factory=True, host="127.0.0.1", port=port, log_level="error", lifespan="on")


def die_with_parent(parent_pid: int) -> None:
    """End this process soon after `parent_pid` ends, however it ends (SIGKILL included): a daemon thread sees the
    parent change (the command's process is gone), sends SIGTERM (a clean server stop) and exits for good after
    STOP_TIMEOUT_SECONDS. A process-level check on every platform (Linux's PR_SET_PDEATHSIG follows the *thread*
    that started the child, which is not the command's lifetime in general)."""
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watch", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_TIMEOUT_SECONDS)
    os._exit(1)


class LocalServer:
    """Prefect's ephemeral API server, started at once in a subprocess; it stops when this process exits, and on its
    own when this process is killed (`die_with_parent`)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.process = subprocess.Popen(
            server_command(self.port),
            env=local_server_env(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            process_group=0,  # its own group: a terminal's Ctrl-C reaches the command, which stops it after reporting
        )
        atexit.register(self.stop, EXIT_WAIT_SECONDS, False)

    def wait_ready(self, timeout_s: float = EPHEMERAL_STARTUP_TIMEOUT_SECONDS) -> None:
        """Block until `/health` answers 200; RuntimeError with the server's stderr when it exits or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(
                    f"the local Prefect server exited with code {self.process.returncode}: {stderr[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(HEALTH_POLL_SECONDS)
        self.stop()
        raise RuntimeError(
            f"the local Prefect server did not answer within {timeout_s:g} s; "
            "set PREFECT_API_URL to a running server (`prefect server start`)"
        )

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS, kill: bool = True) -> None:
        """Terminate the server and wait up to `timeout` for it, then kill it; with `kill=False` leave it to end by
        itself (`die_with_parent`: this process is exiting). Safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                if not kill:
                    return
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()


class Warmup:
    """Prefect made ready while the CLI does other work: the local server starting, the flow module importing."""

    def __init__(self, modules: tuple[str, ...]) -> None:
        configure_prefect()
        early = uses_ephemeral_server() and "prefect" not in sys.modules  # later, Prefect's settings are fixed
        self.server = LocalServer() if early else None
        if self.server is not None:  # every Prefect client of this process talks to it, as in ephemeral mode
            os.environ["PREFECT_API_URL"] = self.server.api_url
        self._imports: list[threading.Thread] = []
        self.import_in_background(*modules)

    def import_in_background(self, *modules: str) -> None:
        """Import `modules` on a thread of their own (`wait_ready` waits for them)."""
        if modules:
            thread = threading.Thread(target=import_all, args=(modules,), name="prefect-warmup", daemon=True)
            thread.start()
            self._imports.append(thread)

    def wait_ready(self) -> None:
        """Block until the modules are imported and the server answers."""
        for thread in self._imports:
            thread.join()
        if self.server is not None:
            self.server.wait_ready()


def import_all(modules: tuple[str, ...]) -> None:
    """Import the modules (errors surface again, with their traceback, at the caller's own import)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            return


_warmup: Warmup | None = None


def warm_up(*modules: str) -> Warmup:
    """Start the local Prefect server (when no PREFECT_API_URL) and import `modules` in the background; idempotent."""
    global _warmup
    if _warmup is None:
        _warmup = Warmup(modules)
    return _warmup


def wait_until_ready() -> None:
    """Wait for what `warm_up` started; nothing to do when it was not called (Prefect starts its own server)."""
    if _warmup is not None:
        _warmup.wait_ready()


def runs_on_local_server() -> bool:
    """True when this process started the Prefect server its flows report to (it stops when the process ends)."""
    return _warmup is not None and _warmup.server is not None


if __name__ == "__main__":  # `python -m neptune_exporter.prefect_env PORT`: the local server's process
    serve_api(int(sys.argv[1]), int(sys.argv[2]))

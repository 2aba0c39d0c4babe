"""The local Prefect server the CLI starts early: it answers /health, and stops with no process left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

from neptune_exporter.prefect_env import LocalServer, server_command
from tests.processes import sigkill_alone, wait_all_gone


def test_server_command_runs_this_modules_server_entry_on_the_port():
    assert server_command(4321) == [sys.executable, "-m", "neptune_exporter.prefect_env", "4321", str(os.getpid())]


def test_configure_prefect_skips_rfc3987_syntax_and_prefect_still_imports_and_validates():
    code = (
        "import sys\n"
        "from neptune_exporter.prefect_env import configure_prefect\n"
        "configure_prefect()\n"
        "import prefect, jsonschema\n"
        "from prefect.flows import flow\n"
        "try:\n"
        "    import rfc3987_syntax\n"
        "except ImportError:\n"
        "    print('skipped')\n"
        "checker = jsonschema.FormatChecker()\n"
        "jsonschema.validate({'a': 2}, {'properties': {'a': {'type': 'integer'}}}, format_checker=checker)\n"
        "try:\n"
        "    jsonschema.validate({'a': 'x'}, {'properties': {'a': {'type': 'integer'}}}, format_checker=checker)\n"
        "except jsonschema.ValidationError:\n"
        "    print('still validates')\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["skipped", "still", "validates"]


def test_local_server_answers_health_then_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    server = LocalServer()
    try:
        server.wait_ready()
        with urllib.request.urlopen(f"{server.api_url}/health", timeout=5) as response:
            assert response.status == 200 and json.loads(response.read()) is True
    finally:
        server.stop()
    assert server.process.returncode is not None
    server.stop()  # a second stop is harmless


COMMAND = (
    "import time\n"
    "from neptune_exporter.prefect_env import LocalServer\n"
    "server = LocalServer()\n"
    "server.wait_ready()\n"
    "print(server.process.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def test_the_local_server_ends_when_its_command_is_killed(tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path)}
    command = subprocess.Popen([sys.executable, "-c", COMMAND], env=env, stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(command.stdout.readline())
        below = sigkill_alone(command.pid)  # `kill -9` of the command alone: nothing stops the server for it
    finally:
        command.kill()
        command.wait()
    assert "neptune_exporter.prefect_env" in below[server_pid]
    assert wait_all_gone(below) == {}

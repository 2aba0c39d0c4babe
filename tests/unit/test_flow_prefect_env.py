"""The local Prefect server the CLI starts early: it answers /health, and stops with no process left behind."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

from neptune_exporter.prefect_env import LocalServer, server_command


def test_server_command_runs_this_modules_server_entry_on_the_port():
    assert server_command(4321) == [sys.executable, "-m", "neptune_exporter.prefect_env", "4321"]


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

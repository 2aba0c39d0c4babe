"""The local Prefect server the CLI starts early: it answers /health, and stops with no process left behind."""

from __future__ import annotations

import json
import urllib.request

from neptune_exporter.prefect_env import LocalServer, server_command


def test_server_command_serves_prefects_api_app_on_localhost():
    command = server_command(4321)
    assert command[1:3] == ["-m", "uvicorn"]
    assert "prefect.server.api.server:create_app" in command
    assert command[command.index("--host") + 1] == "127.0.0.1" and command[command.index("--port") + 1] == "4321"


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

"""FakeWandb: GraphQL + file_stream + upload endpoints on 127.0.0.1, recording every run, row, file and artifact."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from neptune_exporter.fake_wandb import graphql

API_KEY = "local-" + "0" * 40  # a W&B Server-style key (wandb wants 40 characters after the prefix)


@dataclass
class FakeRun:
    """What arrived for one run."""

    entity: str
    project: str
    name: str  # the W&B run id
    display_name: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: dict[int, dict] = field(default_factory=dict)  # line offset → row (rewrites replace, never duplicate)
    files: dict[str, str] = field(default_factory=dict)  # run file name → base64 md5 of the uploaded bytes
    exit_code: int | None = None
    fork_from: str | None = None

    def rows(self) -> list[dict]:
        """History rows in line order."""
        return [self.history[i] for i in sorted(self.history)]


@dataclass
class FakeArtifact:
    """A logged artifact: its manifest entries and uploaded bytes."""

    id: str
    name: str
    type: str
    run: str
    digest: str = ""
    state: str = "PENDING"
    metadata: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    uploaded: dict[str, str] = field(default_factory=dict)  # entry name → base64 md5 of bytes received
    entity: str = ""
    project: str = ""
    manifest_url: str = ""


class State:
    """Everything the fake holds, guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: dict[tuple[str, str, str], FakeRun] = {}
        self.artifacts: dict[str, FakeArtifact] = {}
        self.uploads: dict[str, bytes] = {}
        self.operations: list[str] = []
        self.requests: list[tuple[str, dict]] = []  # (operation, variables) in arrival order
        self.unknown: list[tuple[str, str, dict]] = []  # operations answered with empty data
        self.base_url = ""

    def run(self, entity: str, project: str, name: str) -> FakeRun:
        key = (entity, project, name)
        if key not in self.runs:
            self.runs[key] = FakeRun(entity, project, name)
        return self.runs[key]

    def find_run(self, name: str, project: str | None = None) -> FakeRun | None:
        for (_entity, run_project, run_name), run in self.runs.items():
            if run_name == name and project in (None, run_project):
                return run
        return None


def md5_base64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode("ascii")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State

    def log_message(self, *args) -> None:  # quiet
        return

    def _body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        return gzip.decompress(body) if self.headers.get("content-encoding") == "gzip" else body

    def _reply(self, payload: Any, status: int = 200) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up on this request

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        with self.state.lock:
            data = self.state.uploads.get(path)
        if data is None:
            return self._reply({"error": "not found"}, 404)
        self.send_response(200)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:
        body, path = self._body(), self.path.split("?")[0]
        with self.state.lock:
            self.state.uploads[path] = body
            graphql.record_upload(self.state, path, body)
        self._reply({})

    def do_POST(self) -> None:
        body = self._body()
        path = self.path.split("?")[0]
        stream = re.fullmatch(r"/files/([^/]+)/([^/]+)/([^/]+)/file_stream", path)
        with self.state.lock:
            if stream:
                entity, project, name = stream.groups()
                return self._reply(graphql.file_stream(self.state, entity, project, name, json.loads(body or b"{}")))
            if path.startswith("/graphql"):
                request = json.loads(body or b"{}")
                return self._reply(graphql.answer(self.state, request.get("query", ""), request.get("variables") or {}))
            if path.startswith("/upload/"):
                self.state.uploads[path] = body
                graphql.record_upload(self.state, path, body)
                return self._reply({})
        self._reply({"error": f"no route {path}"}, 404)


class _QuietServer(ThreadingHTTPServer):
    """Clients hanging up mid-request are normal here: no traceback for them."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None


class FakeWandb:
    """Thread server on 127.0.0.1 (port 0 = free port). Use as a context manager."""

    def __init__(self, port: int = 0):
        self.state = State()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = _QuietServer(("127.0.0.1", port), handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.state.base_url = self.base_url
        self.api_key = API_KEY
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-wandb", daemon=True)

    def __enter__(self) -> FakeWandb:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def env(self) -> dict[str, str]:
        """Environment for wandb (online mode against this fake)."""
        return {"WANDB_BASE_URL": self.base_url, "WANDB_API_KEY": self.api_key, "WANDB_MODE": "online"}

    @property
    def runs(self) -> dict[tuple[str, str, str], FakeRun]:
        return self.state.runs

    @property
    def artifacts(self) -> dict[str, FakeArtifact]:
        return self.state.artifacts

    @property
    def operations(self) -> list[str]:
        return self.state.operations

    def summary(self) -> dict:
        """What arrived, JSON-friendly: per run rows/config/summary keys/files, per artifact files."""
        with self.state.lock:
            runs = [
                {
                    "path": "/".join(key),
                    "name": run.display_name,
                    "group": run.group,
                    "tags": run.tags,
                    "rows": len(run.history),
                    "config_keys": len(run.config),
                    "summary_keys": len(run.summary),
                    "files": sorted(run.files),
                    "exit_code": run.exit_code,
                }
                for key, run in sorted(self.state.runs.items())
            ]
            artifacts = [
                {"name": a.name, "type": a.type, "run": a.run, "state": a.state, "files": sorted(a.uploaded)}
                for a in self.state.artifacts.values()
            ]
        return {"base_url": self.base_url, "runs": runs, "artifacts": artifacts}

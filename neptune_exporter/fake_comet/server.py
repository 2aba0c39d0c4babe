"""FakeComet: the REST endpoints `comet upload` (comet_ml's OfflineSender) calls, on 127.0.0.1, recording per
experiment key what arrived: project, workspace, name, tags, parameters, others, metric points and asset bytes."""

from __future__ import annotations

import gzip
import json
import threading
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_KEY = "fake" + "0" * 28


@dataclass
class FakeExperiment:
    """What arrived for one experiment key."""

    key: str
    project: str | None = None
    workspace: str | None = None
    tags: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    others: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)  # {"name", "value", "step", "timestamp"}
    assets: list[dict] = field(default_factory=list)  # {"file_name", "type", "step", "metadata", "data"}
    times: dict[str, Any] = field(default_factory=dict)


class State:
    """Everything the fake holds, guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.experiments: dict[str, FakeExperiment] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self.unknown: list[tuple[str, str]] = []  # routes answered with an empty JSON object
        self.deleted: list[str] = []  # experiment keys deleted through the REST API

    def experiment(self, key: str) -> FakeExperiment:
        if key not in self.experiments:
            self.experiments[key] = FakeExperiment(key)
        return self.experiments[key]


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"{}")
    except ValueError:
        return {}


def _multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """Form fields of a multipart/form-data body: name → bytes."""
    message = BytesParser(policy=HTTP).parsebytes(f"content-type: {content_type}\r\n\r\n".encode() + body)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        fields[str(name)] = data if isinstance(data, bytes) else b""
    return fields


def _experiment_key(payload: Any, query: dict[str, str]) -> str:
    if isinstance(payload, dict) and payload.get("experimentKey"):
        return str(payload["experimentKey"])
    return query.get("experimentKey") or query.get("experimentId") or ""


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
            self.close_connection = True

    def _route(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        body = self._body() if method == "POST" else b""
        content_type = self.headers.get("content-type") or ""
        with self.state.lock:
            self.state.requests.append((method, path))
            if "multipart/form-data" in content_type:
                return self._reply(self._upload(path, query, _multipart(content_type, body)))
            if "x-www-form-urlencoded" in content_type:
                payload = {k: v[-1] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
            else:
                payload = _json(body)
            answer = self._answer(path, query, payload)
            if answer is None:
                answer = self._read(path, query)
            if answer is None:
                self.state.unknown.append((method, path))
                answer = {}
        if isinstance(answer, tuple):  # (status, payload)
            return self._reply(answer[1], answer[0])
        self._reply(answer)

    def _read(self, path: str, query: dict[str, str]) -> Any:
        """The REST API reads the online loader makes (`comet_ml.API`): metadata, others; and deleting."""
        experiment = self.state.experiments.get(query.get("experimentKey", ""))
        if path.endswith("/api/rest/v2/experiment/metadata"):
            if experiment is None:
                return 404, {"msg": "Experiment not found", "code": 404}
            return {
                "experimentKey": experiment.key,
                "workspaceName": experiment.workspace or "fake-workspace",
                "projectName": experiment.project,
                "projectId": "fake-project",
                "archived": False,
                "running": False,
            }
        if path.endswith("/api/rest/v2/experiment/log-other"):
            values = [] if experiment is None else experiment.others.items()
            return {"values": [{"name": k, "valueCurrent": None if v is None else str(v)} for k, v in values]}
        if path.endswith("/api/rest/v2/write/experiment/delete"):
            self.state.experiments.pop(query.get("experimentKey", ""), None)
            self.state.deleted.append(query.get("experimentKey", ""))
            return {}
        return None

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _answer(self, path: str, query: dict[str, str], payload: Any) -> Any:
        key = _experiment_key(payload, query)
        if path.endswith("/logger/add/run"):
            experiment = self.state.experiment(key)
            experiment.project, experiment.workspace = payload.get("projectName"), payload.get("teamName")
            return {"runId": uuid.uuid4().hex, "project_id": uuid.uuid4().hex, "lastOffset": 0, "featureToggles": []}
        if path.endswith("/tags/add-tags-to-experiment"):
            self.state.experiment(key).tags.extend(payload.get("addedTags") or [])
            return {}
        if path.endswith("/batch/logger/experiment/metric"):
            experiment = self.state.experiment(key)
            for value in payload.get("values") or []:
                experiment.metrics.append(
                    {
                        "name": value.get("metricName"),
                        "value": value.get("metricValue"),
                        "step": value.get("step"),
                        "timestamp": value.get("timestamp"),
                    }
                )
            return {}
        if path.endswith("/batch/logger/experiment/parameter"):
            experiment = self.state.experiment(key)
            for value in payload.get("values") or []:
                if value.get("source") != "auto-logged":
                    experiment.params[value["parameterName"]] = value.get("parameterValue")
            return {}
        if path.endswith("/write/experiment/log-other"):
            self.state.experiment(key).others[payload["key"]] = payload.get("value")
            return {}
        if path.endswith("/status-report/update"):
            return {
                "is_alive_beat_duration_millis": 60_000,
                "gpu_monitor_interval_millis": 60_000,
                "cpu_monitor_interval_millis": 60_000,
                "parameter_update_interval_millis": 60_000,
                "pending_rpcs": False,
            }
        if path.endswith("/status-report/offline-metadata"):
            self.state.experiment(key).times = {k: payload.get(k) for k in ("startTimestamp", "endTimestamp")}
            return {}
        return None

    def _upload(self, path: str, query: dict[str, str], fields: dict[str, bytes]) -> Any:
        experiment = self.state.experiment(_experiment_key({}, query))
        metadata = _json(fields.get("metadata") or b"{}")
        step = query.get("step")
        experiment.assets.append(
            {
                "file_name": query.get("fileName"),
                "type": query.get("type") or path.rsplit("/", 2)[-2],
                "step": None if step in (None, "", "None") else int(step),
                "metadata": metadata,
                "data": fields.get("file", b""),
            }
        )
        return {}


class _QuietServer(ThreadingHTTPServer):
    """Clients hanging up mid-request are normal here: no traceback for them."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None


class FakeComet:
    """Thread server on 127.0.0.1 (port 0 = a free port). Use as a context manager."""

    def __init__(self, port: int = 0):
        self.state = State()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = _QuietServer(("127.0.0.1", port), handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.api_key = API_KEY
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-comet", daemon=True)

    def __enter__(self) -> FakeComet:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def env(self) -> dict[str, str]:
        """Environment for `comet upload` against this fake."""
        return {"COMET_URL_OVERRIDE": f"{self.base_url}/clientlib/", "COMET_API_KEY": self.api_key}

    @property
    def experiments(self) -> dict[str, FakeExperiment]:
        return self.state.experiments

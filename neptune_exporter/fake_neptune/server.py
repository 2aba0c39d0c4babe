"""HTTP core of the fake Neptune server: router, request/response, auth check, faults, request log, FakeNeptune.

Adding routes: write a module with `register(router)` and, inside it,

    @router.route("POST", r"/api/leaderboard/v1/some/path", endpoint="v3.something")
    def handler(ctx: ServerContext, request: Request, match: re.Match) -> Response:
        body = request.json()                       # or request.query["x"], request.header("X"), request.form()
        project = ctx.project(request.query.get("projectIdentifier"))   # 404 ACCESS_DENIED when unknown
        request.note_run(run.sys_id)               # counts in the request log "per run"
        return Response.json({...})                 # Response.proto(bytes), Response(200, iterator, length=n)

Patterns are full-match regexes on the URL path (no query string); named groups land in `match`.
Routes need a valid `Authorization: Bearer <jwt>` unless `auth=False`. Raise `HttpError(status, msg)`
anywhere in a handler to answer an error. `build_router()` registers `auth`, `api_v3` and, when the
module exists, `api_v2`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from neptune_exporter.fake_neptune import store
from neptune_exporter.fake_neptune.auth import AuthService
from neptune_exporter.fake_neptune.faults import FaultConfig, FaultInjector, throttled_write

API_MODULES = (
    "neptune_exporter.fake_neptune.auth",
    "neptune_exporter.fake_neptune.api_v3",
    "neptune_exporter.fake_neptune.api_v2",
)
JSON = "application/json"
PROTOBUF = "application/x-protobuf"


class HttpError(Exception):
    """Raise in a handler to answer `status` with a JSON error body (extra keys merged in)."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


@dataclass
class Request:
    """One parsed HTTP request."""

    method: str
    path: str
    query: dict[str, str]
    query_all: dict[str, list[str]]
    headers: Any  # email.message.Message (case-insensitive .get)
    body: bytes
    runs: set[str] = field(default_factory=set)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise HttpError(400, f"request body is not valid JSON: {exc}") from exc

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True).items()}

    def note_run(self, run_key: str) -> None:
        """Record that this request read data of run `run_key` (a sys id like "PROJ-1")."""
        self.runs.add(run_key)


@dataclass
class Response:
    """A response: bytes, or an iterator of byte chunks (with `length` for Content-Length, else chunked)."""

    status: int = 200
    body: bytes | Iterable[bytes] = b""
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    length: int | None = None

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return cls(status, json.dumps(payload, allow_nan=False).encode(), JSON, headers or {})

    @classmethod
    def proto(cls, data: bytes) -> Response:
        return cls(200, data, PROTOBUF)

    @classmethod
    def error(cls, status: int, message: str, **extra: Any) -> Response:
        payload = {"code": status, "message": message, "title": message, **extra}
        return cls(status, json.dumps(payload).encode(), JSON)


@dataclass(frozen=True)
class RequestRecord:
    """One served request; `reset` when the connection was cut mid-body, `at` = time.monotonic() at the end."""

    endpoint: str
    method: str
    path: str
    status: int
    runs: frozenset[str]
    bytes_sent: int
    reset: bool = False
    retry_after: str | None = None
    at: float = 0.0
    duration_s: float = 0.0  # from reading the request to having the response ready (excludes writing)


class RequestLog:
    """Thread-safe log of served requests: counts per endpoint and per run."""

    def __init__(self) -> None:
        self._records: list[RequestRecord] = []
        self._write_s: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def add_write_time(self, endpoint: str, seconds: float) -> None:
        with self._lock:
            self._write_s[endpoint] += seconds

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def count(self, endpoint: str | None = None, run: str | None = None, status: int | None = None) -> int:
        """Requests to `endpoint` (exact name, or prefix ending with '.') that read `run` (sys id)."""
        return sum(1 for r in self.records() if _matches(r, endpoint, run, status))

    def by_endpoint(self) -> dict[str, int]:
        return dict(Counter(r.endpoint for r in self.records()))

    def by_run(self) -> dict[str, int]:
        return dict(Counter(run for r in self.records() for run in r.runs))

    def runs_fetched(self) -> set[str]:
        """Sys ids of runs whose data (attributes, series, files) any request read."""
        return {run for r in self.records() for run in r.runs}

    def bytes_sent(self) -> int:
        return sum(r.bytes_sent for r in self.records())

    def summary(self) -> dict[str, Any]:
        """JSON-friendly totals: requests, busy seconds (handling + writing) and bytes per endpoint; per run."""
        records = self.records()
        with self._lock:
            busy: dict[str, float] = defaultdict(float, self._write_s)
        sent: Counter[str] = Counter()
        for r in records:
            busy[r.endpoint] += r.duration_s
            sent[r.endpoint] += r.bytes_sent
        return {
            "by_endpoint": self.by_endpoint(),
            "by_run": self.by_run(),
            "busy_s": dict(busy),
            "bytes": dict(sent),
            "statuses": dict(Counter(str(r.status) for r in records)),
        }

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._write_s.clear()


def _matches(record: RequestRecord, endpoint: str | None, run: str | None, status: int | None) -> bool:
    if endpoint is not None:
        prefix_ok = endpoint.endswith(".") and record.endpoint.startswith(endpoint)
        if record.endpoint != endpoint and not prefix_ok:
            return False
    if run is not None and run not in record.runs:
        return False
    return status is None or record.status == status


Handler = Callable[["ServerContext", Request, "re.Match[str]"], Response]


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool
    endpoint: str


class Router:
    """Ordered list of routes; the first full match of (method, path) wins."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(
        self,
        method: str,
        path_regex: str,
        handler: Handler | None = None,
        *,
        auth: bool = True,
        endpoint: str | None = None,
    ):
        """Register `handler` (or decorate one) for `method` and a full-match path regex."""

        def add(func: Handler) -> Handler:
            name = endpoint or f"{func.__module__.rsplit('.', 1)[-1]}.{func.__name__}"
            self.routes.append(Route(method.upper(), re.compile(path_regex), func, auth, name))
            return func

        return add(handler) if handler is not None else add

    def resolve(self, method: str, path: str) -> tuple[Route, re.Match[str]] | None:
        for route in self.routes:
            if route.method == method:
                match = route.pattern.fullmatch(path)
                if match:
                    return route, match
        return None


def _register_introspection(router: Router) -> None:
    """`GET /_fake/requests`: the request log summary (for subprocess servers and benchmarks); no auth."""

    @router.route("GET", r"/_fake/requests", auth=False, endpoint="fake.requests")
    def request_summary(ctx: ServerContext, request: Request, match: re.Match[str]) -> Response:
        return Response.json(ctx.requests.summary())


def build_router(modules: Iterable[str] = API_MODULES) -> Router:
    """A router with every API module's routes; api_v2 is optional (skipped when absent)."""
    router = Router()
    _register_introspection(router)
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(router)
    return router


@dataclass
class ServerContext:
    """What handlers get besides the request: data, faults, log, auth, base URL."""

    workspace: store.Workspace
    faults: FaultConfig
    requests: RequestLog
    auth: AuthService
    base_url: str
    server_errors: list[str] = field(default_factory=list)

    def project(self, identifier: str | None) -> store.Project:
        """The project `ws/name` (or its uuid); 404 ACCESS_DENIED when unknown, like Neptune."""
        project = self.workspace.project(identifier or "")
        if project is None:
            project = next((p for p in self.workspace.projects.values() if p.uuid == identifier), None)
        if project is None:
            raise HttpError(404, f"project {identifier!r} not found or access denied", errorType="ACCESS_DENIED")
        return project


class _App:
    """Dispatches parsed requests through faults, auth and the router; writes responses."""

    def __init__(self, router: Router, ctx: ServerContext):
        self.router, self.ctx = router, ctx
        self.injector = FaultInjector(ctx.faults)

    def handle(self, h: _Handler) -> None:
        started = time.monotonic()
        split = urlsplit(h.path)
        query_all = parse_qs(split.query, keep_blank_values=True)
        request = Request(
            h.command, split.path, {k: v[-1] for k, v in query_all.items()}, query_all, h.headers, _read_body(h)
        )
        resolved = self.router.resolve(request.method, request.path)
        endpoint, reset = "unknown", False
        if resolved is None:
            response = Response.error(404, f"no route for {request.method} {request.path}")
        else:
            route, match = resolved
            endpoint = route.endpoint
            response, reset = self._run(route, match, request)
        # logged before the body goes out, so a client holding the response always finds it in the log
        self.ctx.requests.add(
            RequestRecord(
                endpoint,
                request.method,
                request.path,
                response.status,
                frozenset(request.runs),
                _planned_bytes(response, reset),
                reset,
                response.headers.get("Retry-After"),
                time.monotonic(),
                time.monotonic() - started,
            )
        )
        writing = time.monotonic()
        _write_response(h, response, reset, self.ctx.faults.bandwidth_bytes_per_s)
        self.ctx.requests.add_write_time(endpoint, time.monotonic() - writing)

    def _run(self, route: Route, match: re.Match[str], request: Request) -> tuple[Response, bool]:
        decision = self.injector.decide(route.endpoint, is_auth=not route.auth)
        if decision.delay_s:
            time.sleep(decision.delay_s)
        if decision.status == 429:
            limited = Response.error(429, "rate limited (injected fault)")
            limited.headers["Retry-After"] = str(self.ctx.faults.retry_after_s)
            return limited, False
        if decision.status is not None:
            return Response.error(decision.status, f"injected fault {decision.status}"), False
        if route.auth:
            reason = self.ctx.auth.check_bearer(request.header("Authorization"))
            if reason:
                return Response.error(401, f"unauthorized: {reason}"), False
        response = self._call(route, match, request)
        status = self.ctx.faults.run_fault(route.endpoint, request.runs)
        if status is not None:
            return Response.error(
                status, f"injected fault {status} for run(s) {', '.join(sorted(request.runs))}"
            ), False
        return response, decision.reset

    def _call(self, route: Route, match: re.Match[str], request: Request) -> Response:
        try:
            return route.handler(self.ctx, request, match)
        except HttpError as exc:
            return Response.error(exc.status, exc.message, **exc.extra)
        except Exception as exc:  # a bug in the fake: answer 500 and keep the trace for tests to show
            trace = traceback.format_exc()
            self.ctx.server_errors.append(trace)
            print(trace, file=sys.stderr)
            return Response.error(500, f"fake server bug: {exc!r}")


def _planned_bytes(response: Response, reset: bool) -> int:
    """Body bytes the response will carry (half of it when the connection is reset mid-body)."""
    body = response.body
    size = len(body) if isinstance(body, (bytes, bytearray, memoryview)) else (response.length or 0)
    return size // 2 if reset else size


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    if (h.headers.get("Transfer-Encoding") or "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(h.rfile.read(size))
            h.rfile.readline()
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length else b""


def _write_response(h: BaseHTTPRequestHandler, response: Response, reset: bool, bytes_per_s: int) -> int:
    """Send status, headers and body; `reset` aborts the connection half-way through the body."""
    body = response.body
    if isinstance(body, (bytes, bytearray, memoryview)) and (reset or response.length is None):
        body = bytes(body)
        length: int | None = len(body)
    else:
        length = response.length
    if reset and not isinstance(body, bytes):
        body = b"".join(body)
        length = len(body)
    h.send_response(response.status)
    h.send_header("Content-Type", response.content_type)
    for name, value in response.headers.items():
        h.send_header(name, value)
    h.send_header(
        "Content-Length" if length is not None else "Transfer-Encoding",
        str(length) if length is not None else "chunked",
    )
    h.end_headers()
    if h.command == "HEAD":
        return 0
    if isinstance(body, bytes) and reset:
        return _reset_midway(h, body)
    if isinstance(body, bytes):
        throttled_write(h.wfile.write, body, bytes_per_s)
        return len(body)
    return _write_chunks(h, body, chunked=length is None, bytes_per_s=bytes_per_s)


def _write_chunks(h: BaseHTTPRequestHandler, chunks: Iterable[bytes], chunked: bool, bytes_per_s: int) -> int:
    sent = 0
    for chunk in chunks:
        if not chunk:
            continue
        data = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
        throttled_write(h.wfile.write, data, bytes_per_s)
        sent += len(chunk)
    if chunked:
        h.wfile.write(b"0\r\n\r\n")
    return sent


def _reset_midway(h: BaseHTTPRequestHandler, body: bytes) -> int:
    half = body[: len(body) // 2]
    h.wfile.write(half)
    h.wfile.flush()
    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.close_connection = True
    h.connection.close()
    return len(half)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr access log
        return

    def _dispatch(self) -> None:
        try:
            self.server.app.handle(self)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Close idle keep-alive connections so their handler threads end with the server."""
        with self.connections_lock:
            connections = list(self.open_connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # the peer closed it already
                connection.shutdown(socket.SHUT_RDWR)

    app: _App


class FakeNeptune:
    """The fake server in a background thread: `with FakeNeptune(ws) as fake: fake.base_url ...`."""

    def __init__(
        self,
        workspace: store.Workspace,
        port: int = 0,
        faults: FaultConfig | None = None,
        host: str = "127.0.0.1",
        api_key: str | None = None,
    ):
        self.workspace = workspace
        self.faults = faults or FaultConfig()
        self.requests = RequestLog()
        self._server = _Server((host, port), _Handler)
        self.port = self._server.server_address[1]
        self.base_url = f"http://{host}:{self.port}"
        self.auth = AuthService(self.base_url, self.faults)
        if api_key:
            self.auth.api_key = api_key
        self.ctx = ServerContext(workspace, self.faults, self.requests, self.auth, self.base_url)
        self._server.app = _App(build_router(), self.ctx)
        self._thread: threading.Thread | None = None

    # ---- lifecycle
    def start(self) -> FakeNeptune:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"fake-neptune-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.drop_connections()
        self._server.server_close()

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (CLI)."""
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def __enter__(self) -> FakeNeptune:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what clients need
    @property
    def api_token(self) -> str:
        return self.auth.api_token()

    @property
    def server_errors(self) -> list[str]:
        """Tracebacks of handler bugs (answered 500); tests assert this stays empty."""
        return self.ctx.server_errors

    def default_project(self) -> str:
        return next(iter(self.workspace.projects), f"{self.workspace.name}/sandbox")

    def env(self, project: str | None = None) -> dict[str, str]:
        """Environment for the clients: token, project, http allowed for oauthlib."""
        return {
            "NEPTUNE_API_TOKEN": self.api_token,
            "NEPTUNE_PROJECT": project or self.default_project(),
            "OAUTHLIB_INSECURE_TRANSPORT": "1",
        }

    # ---- mutation while serving (incremental-export tests)
    def append_points(self, project_id: str, run_id: str, path: str, steps, values, timestamps_ms=None) -> None:
        from neptune_exporter.fake_neptune import datasets

        datasets.append_points(self.workspace, project_id, run_id, path, steps, values, timestamps_ms)

    def add_run(
        self,
        project_id: str,
        sys_id: str | None = None,
        custom_run_id: str | None = None,
        experiment: str | None = None,
        attributes: dict | None = None,
        **kwargs: Any,
    ) -> store.Run:
        from neptune_exporter.fake_neptune import datasets

        return datasets.add_run(
            self.workspace,
            project_id,
            sys_id=sys_id,
            custom_run_id=custom_run_id,
            experiment=experiment,
            attributes=attributes,
            **kwargs,
        )

    def set_attribute(self, project_id: str, run_id: str, path: str, type: str, value: Any) -> None:
        from neptune_exporter.fake_neptune import datasets

        datasets.set_attribute(self.workspace, project_id, run_id, path, type, value)

    def touch(self, project_id: str, run_id: str) -> None:
        from neptune_exporter.fake_neptune import datasets

        datasets.touch_run(self.workspace, project_id, run_id)


class FakeNeptuneProcess:
    """The fake server in a subprocess (`python -m neptune_exporter.fake_neptune.cli serve ...`), for CLI/SIGKILL tests.

    with FakeNeptuneProcess(["--generate", "--runs", "3"]) as proc: proc.base_url, proc.api_token, proc.env()
    """

    def __init__(self, serve_args: list[str], workdir: str | None = None, startup_timeout_s: float = 30.0):
        self.serve_args, self.workdir, self.startup_timeout_s = list(serve_args), workdir, startup_timeout_s
        self.process: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> FakeNeptuneProcess:
        folder = Path(tempfile.mkdtemp(prefix="fake-neptune-"))
        self._folder: Path | None = folder
        ready = folder / "ready.json"
        cmd = [
            sys.executable,
            "-m",
            "neptune_exporter.fake_neptune.cli",
            "serve",
            *self.serve_args,
            "--ready-file",
            str(ready),
        ]
        self._log = open(folder / "stdout.log", "w")
        self.process = subprocess.Popen(cmd, cwd=self.workdir, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout_s
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = (folder / "stdout.log").read_text()[-2000:]
                self.stop()
                raise RuntimeError(f"fake Neptune did not start: {output}")
            time.sleep(0.05)
        self.info = json.loads(ready.read_text())
        return self

    @property
    def base_url(self) -> str:
        return self.info["base_url"]

    @property
    def api_token(self) -> str:
        return self.info["api_token"]

    def env(self, project: str | None = None) -> dict[str, str]:
        return {
            "NEPTUNE_API_TOKEN": self.api_token,
            "NEPTUNE_PROJECT": project or self.info["project"],
            "OAUTHLIB_INSECURE_TRANSPORT": "1",
        }

    def request_summary(self) -> dict[str, Any]:
        """The server's request log summary (see RequestLog.summary)."""
        with urllib.request.urlopen(self.base_url + "/_fake/requests") as response:
            return json.load(response)

    def kill(self) -> None:
        """SIGKILL (the server cannot clean up), like a crashed server; our temp folder is still removed."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._remove_folder()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._remove_folder()

    def _remove_folder(self) -> None:
        """Close the log and delete the temp folder (ready file, log) once the process has ended."""
        if getattr(self, "_log", None) is not None:
            self._log.close()
        folder = getattr(self, "_folder", None)
        if folder is not None:
            if folder.exists():
                shutil.rmtree(folder)
            self._folder = None

    def __enter__(self) -> FakeNeptuneProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

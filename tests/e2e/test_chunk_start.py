"""A distributed command's chunk starts as exactly one flow run per attempt on a real Prefect server, even when the
server is slow: a proxy holds the server's answer to the first `create_flow_run` longer than the client waits, the
Prefect client sends the request again, and the server, which created the run the first time, answers with that run
(its idempotency key) instead of a second flow run loading the same runs at the same time (CI saw two MLflow copies of
one Neptune run from exactly this). A server that does not answer at all is one ChunkNotStartedError with its fix."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.deployments import run_deployment
from prefect.settings import (
    PREFECT_API_REQUEST_TIMEOUT,
    PREFECT_API_URL,
    PREFECT_CLIENT_MAX_RETRIES,
    temporary_settings,
)

from deployments.server import free_port
from flows.fan_out import create_chunk_run
from neptune_exporter.errors import ChunkNotStartedError
from neptune_exporter.retry import RetryPolicy

pytestmark = pytest.mark.e2e

CLIENT_TIMEOUT_S = 2.0
HELD_FOR_S = 5.0  # the first answer to create_flow_run arrives after the client gave up waiting for it


class SlowFirstAnswer:
    """An HTTP proxy to the Prefect API that holds back its answer to the first `create_flow_run` request (after the
    server handled it) for HELD_FOR_S; counts the create requests it forwarded."""

    def __init__(self, upstream: str):
        self.upstream, self.creates, self.lock = urlsplit(upstream), 0, threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                held = False
                if self.command == "POST" and self.path.endswith("/create_flow_run"):
                    with proxy.lock:
                        proxy.creates += 1
                        held = proxy.creates == 1
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request(self.command, self.path, body, headers)
                answer = upstream.getresponse()
                content = answer.read()
                upstream.close()
                if held:
                    time.sleep(HELD_FOR_S)
                try:
                    self.send_response(answer.status)
                    for key, value in answer.getheaders():
                        if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(content)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(content)
                except (BrokenPipeError, ConnectionResetError):  # the client stopped waiting: the answer is lost
                    return

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.upstream.path}"

    def __enter__(self) -> SlowFirstAnswer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def deployment(prefect_server) -> Iterator[tuple[str, UUID]]:
    """A deployment without a worker (its flow runs stay scheduled): its name and id."""
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}), get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("chunk-start-probe")
        deployment_id = client.create_deployment(flow_id=flow_id, name="probe")
    yield "chunk-start-probe/probe", deployment_id
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}), get_client(sync_client=True) as client:
        client.delete_deployment(deployment_id)


def runs_of(api_url: str, deployment_id: UUID, name: str) -> list:
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    return [run for run in runs if run.name == name]


def test_a_slow_server_answering_late_still_gets_one_flow_run_per_chunk_attempt(prefect_server, deployment):
    name, deployment_id = deployment
    slow = {PREFECT_API_REQUEST_TIMEOUT: CLIENT_TIMEOUT_S, PREFECT_CLIENT_MAX_RETRIES: 3}

    # the premise: without a key, the client's second request makes a second flow run
    with SlowFirstAnswer(prefect_server.api_url) as proxy, temporary_settings({**slow, PREFECT_API_URL: proxy.api_url}):
        run_deployment(name, parameters={}, flow_run_name="c0001 attempt 1: without a key", timeout=0)
    assert proxy.creates >= 2
    assert len(runs_of(prefect_server.api_url, deployment_id, "c0001 attempt 1: without a key")) == proxy.creates

    # with the chunk's key: the request sent again, one flow run, and it is the one the parent watches
    with SlowFirstAnswer(prefect_server.api_url) as proxy, temporary_settings({**slow, PREFECT_API_URL: proxy.api_url}):
        started = create_chunk_run(name, {}, "c0001 attempt 1: 2 run(s)", "load-mlflow/t0k3n/c0001/1", RetryPolicy())
    assert proxy.creates >= 2
    (created,) = runs_of(prefect_server.api_url, deployment_id, "c0001 attempt 1: 2 run(s)")
    assert created.id == started.id and created.idempotency_key == "load-mlflow/t0k3n/c0001/1"

    # the next attempt of the chunk is a new flow run
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        again = create_chunk_run(name, {}, "c0001 attempt 2: 2 run(s)", "load-mlflow/t0k3n/c0001/2", RetryPolicy())
    assert again.id != started.id


def test_a_prefect_server_that_does_not_answer_is_one_error_with_its_fix_after_the_policy(prefect_server, deployment):
    name, _ = deployment
    closed = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings({PREFECT_API_URL: closed, PREFECT_CLIENT_MAX_RETRIES: 0}):
        with pytest.raises(ChunkNotStartedError) as raised:
            create_chunk_run(name, {}, "c0002 attempt 1: 3 run(s)", "k", RetryPolicy(attempts=2, backoff_seconds=0))
    assert raised.value.message.startswith(
        "c0002 attempt 1: 3 run(s): the Prefect server did not answer creating its flow run ("
    )
    assert "check the Prefect server" in raised.value.remedy and "redoes only the runs not done" in raised.value.remedy

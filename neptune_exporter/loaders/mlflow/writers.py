"""Writing one MLflow run: metric points packed into batches and artifacts uploaded, a bounded number in flight."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from math import isfinite
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from neptune_exporter import interrupt
from neptune_exporter.loaders.mlflow.client import mlflow_errors, tracking_store
from neptune_exporter.loaders.mlflow.mapping import ArtifactItem, MetricChunk
from neptune_exporter.loaders.mlflow.pacing import AdaptiveLimit


class BoundedPool:
    """Threads with a bounded number of jobs in flight (memory stays bounded); close() raises the first failure."""

    def __init__(self, workers: int, name: str):
        self.workers = max(1, workers)
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=name)
        self.in_flight: set[Future] = set()

    def submit(self, job: Callable[..., None], *args: Any) -> None:
        if len(self.in_flight) >= 2 * self.workers:
            done, self.in_flight = wait(self.in_flight, return_when="FIRST_COMPLETED")
            for future in done:
                future.result()
        self.in_flight.add(self.pool.submit(job, *args))

    def close(self) -> None:
        try:
            for future in list(self.in_flight):
                future.result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


class ArtifactUploader:
    """Uploads artifacts in parallel."""

    def __init__(self, client: MlflowClient, run_id: str, workers: int):
        self.client, self.run_id = client, run_id
        self.jobs = BoundedPool(workers, "mlflow-artifacts")
        self.files = 0

    def submit(self, item: ArtifactItem) -> None:
        self.jobs.submit(self._upload, item)
        self.files += 1

    def _upload(self, item: ArtifactItem) -> None:
        with mlflow_errors(f"upload artifact {item.artifact_dir}/{item.local.name}"):
            if item.local.is_dir():
                self.client.log_artifacts(self.run_id, str(item.local), item.artifact_dir)
            else:
                self.client.log_artifact(self.run_id, str(item.local), item.artifact_dir)

    def close(self) -> None:
        self.jobs.close()


class MetricBatcher:
    """Packs metric points of any attributes into MLflow's per-request limit; as many requests in flight as the load's
    `pacing` allows. Ctrl-C stops it between two requests (`interrupt`): the run stays "loading", and the rerun redoes
    it."""

    def __init__(self, client: MlflowClient, run_id: str, limit: int, pacing: AdaptiveLimit, threads: int = 4):
        self.limit, self.pacing = limit, pacing
        self.send = batch_sender(client, run_id)
        self.jobs = BoundedPool(threads, "mlflow-metrics")
        self.pending: list[Point] = []
        self.points = 0

    def add(self, chunk: MetricChunk) -> None:
        keys = map(chunk.names.__getitem__, chunk.codes.tolist())
        self.pending += zip(keys, chunk.values.tolist(), chunk.timestamps.tolist(), chunk.steps.tolist(), strict=True)
        full = len(self.pending) - len(self.pending) % self.limit
        for start in range(0, full, self.limit):
            self._submit(self.pending[start : start + self.limit])
        del self.pending[:full]

    def flush(self) -> None:
        if self.pending:
            batch, self.pending = self.pending, []
            self._submit(batch)

    def _submit(self, batch: list[Point]) -> None:
        interrupt.raise_if_requested()
        self.jobs.submit(self._post, batch)
        self.points += len(batch)

    def _post(self, batch: list[Point]) -> None:
        with self.pacing.slot(len(batch)), mlflow_errors(f"log {len(batch)} metric points"):
            self.send(batch)

    def close(self) -> None:
        """Send what is pending and wait for every request."""
        try:
            self.flush()
        finally:
            self.jobs.close()


Point = tuple[str, float, int, int]  # key, value, timestamp (ms), step


def batch_sender(client: MlflowClient, run_id: str) -> Callable[[list[Point]], None]:
    """How one batch of points reaches the store: to a tracking server, the `log-batch` request's JSON written
    straight from the points (MLflow's client builds a protobuf message per point, then converts it to JSON: most of
    a load's client time); to any other store, `log_batch`."""
    from mlflow.protos.service_pb2 import LogBatch
    from mlflow.store.tracking.rest_store import RestStore

    store = tracking_store(client)
    if isinstance(store, RestStore):
        return lambda batch: store._call_endpoint(LogBatch, log_batch_json(run_id, batch))

    def log_batch(batch: list[Point]) -> None:
        client.log_batch(run_id, metrics=[Metric(*point) for point in batch], synchronous=True)

    return log_batch


def log_batch_json(run_id: str, batch: list[Point]) -> str:
    """The body MLflow's client sends for these points: the protobuf JSON of `LogBatch` (non-finite values as the
    strings "NaN", "Infinity", "-Infinity"; int64 fields as numbers, as MLflow sends them)."""
    metrics = [
        {"key": key, "value": value if isfinite(value) else nonfinite_text(value), "timestamp": stamp, "step": step}
        for key, value, stamp, step in batch
    ]
    return json.dumps({"run_id": run_id, "metrics": metrics}, allow_nan=False)


def nonfinite_text(value: float) -> str:
    if value != value:
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def chunks_of(mapping: dict[str, str], size: int) -> Iterator[dict[str, str]]:
    items = list(mapping.items())
    for start in range(0, len(items), size):
        yield dict(items[start : start + size])

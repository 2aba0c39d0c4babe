"""Writing one MLflow run: metric points packed into batches and artifacts uploaded, a bounded number in flight."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from neptune_exporter import interrupt
from neptune_exporter.loaders.mlflow.client import mlflow_errors
from neptune_exporter.loaders.mlflow.mapping import ArtifactItem, MetricChunk


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
    """Packs metric points of any attributes into MLflow's per-request limit; a few requests in flight. Ctrl-C stops
    it between two requests (`interrupt`): the run stays "loading", and the rerun redoes it."""

    def __init__(self, client: MlflowClient, run_id: str, limit: int, in_flight: int = 2):
        self.client, self.run_id, self.limit = client, run_id, limit
        self.jobs = BoundedPool(in_flight, "mlflow-metrics")
        self.pending: list[Metric] = []
        self.points = 0

    def add(self, chunk: MetricChunk) -> None:
        names = chunk.names
        rows = zip(
            chunk.codes.tolist(), chunk.values.tolist(), chunk.timestamps.tolist(), chunk.steps.tolist(), strict=True
        )
        for code, value, stamp, step in rows:
            self.pending.append(Metric(names[code], value, stamp, step))
            if len(self.pending) >= self.limit:
                self.flush()

    def flush(self) -> None:
        if self.pending:
            interrupt.raise_if_requested()
            self.jobs.submit(self._post, self.pending)
            self.points += len(self.pending)
            self.pending = []

    def _post(self, metrics: list[Metric]) -> None:
        with mlflow_errors(f"log {len(metrics)} metric points"):
            self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)

    def close(self) -> None:
        """Send what is pending and wait for every request."""
        try:
            self.flush()
        finally:
            self.jobs.close()


def chunks_of(mapping: dict[str, str], size: int) -> Iterator[dict[str, str]]:
    items = list(mapping.items())
    for start in range(0, len(items), size):
        yield dict(items[start : start + size])

"""A load's MLflow client for a sqlite:/// store: its calls take turns within the process (artifact copies excepted);
any other store's client is MLflow's own."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from mlflow.tracking import MlflowClient

from neptune_exporter.loaders.mlflow.client import OneWriterClient, sqlite_store_path, store_lock, tracking_client


class Recorder:
    """Stands for MlflowClient: records how many of its calls run at once."""

    def __init__(self) -> None:
        self.inside, self.most, self.guard = 0, 0, threading.Lock()

    def _enter(self) -> None:
        with self.guard:
            self.inside += 1
            self.most = max(self.most, self.inside)
        time.sleep(0.02)
        with self.guard:
            self.inside -= 1

    def log_batch(self, run_id: str) -> str:
        self._enter()
        return run_id

    def log_artifact(self, run_id: str) -> str:
        self._enter()
        return run_id


def test_calls_into_one_sqlite_store_take_turns_but_artifact_copies_do_not():
    recorder = Recorder()
    client = OneWriterClient(recorder, threading.Lock())  # type: ignore[arg-type]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(client.log_batch, [f"r{i}" for i in range(16)])) == [f"r{i}" for i in range(16)]
    assert recorder.most == 1
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(client.log_artifact, [f"r{i}" for i in range(16)]))
    assert recorder.most > 1


def test_one_lock_per_store_file_and_mlflows_own_client_elsewhere(tmp_path):
    store = tmp_path / "mlflow.db"
    assert sqlite_store_path(f"sqlite:///{store}?timeout=5") == str(store.resolve())
    assert sqlite_store_path("http://127.0.0.1:5000") is None
    assert store_lock(str(store)) is store_lock(sqlite_store_path(f"sqlite:///{tmp_path}/./mlflow.db") or "")
    assert isinstance(tracking_client(f"sqlite:///{store}"), OneWriterClient)
    assert type(tracking_client("http://127.0.0.1:5000")) is MlflowClient

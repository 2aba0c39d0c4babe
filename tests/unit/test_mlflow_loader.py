"""MlflowLoader decisions with the MLflow client faked at its boundary: failed lookups never create runs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

from neptune_exporter.errors import TargetError, TargetUnavailableError
from neptune_exporter.loaders.mlflow import MlflowLoader
from neptune_exporter.rows import parameter_rows
from tests.load_exports import write_export


class ClientSpy:
    """Records calls; lookups answer as configured."""

    def __init__(self, search_error: Exception | None = None, experiment=None):
        self.search_error, self.experiment, self.calls = search_error, experiment, []

    def get_experiment_by_name(self, name):
        self.calls.append(("get_experiment_by_name", name))
        return self.experiment

    def search_runs(self, *args, **kwargs):
        self.calls.append(("search_runs",))
        if self.search_error:
            raise self.search_error
        return []

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name,))
            return SimpleNamespace(info=SimpleNamespace(run_id="new"), data=SimpleNamespace(tags={}))

        return record


@pytest.fixture
def export_root(tmp_path):
    write_export(tmp_path / "data", tmp_path / "files", "ws/p", "r", [parameter_rows("ws/p", "r", [("p", "int", 1)])])
    return tmp_path


def loader_with(client: ClientSpy) -> MlflowLoader:
    loader = MlflowLoader("http://127.0.0.1:1")
    loader._client = client
    return loader


def test_failed_run_lookup_raises_and_creates_nothing(export_root):
    active = SimpleNamespace(experiment_id="1", lifecycle_stage="active")
    client = ClientSpy(search_error=MlflowException("boom", error_code=INTERNAL_ERROR), experiment=active)
    with pytest.raises(TargetUnavailableError, match="search runs of ws/p/r"):
        loader_with(client).load_run(export_root / "data", export_root / "files", "ws/p", "r")
    assert [c[0] for c in client.calls] == ["get_experiment_by_name", "search_runs"]


def test_refused_lookup_is_terminal_and_creates_nothing(export_root):
    active = SimpleNamespace(experiment_id="1", lifecycle_stage="active")
    client = ClientSpy(
        search_error=MlflowException("bad filter", error_code=INVALID_PARAMETER_VALUE), experiment=active
    )
    with pytest.raises(TargetError, match="MLflow refused to search runs"):
        loader_with(client).load_run(export_root / "data", export_root / "files", "ws/p", "r")
    assert "create_run" not in [c[0] for c in client.calls]


def test_deleted_experiment_is_one_clear_error(export_root):
    client = ClientSpy(experiment=SimpleNamespace(experiment_id="1", lifecycle_stage="deleted"))
    with pytest.raises(TargetError, match="exists but is deleted.*fix: restore it"):
        loader_with(client).load_run(export_root / "data", export_root / "files", "ws/p", "r")
    assert "create_run" not in [c[0] for c in client.calls]

"""The export flow with `include_models` (Neptune 2.x model registry) under Prefect, against the fake server."""

from __future__ import annotations

import pytest

from flows.export import export, flow_parameters
from neptune_exporter.export import ExportOptions
from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.storage.manifest import manifest_path, read_manifest
from tests.integration.test_export_neptune2_models import PROJECT, registry_workspace, rows, single_value

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fake():
    with FakeNeptune(registry_workspace(), port=0) as server:
        yield server


def test_export_flow_with_include_models(prefect_harness, fake, tmp_path, monkeypatch):
    """The CLI's path: flow parameters carry include_models; tasks export models and versions in their scopes."""
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    options = ExportOptions(
        source="neptune2",
        projects=(PROJECT,),
        data_path=str(tmp_path / "data"),
        files_path=str(tmp_path / "files"),
        include_models=True,
        workers=2,
    )
    assert flow_parameters(options)["selection"]["include_models"] is True
    summary = export(**flow_parameters(options))
    assert (summary["runs_complete"], summary["runs_failed"]) == (7, 0)
    for run_id, scope in (("PROJ-CLS", "models"), ("PROJ-CLS-3", "model_versions"), ("PROJ-1", None)):
        assert read_manifest(manifest_path(tmp_path / "data", PROJECT, run_id, scope)).is_complete()
    assert single_value(rows(tmp_path, "PROJ-CLS-3", "model_versions"), "sys/stage") == ("string", "production")
    again = export(**flow_parameters(options))
    assert (again["runs_skipped"], again["runs_complete"]) == (7, 0)

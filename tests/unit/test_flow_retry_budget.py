"""The attempt budget under Prefect (README, Settings): one layer of our retries per error, never a Prefect retry on top."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

from flows.export import export, flow_parameters
from neptune_exporter.export import ExportOptions
from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.fake_neptune.datasets import generate_workspace
from tasks import export as export_tasks
from tasks import load as load_tasks
from tasks.policy import retry_transient

PROJECT = "workspace/sandbox"


@pytest.fixture(scope="module")
def fake():
    with FakeNeptune(generate_workspace(runs=2, points=20, files=0)) as server:
        yield server


def task_runs_of(flow_run_id) -> dict[str, tuple[str, int]]:
    """Task name → (final state, run count) of the flow run's own task runs."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id]))
        )
    return {run.name.rsplit("-", 1)[0]: (run.state.name, run.run_count) for run in runs}


def test_per_run_tasks_have_no_prefect_retries_and_discovery_tasks_retry_only_unspent_transient_errors():
    for per_run in (export_tasks.export_run, load_tasks.load_run, load_tasks.validate_run):
        assert per_run.retries == 0, per_run.name  # their library verb retries under the policy itself
    for discovery in (export_tasks.preflight, export_tasks.discover_and_plan):
        assert discovery.retries == 4 and discovery.retry_condition_fn is retry_transient


def test_a_2x_table_read_failing_in_discovery_is_attempted_exactly_the_budget_under_the_flow(
    prefect_harness, fake, tmp_path, monkeypatch
):
    for name, value in fake.env(PROJECT).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NEPTUNE_EXPORTER_RETRY_BACKOFF_SECONDS", "0.01")  # real, small backoff of the library layer
    options = ExportOptions(
        source="neptune2",
        projects=(PROJECT,),
        data_path=str(tmp_path / "data"),
        files_path=str(tmp_path / "files"),
        workers=1,
    )
    fake.requests.clear()
    fake.faults.update(error_share=1.0, error_statuses=(503,), endpoints=r"^v2\.search_entries$")
    try:
        state = export(**flow_parameters(options), return_state=True)
    finally:
        fake.faults.update(error_share=0.0, endpoints=None)
    assert state.is_failed() and "answered 503" in state.message and "fix: retry later" in state.message
    assert fake.requests.count("v2.search_entries") == fake.requests.count("v2.search_entries", status=503) == 5
    tasks = task_runs_of(state.state_details.flow_run_id)
    assert tasks["discover-and-plan"] == ("Failed", 1)  # the library spent the budget: Prefect never re-ran it
    assert tasks["preflight"] == ("Completed", 1)

"""Read back what a flow run left in Prefect: its artifacts, subflows, task runs (states, inputs) and logs."""

from __future__ import annotations

from collections import Counter
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.client.schemas.sorting import ArtifactSort, LogSort
from prefect.logging.handlers import APILogWorker

PAGE = 200


def artifacts_by_key(flow_run_id: UUID) -> dict[str, list]:
    """Every artifact (all versions, newest first) the flow run created, by key."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
            sort=ArtifactSort.CREATED_DESC,
        )
    grouped: dict[str, list] = {}
    for artifact in found:
        grouped.setdefault(artifact.key, []).append(artifact)
    return grouped


def subflow_runs(flow_run_id: UUID) -> list:
    """Flow runs started by the flow run (the export chunks)."""
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        )


def export_task_states(flow_run_id: UUID) -> Counter:
    """State names of the per-run export task runs of the flow run's chunks, e.g. {'Completed': 3, 'Cached': 1}."""
    chunk_ids = [run.id for run in subflow_runs(flow_run_id)]
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=chunk_ids))
        )
    return Counter(run.state.name for run in task_runs if run.task_key.startswith("export_run"))


def task_runs(flow_run_ids: list[UUID]) -> list:
    """Every task run of these flow runs."""
    found: list = []
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=flow_run_ids)),
                limit=PAGE,
                offset=len(found),
            )
            found += page
            if len(page) < PAGE:
                return found


def flow_run_logs(flow_run_ids: list[UUID]) -> list:
    """Every log line of these flow runs (their task runs' lines included), oldest first."""
    APILogWorker.drain_all(timeout=30, at_exit=False)  # lines of an in-process flow run are still on their way
    found: list = []
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids)),
                limit=PAGE,
                offset=len(found),
                sort=LogSort.TIMESTAMP_ASC,
            )
            found += page
            if len(page) < PAGE:
                return found

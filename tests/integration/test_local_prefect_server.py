"""The CLI's own local Prefect server (automations and event store off) still records flow runs, task runs and artifacts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from neptune_exporter.prefect_env import LOCAL_SERVER_DEFAULTS, LOCAL_SERVER_ENV, local_server_env

CHILD = textwrap.dedent(
    """
    import json, time
    from neptune_exporter import prefect_env
    prefect_env.warm_up()  # as the CLI does: the local server starts before Prefect is imported
    from prefect import flow, task
    from prefect.artifacts import create_table_artifact
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId, TaskRunFilter, TaskRunFilterFlowRunId
    from prefect.runtime import flow_run
    from flows.runtime import run_in_process, run_subflow

    @task
    def square(x: int) -> int:
        return x * x

    @flow
    def chunk(values: list) -> list:
        return [square.submit(v).result() for v in values]

    @flow
    def parent(values: list) -> dict:
        create_table_artifact(table=[{"n": len(values)}], key="local-server-check")
        return {"squares": run_subflow(chunk, values), "id": str(flow_run.get_id())}

    out = run_in_process(parent, values=[1, 2, 3])
    with get_client(sync_client=True) as client:
        for _ in range(100):  # the task run recorder writes asynchronously
            chunks = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[out["id"]])))
            runs = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[c.id for c in chunks])))
            if len(runs) == 3 and all(r.state and r.state.is_final() for r in runs):
                break
            time.sleep(0.1)
        parent_state = client.read_flow_run(out["id"]).state.name
        artifacts = [a.key for a in client.read_artifacts() if a.key]
    print(json.dumps({"squares": out["squares"], "tasks": sorted(r.state.name for r in runs), "chunks": len(chunks),
                      "parent": parent_state, "artifacts": artifacts}))
    """
)


def test_local_server_environment_defaults_yield_to_the_users_settings():
    env = local_server_env({"PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "true", "PATH": "/bin"})
    assert env["PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED"] == "true"  # the user's choice stands
    assert env["PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED"] == "false"
    assert env["PATH"] == "/bin" and all(env[name] == value for name, value in LOCAL_SERVER_ENV.items())
    assert set(LOCAL_SERVER_DEFAULTS) <= set(env)


def test_flow_task_runs_and_artifacts_are_recorded_on_the_local_server(tmp_path):
    env = {name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    completed = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    seen = json.loads(completed.stdout.strip().splitlines()[-1])
    assert seen == {
        "squares": [1, 4, 9],
        "tasks": ["Completed"] * 3,
        "chunks": 1,
        "parent": "Completed",
        "artifacts": ["local-server-check"],
    }

"""The GraphQL operations and file_stream protocol the wandb SDK and `wandb sync` use, answered from State."""

from __future__ import annotations

import json
import re
from typing import Any


def _operation(query: str) -> str:
    match = re.search(r"(query|mutation)\s+(\w+)", query)
    return match.group(2) if match else "?"


def answer(state, query: str, variables: dict) -> dict:
    """Reply to one GraphQL request."""
    name = _operation(query)
    state.operations.append(name)
    state.requests.append((name, variables))
    handler = HANDLERS.get(name)
    if handler is None:
        state.unknown.append((name, query, variables))
    return {"data": handler(state, variables, query) if handler else {}}


def file_stream(state, entity: str, project: str, name: str, body: dict) -> dict:
    """History/summary/config lines by offset (a resend replaces, never duplicates)."""
    run = state.run(entity, project, name)
    state.operations.append("file_stream")
    for file_name, chunk in (body.get("files") or {}).items():
        offset, lines = int(chunk.get("offset", 0)), chunk.get("content") or []
        if file_name == "wandb-history.jsonl":
            for i, line in enumerate(lines):
                run.history[offset + i] = json.loads(line)
        elif file_name == "wandb-summary.json" and lines:
            run.summary = json.loads(lines[-1])
    if body.get("complete"):
        run.exit_code = body.get("exitcode")
    return {"exitcode": None, "limits": {}}


def record_upload(state, path: str, body: bytes) -> None:
    """An uploaded run file or artifact file: remember its md5."""
    from neptune_exporter.fake_wandb.server import md5_base64

    parts = path.split("/")
    if len(parts) >= 6 and parts[2] == "run":  # /upload/run/<entity>/<project>/<run>/<file...>
        run = state.run(parts[3], parts[4], parts[5])
        run.files["/".join(parts[6:])] = md5_base64(body)
        if parts[-1] == "config.yaml":
            pass
    elif len(parts) >= 5 and parts[2] == "artifact":  # /upload/artifact/<id>/<name...>
        artifact = state.artifacts.get(parts[3])
        if artifact is not None:
            artifact.uploaded["/".join(parts[4:])] = md5_base64(body)
    elif len(parts) >= 4 and parts[2] == "manifest":
        artifact = state.artifacts.get(parts[3])
        if artifact is not None:
            artifact.manifest = json.loads(body or b"{}")
            artifact.manifest_url = path


def _json(value: Any, default: Any) -> Any:
    if value is None:
        return default
    return json.loads(value) if isinstance(value, str) else value


def _config(raw: Any) -> dict:
    """wandb sends config as {key: {"value": v, "desc": ...}}; keep the values."""
    config = _json(raw, {})
    return {k: (v.get("value") if isinstance(v, dict) and "value" in v else v) for k, v in config.items()}


def upsert_bucket(state, v: dict, query: str) -> dict:
    entity = v.get("entity") or "fake-entity"
    project = v.get("project") or "uncategorized"
    run = state.run(entity, project, v.get("name"))
    if v.get("displayName") is not None:
        run.display_name = v["displayName"]
    if v.get("groupName") is not None:
        run.group = v["groupName"]
    if v.get("tags") is not None:
        run.tags = list(v["tags"])
    if v.get("config") is not None:
        run.config.update(_config(v["config"]))
        branch = (run.config.get("_wandb") or {}).get("branch_point")
        if branch:  # wandb sends fork_from as config._wandb.branch_point
            run.fork_from = f"{branch['run_id']}?_step={int(branch['step'])}"
    if v.get("summaryMetrics") is not None:
        run.summary.update(_json(v["summaryMetrics"], {}))
    bucket = {
        "id": f"run:{entity}/{project}/{run.name}",
        "name": run.name,
        "displayName": run.display_name,
        "description": None,
        "config": json.dumps({k: {"value": x} for k, x in run.config.items()}),
        "sweepName": None,
        "historyLineCount": len(run.history),
        "project": {"id": f"project:{project}", "name": project, "entity": {"id": f"entity:{entity}", "name": entity}},
    }
    return {"upsertBucket": {"inserted": True, "bucket": bucket}}


def server_features(state, v: dict, query: str) -> dict:
    return {"serverInfo": {"features": []}}


def viewer(state, v: dict, query: str) -> dict:
    return {
        "viewer": {"id": "user:1", "entity": "fake-entity", "username": "fake", "flags": "{}", "teams": {"edges": []}}
    }


def create_run_files(state, v: dict, query: str) -> dict:
    run_path = "/".join([v.get("entity") or "fake-entity", v.get("project") or "uncategorized", v.get("run") or "run"])
    files = [{"name": f, "uploadUrl": f"{state.base_url}/upload/run/{run_path}/{f}"} for f in v.get("files", [])]
    return {"createRunFiles": {"runID": run_path, "uploadHeaders": [], "files": files}}


def create_artifact(state, v: dict, query: str) -> dict:
    from neptune_exporter.fake_wandb.server import FakeArtifact

    fields = v.get("input") or v
    artifact_id = f"a{len(state.artifacts) + 1}"
    name = fields.get("artifactCollectionName") or (fields.get("artifactCollectionNames") or ["?"])[0]
    state.artifacts[artifact_id] = FakeArtifact(
        artifact_id,
        name,
        fields.get("artifactTypeName", ""),
        fields.get("runName") or "",
        fields.get("digest", ""),
        metadata=_json(fields.get("metadata"), {}),
        entity=fields.get("entityName") or "",
        project=fields.get("projectName") or "",
    )
    return {
        "createArtifact": {
            "artifact": {
                "id": artifact_id,
                "state": "PENDING",
                "artifactSequence": {"id": "s1", "latestArtifact": None},
            }
        }
    }


def _manifest_reply(state, artifact_id: str) -> dict:
    upload = f"{state.base_url}/upload/manifest/{artifact_id}/wandb_manifest.json"
    return {
        "artifactManifest": {
            "id": f"m-{artifact_id}",
            "file": {"id": f"f-{artifact_id}", "uploadUrl": upload, "uploadHeaders": []},
        }
    }


def create_manifest(state, v: dict, query: str) -> dict:
    return {"createArtifactManifest": _manifest_reply(state, v.get("artifactID", ""))}


def update_manifest(state, v: dict, query: str) -> dict:
    return {"updateArtifactManifest": _manifest_reply(state, v.get("artifactManifestID", "m-?")[2:])}


def create_artifact_files(state, v: dict, query: str) -> dict:
    edges = []
    for i, item in enumerate(v["input"]["artifactFiles"]):
        url = f"{state.base_url}/upload/artifact/{item.get('artifactID')}/{item.get('name')}"
        node = {
            "id": f"file{i}",
            "name": item.get("name"),
            "displayName": item.get("name"),
            "uploadUrl": url,
            "uploadHeaders": [],
            "uploadMultipartUrls": None,
            "storagePath": f"s/{i}",
            "artifact": {"id": item.get("artifactID")},
        }
        edges.append({"node": node})
    return {"createArtifactFiles": {"files": {"edges": edges}}}


def commit_artifact(state, v: dict, query: str) -> dict:
    artifact = state.artifacts.get(v["artifactID"])
    if artifact is not None:
        artifact.state = "COMMITTED"
    return {"commitArtifact": {"artifact": {"id": v["artifactID"], "digest": artifact.digest if artifact else ""}}}


def _last_step(run) -> int:
    steps = [row.get("_step", -1) for row in run.history.values()]
    return max(steps, default=-1)


def run_node(state, run) -> dict:
    """The public API's Run fields."""
    config = {k: {"value": v, "desc": None} for k, v in run.config.items()}
    return {
        "id": f"run:{run.entity}/{run.project}/{run.name}",
        "name": run.name,
        "displayName": run.display_name,
        "tags": run.tags,
        "group": run.group or None,
        "sweepName": None,
        "state": "finished" if run.exit_code is not None else "running",
        "config": json.dumps(config),
        "summaryMetrics": json.dumps(run.summary),
        "systemMetrics": "{}",
        "historyLineCount": len(run.history),
        "historyKeys": {"lastStep": _last_step(run), "keys": {}},
        "jobType": None,
        "commit": None,
        "readOnly": False,
        "createdAt": "2024-01-01T00:00:00",
        "heartbeatAt": "2024-01-01T00:00:00",
        "description": None,
        "notes": None,
        "user": {"name": "fake", "username": "fake"},
        "projectId": "1",
    }


def project_run(state, v: dict, query: str) -> dict:
    run = state.runs.get((v.get("entity"), v.get("project"), v.get("name")))
    project = {
        "id": f"project:{v.get('project')}",
        "name": v.get("project"),
        "run": run_node(state, run) if run else None,
    }
    return {"project": project}


def resume_status(state, v: dict, query: str) -> dict:
    run = state.runs.get((v.get("entity"), v.get("project"), v.get("name")))
    if run is None:
        return {"model": {"bucket": None}}
    tail = [json.dumps(run.history[i]) for i in sorted(run.history)[-1:]]
    bucket = {
        "name": run.name,
        "displayName": run.display_name,
        "historyLineCount": len(run.history),
        "eventsLineCount": 0,
        "logLineCount": 0,
        "historyTail": json.dumps(tail),
        "eventsTail": "[]",
        "summaryMetrics": json.dumps(run.summary),
        "config": json.dumps({k: {"value": x} for k, x in run.config.items()}),
        "tags": run.tags,
        "wandbConfig": "{}",
        "id": f"run:{run.entity}/{run.project}/{run.name}",
        "createdAt": "2024-01-01T00:00:00",
        "groupName": run.group or None,
    }
    return {
        "model": {
            "id": f"project:{run.project}",
            "name": run.project,
            "entity": {"id": "e", "name": run.entity},
            "bucket": bucket,
        }
    }


def artifact_type(state, v: dict, query: str) -> dict:
    name = (v.get("name") or "").split(":")[0]
    found = next((a for a in state.artifacts.values() if a.name == name), None)
    return {"project": {"artifact": {"artifactType": {"name": found.type}} if found else None}}


def _finite(value: Any) -> Any:
    """NaN/±inf as the strings W&B's API returns for them (JSON has no such numbers)."""
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def fetch_manifest(state, v: dict, query: str) -> dict:
    artifact = state.artifacts.get(v.get("id"))
    if artifact is None:
        return {"artifact": None}
    return {
        "artifact": {
            "currentManifest": {"id": f"m-{artifact.id}", "file": {"directUrl": state.base_url + artifact.manifest_url}}
        }
    }


def parquet_history(state, v: dict, query: str) -> dict:
    """No parquet files: every row is served as live data."""
    run = state.runs.get((v.get("entity"), v.get("project"), v.get("runName")))
    live = [{k: _finite(x) for k, x in run.history[i].items()} for i in sorted(run.history)] if run else []
    return {"project": {"run": {"parquetHistory": {"parquetUrls": [], "liveData": live}} if run else None}}


def _artifact_node(state, artifact, index: int) -> dict:
    project = {"id": "p1", "internalId": "1", "name": artifact.project, "entity": {"name": artifact.entity}}
    collection = {"__typename": "ArtifactSequence", "name": artifact.name, "project": project}
    return {
        "__typename": "Artifact",
        "id": artifact.id,
        "artifactSequence": collection,
        "versionIndex": 0,
        "artifactType": {"name": artifact.type},
        "description": None,
        "metadata": json.dumps(artifact.metadata),
        "ttlDurationSeconds": -1,
        "ttlIsInherited": True,
        "tags": [],
        "historyStep": None,
        "state": artifact.state,
        "size": 0,
        "digest": artifact.digest,
        "commitHash": f"c{index}",
        "fileCount": len(artifact.manifest.get("contents", {})),
        "createdAt": "2024-01-01T00:00:00",
        "updatedAt": None,
        "aliases": [
            {
                "__typename": "ArtifactAlias",
                "id": f"al{index}",
                "alias": "latest",
                "artifactCollection": {"__typename": "ArtifactSequence", "name": artifact.name, "project": project},
            }
        ],
    }


def run_output_artifacts(state, v: dict, query: str) -> dict:
    mine = [a for a in state.artifacts.values() if a.run == v.get("run") and a.state == "COMMITTED"]
    edges = [{"node": _artifact_node(state, a, i), "cursor": str(i)} for i, a in enumerate(mine)]
    page = {"__typename": "PageInfo", "endCursor": str(len(mine)), "hasNextPage": False}
    return {"project": {"run": {"artifacts": {"totalCount": len(mine), "pageInfo": page, "edges": edges}}}}


def history_page(state, v: dict, query: str) -> dict:
    """Rows with minStep <= _step < maxStep, at most pageSize, as JSON text (non-finite numbers as strings)."""
    run = state.runs.get((v.get("entity"), v.get("project"), v.get("run")))
    if run is None:
        return {"project": {"run": None}}
    low, high, size = int(v["minStep"]), int(v["maxStep"]), int(v["pageSize"])
    rows = [run.history[i] for i in sorted(run.history) if low <= run.history[i].get("_step", -1) < high][:size]
    return {"project": {"run": {"history": [json.dumps({k: _finite(x) for k, x in row.items()}) for row in rows]}}}


HANDLERS: dict[str, Any] = {
    "HistoryPage": history_page,
    "FetchArtifactManifest": fetch_manifest,
    "RunParquetHistory": parquet_history,
    "RunOutputArtifacts": run_output_artifacts,
    "ArtifactType": artifact_type,
    "GetDefaultEntity": viewer,
    "Run": project_run,
    "RunHistoryKeys": project_run,
    "RunResumeStatus": resume_status,
    "UpsertBucket": upsert_bucket,
    "ServerFeaturesQuery": server_features,
    "Viewer": viewer,
    "CreateRunFiles": create_run_files,
    "CreateArtifact": create_artifact,
    "CreateArtifactManifest": create_manifest,
    "UpdateArtifactManifest": update_manifest,
    "CreateArtifactFiles": create_artifact_files,
    "CommitArtifact": commit_artifact,
}

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
    if v.get("summaryMetrics") is not None:
        run.summary.update(_json(v["summaryMetrics"], {}))
    bucket = {
        "id": f"run:{entity}/{project}/{run.name}", "name": run.name, "displayName": run.display_name,
        "description": None, "config": json.dumps({k: {"value": x} for k, x in run.config.items()}),
        "sweepName": None, "historyLineCount": len(run.history),
        "project": {"id": f"project:{project}", "name": project, "entity": {"id": f"entity:{entity}", "name": entity}},
    }
    return {"upsertBucket": {"inserted": True, "bucket": bucket}}


def server_features(state, v: dict, query: str) -> dict:
    return {"serverInfo": {"features": []}}


def viewer(state, v: dict, query: str) -> dict:
    return {"viewer": {"id": "user:1", "entity": "fake-entity", "username": "fake", "flags": "{}", "teams": {"edges": []}}}


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
        artifact_id, name, fields.get("artifactTypeName", ""), fields.get("runName") or "", fields.get("digest", ""),
        metadata=_json(fields.get("metadata"), {}),
    )
    return {"createArtifact": {"artifact": {"id": artifact_id, "state": "PENDING", "artifactSequence": {"id": "s1", "latestArtifact": None}}}}


def _manifest_reply(state, artifact_id: str) -> dict:
    upload = f"{state.base_url}/upload/manifest/{artifact_id}/wandb_manifest.json"
    return {"artifactManifest": {"id": f"m-{artifact_id}", "file": {"id": f"f-{artifact_id}", "uploadUrl": upload, "uploadHeaders": []}}}


def create_manifest(state, v: dict, query: str) -> dict:
    return {"createArtifactManifest": _manifest_reply(state, v.get("artifactID"))}


def update_manifest(state, v: dict, query: str) -> dict:
    return {"updateArtifactManifest": _manifest_reply(state, v.get("artifactManifestID", "m-?")[2:])}


def create_artifact_files(state, v: dict, query: str) -> dict:
    edges = []
    for i, item in enumerate(v["input"]["artifactFiles"]):
        url = f"{state.base_url}/upload/artifact/{item.get('artifactID')}/{item.get('name')}"
        node = {"id": f"file{i}", "name": item.get("name"), "displayName": item.get("name"), "uploadUrl": url, "uploadHeaders": [],
                "uploadMultipartUrls": None, "storagePath": f"s/{i}", "artifact": {"id": item.get("artifactID")}}
        edges.append({"node": node})
    return {"createArtifactFiles": {"files": {"edges": edges}}}


def commit_artifact(state, v: dict, query: str) -> dict:
    artifact = state.artifacts.get(v["artifactID"])
    if artifact is not None:
        artifact.state = "COMMITTED"
    return {"commitArtifact": {"artifact": {"id": v["artifactID"], "digest": artifact.digest if artifact else ""}}}


HANDLERS: dict[str, Any] = {
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

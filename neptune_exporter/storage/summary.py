"""What is on disk: runs, attributes by type, points, files, bytes, failures and damaged runs per project (every
part verified against its manifest, storage/integrity.py), and a rich rendering."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

from neptune_exporter.errors import failure_message
from neptune_exporter.model import SERIES_TYPES
from neptune_exporter.storage import integrity
from neptune_exporter.storage.exported_run import StoredRun, list_stored_runs
from neptune_exporter.storage.parquet import project_dir

SERIES_TYPE_NAMES = frozenset(t.value for t in SERIES_TYPES)
FILE_TYPE_NAMES = frozenset({"file", "file_series", "file_set", "artifact"})


def _empty_project(project_id: str) -> dict:
    return {
        "project_id": project_id,
        "runs": 0,
        "runs_complete": 0,
        "runs_failed": 0,
        "runs_damaged": 0,  # complete manifest, but a part differs from it (export again to redo the run)
        "runs_derived": 0,
        "runs_unverified": 0,  # peer-tool exports: no manifest, no checksums to verify the parts against
        "attributes_by_type": {},
        "rows": 0,
        "points": 0,
        "files": 0,
        "file_bytes": 0,
        "parquet_bytes": 0,
        "bytes": 0,
        "failures": [],
        "damaged": [],
    }


def _add_state(project: dict, stored: StoredRun, data_root: Path) -> None:
    """Count the run as complete, failed (with its first error) or damaged (with its damaged parts)."""
    manifest = stored.manifest
    project["runs_derived"] += int(manifest.derived)
    project["runs_unverified"] += int(manifest.derived)
    if not manifest.is_complete():
        project["runs_failed"] += 1
        first = manifest.errors[0] if manifest.errors else {}
        fields = ("error_type", "message", "attribute", "remedy")
        project["failures"].append({"run_id": stored.run_id, **{name: first.get(name) for name in fields}})
        return
    state, damage = integrity.run_state(data_root, manifest)
    if state == integrity.DAMAGED:
        project["runs_damaged"] += 1
        project["damaged"].append({"run_id": stored.run_id, "parts": [d.describe() for d in damage]})
    else:
        project["runs_complete"] += 1


def _add_run(project: dict, stored: StoredRun, types: Counter, data_root: Path) -> None:
    manifest = stored.manifest
    project["runs"] += 1
    _add_state(project, stored, data_root)
    for entry in manifest.attributes.values():
        types[entry["type"]] += 1
        if entry["type"] in SERIES_TYPE_NAMES:
            project["points"] += entry["count"]
        if entry["type"] in FILE_TYPE_NAMES and not manifest.files:
            project["files"] += entry["count"]  # peer exports carry no file list: count file rows
    project["rows"] += sum(p.rows for p in manifest.parts)
    project["parquet_bytes"] += sum(p.bytes for p in manifest.parts)
    project["files"] += len(manifest.files)
    project["file_bytes"] += sum(int(f.get("size") or 0) for f in manifest.files)


def summarize(data_root: Path | str, projects: Iterable[str] | None = None) -> dict:
    """Figures per project and in total, from manifests (or from the parts, reading only needed columns)."""
    by_project: dict[str, dict] = {}
    type_counts: dict[str, Counter] = {}
    for stored in list_stored_runs(data_root, projects=projects):
        key = stored.project_id or stored.project_dir.name
        project = by_project.setdefault(key, _empty_project(key))
        _add_run(project, stored, type_counts.setdefault(key, Counter()), Path(data_root))
    for key, project in by_project.items():
        project["attributes_by_type"] = dict(sorted(type_counts[key].items()))
        project["bytes"] = project["parquet_bytes"] + project["file_bytes"]
    total = _empty_project("")
    del total["project_id"], total["failures"], total["damaged"]
    for project in by_project.values():
        for name in total:
            if name == "attributes_by_type":
                for kind, count in project[name].items():
                    total[name][kind] = total[name].get(kind, 0) + count
            else:
                total[name] += project[name]
    return {"data_path": str(data_root), "projects": [by_project[k] for k in sorted(by_project)], "total": total}


def add_files_on_disk(summary: dict, files_root: Path | str) -> dict:
    """`summary` with the files actually under `<files>/<project-dir>/` per project (count, bytes) and the files root."""
    for project in summary["projects"]:
        found = [p for p in project_dir(files_root, project["project_id"]).rglob("*") if p.is_file()]
        project["files_on_disk"], project["file_bytes_on_disk"] = len(found), sum(p.stat().st_size for p in found)
    summary["files_path"] = str(files_root)
    summary["total"]["files_on_disk"] = sum(p["files_on_disk"] for p in summary["projects"])
    summary["total"]["file_bytes_on_disk"] = sum(p["file_bytes_on_disk"] for p in summary["projects"])
    return summary


def render_summary(summary: dict) -> Group:
    """Rich renderable: one row per project, a total row, attribute types, and failures."""
    table = Table(title=f"Exported data in {summary['data_path']}")
    for column in ("project", "runs", "complete", "failed", "damaged", "attributes", "points", "files", "bytes"):
        table.add_column(column, justify="left" if column == "project" else "right")
    for project in [*summary["projects"], {**summary["total"], "project_id": "total"}]:
        table.add_row(
            project["project_id"],
            f"{project['runs']:,}",
            f"{project['runs_complete']:,}",
            f"{project['runs_failed']:,}",
            f"{project['runs_damaged']:,}",
            f"{sum(project['attributes_by_type'].values()):,}",
            f"{project['points']:,}",
            f"{project['files']:,}",
            _human_bytes(project["bytes"]),
        )
    types = Table(title="Attributes by type")
    types.add_column("type")
    types.add_column("attributes", justify="right")
    for kind, count in summary["total"]["attributes_by_type"].items():
        types.add_row(kind, f"{count:,}")
    parts: list = [table, types]
    if "files_path" in summary:
        total = summary["total"]
        parts.append(
            Text(
                f"Files on disk in {summary['files_path']}: {total['files_on_disk']:,} of "
                f"{total['files']:,} exported ({_human_bytes(total['file_bytes_on_disk'])})"
            )
        )
    failures = [(p["project_id"], f) for p in summary["projects"] for f in p["failures"]]
    if failures:
        lines = [f"{project} {f['run_id']}: {failure_message(f)}" for project, f in failures]
        parts.append(Text("Failed runs:\n" + "\n".join(lines), style="red"))
    damaged = [(p["project_id"], d) for p in summary["projects"] for d in p["damaged"]]
    if damaged:
        lines = [f"{project} {d['run_id']}: {'; '.join(d['parts'])}" for project, d in damaged]
        fix = f"fix: {integrity.REEXPORT_REMEDY}"
        parts.append(
            Text("Damaged runs (parts differ from their manifests):\n" + "\n".join(lines) + "\n" + fix, style="red")
        )
    unverified = summary["total"]["runs_unverified"]
    if unverified:
        parts.append(
            Text(
                f"{unverified:,} run(s) unverified: exported without manifests (the peer tool's format), so there are "
                "no checksums to verify their parts against"
            )
        )
    if not summary["projects"]:
        parts = [Text(f"No exported runs in {summary['data_path']}")]
    return Group(*parts)


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{size} B"

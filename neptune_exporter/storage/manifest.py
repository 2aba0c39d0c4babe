"""Per-run manifest: the JSON record, written last and atomically, that says a run's parts are a complete export."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from neptune_exporter import __version__
from neptune_exporter.model import AttributeType, check_scope, sanitize_name, utc_now_iso  # noqa: F401 - utc_now_iso re-exported

FORMAT_VERSION = 2  # 2: file paths relative to <files>/<project-dir>/ (model.PROJECT_RELATIVE_FILES_FORMAT)
MANIFEST_SUFFIX = ".manifest.json"
STATUS_COMPLETE = "complete"
STATUS_FAILED = "failed"

SOURCE_FIELDS = (
    "kind",
    "server",
    "project_id",
    "run_id",
    "sys_id",
    "custom_run_id",
    "experiment_name",
    "name",
    "creation_time",
    "modification_time",
    "fork_parent",
    "fork_step",
)

log = logging.getLogger(__name__)


@dataclass
class Watermark:
    """What an earlier export already holds of one attribute (the incremental resume point)."""

    attribute_type: AttributeType
    last_step: float | None  # None: nothing exported yet or not a series
    count: int = 0


@dataclass(frozen=True)
class PartInfo:
    """One Parquet part of a run: path relative to the data root, row count, size and sha256."""

    path: str
    rows: int
    bytes: int
    sha256: str

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> PartInfo:
        return cls(path=data["path"], rows=int(data["rows"]), bytes=int(data["bytes"]), sha256=data["sha256"])


@dataclass
class Manifest:
    """What one export of a run holds; `status == "complete"` is the only proof a run is exported."""

    status: str
    source: dict
    options: dict = field(default_factory=dict)  # {"fingerprint": str, "json": dict}
    parts: list[PartInfo] = field(default_factory=list)
    attributes: dict[str, dict] = field(default_factory=dict)  # path -> {type, count, last_step}
    files: list[dict] = field(default_factory=list)  # {attribute_path, path, size, sha256, step}
    errors: list[dict] = field(default_factory=list)
    checksum: str = ""
    exported_at: str = ""
    derived: bool = False
    single_value_parts: list[str] | None = None  # parts holding single-value rows (None: unknown, scan all)
    format_version: int = FORMAT_VERSION
    tool_version: str = __version__

    @property
    def project_id(self) -> str:
        return self.source.get("project_id") or ""

    @property
    def run_id(self) -> str:
        return self.source.get("run_id") or ""

    @property
    def scope(self) -> str | None:
        """The entity scope subfolder (2.x models / model_versions); None for runs."""
        return self.source.get("scope") or None

    def is_complete(self) -> bool:
        return self.status == STATUS_COMPLETE

    def watermarks(self) -> dict[str, Watermark]:
        """Per-attribute resume points for an incremental export."""
        marks = {}
        for path, stats in self.attributes.items():
            try:
                attribute_type = AttributeType(stats["type"])
            except ValueError:
                continue  # a type this tool does not export cannot be resumed; the source re-reads it
            marks[path] = Watermark(attribute_type, stats.get("last_step"), int(stats.get("count", 0)))
        return marks

    def to_json(self) -> dict:
        return {
            "format_version": self.format_version,
            "tool_version": self.tool_version,
            "status": self.status,
            "source": _source_json(self.source),
            "options": self.options,
            "parts": [part.to_json() for part in self.parts],
            "attributes": self.attributes,
            "files": self.files,
            "errors": self.errors,
            "checksum": self.checksum,
            "exported_at": self.exported_at,
            "derived": self.derived,
            "single_value_parts": self.single_value_parts,
        }

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        return cls(
            status=data["status"],
            source=dict(data.get("source") or {}),
            options=dict(data.get("options") or {}),
            parts=[PartInfo.from_json(p) for p in data.get("parts") or []],
            attributes=dict(data.get("attributes") or {}),
            files=list(data.get("files") or []),
            errors=list(data.get("errors") or []),
            checksum=data.get("checksum", ""),
            exported_at=data.get("exported_at", ""),
            derived=bool(data.get("derived", False)),
            single_value_parts=data.get("single_value_parts"),
            format_version=int(data.get("format_version", FORMAT_VERSION)),
            tool_version=data.get("tool_version", ""),
        )


def _source_json(source: dict) -> dict:
    """The source record's fields; `scope` only for model-registry entities (run manifests stay unchanged)."""
    record = {name: source.get(name) for name in SOURCE_FIELDS}
    if source.get("scope"):
        record["scope"] = source["scope"]
    return record


def compute_checksum(parts: list[PartInfo], files: list[dict]) -> str:
    """The run's export checksum (`neptune.export_checksum`): sha256 over part and file sha256s, order-independent."""
    digest = hashlib.sha256()
    for line in sorted(f"part {p.rows} {p.sha256}" for p in parts):
        digest.update(line.encode() + b"\n")
    for line in sorted(f"file {f.get('attribute_path')} {f.get('path')} {f.get('sha256')}" for f in files):
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def manifest_path(data_root: Path | str, project_id: str, run_id: str, scope: str | None = None) -> Path:
    """`<data>/<project-dir>[/<scope>]/<run-file>.manifest.json` (never matches the peer tool's `*_part_*.parquet`)."""
    folder = Path(data_root) / sanitize_name(project_id)
    if checked := check_scope(scope):
        folder = folder / checked
    return folder / (sanitize_name(run_id) + MANIFEST_SUFFIX)


def read_manifest(path: Path | str) -> Manifest | None:
    """The manifest at `path`, or None when it is missing or unreadable (the run is then not exported)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return Manifest.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable manifest %s (%s); the run will be exported again", path, exc)
        return None


@contextmanager
def replacing(path: Path) -> Iterator[TextIO]:
    """A text file that replaces `path` when the block ends: written to a temporary file in the same folder, fsynced,
    renamed over `path`, the folder fsynced. When the block or a write fails (a full disk), nothing of it stays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Path, data: dict | list) -> Path:
    """Replace `path` with `data` as JSON, atomically (`replacing`)."""
    with replacing(path) as handle:
        json.dump(data, handle, indent=2, sort_keys=False, default=str)
    return path


def fsync_dir(folder: Path) -> None:
    """Make renames in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(data_root: Path | str, manifest: Manifest) -> Path:
    """Write the run's manifest atomically (tmp + fsync + rename); fills `exported_at` and `checksum` when empty."""
    if not manifest.exported_at:
        manifest.exported_at = utc_now_iso()
    if not manifest.checksum:
        manifest.checksum = compute_checksum(manifest.parts, manifest.files)
    path = manifest_path(data_root, manifest.project_id, manifest.run_id, manifest.scope)
    return write_json_atomic(path, manifest.to_json())

"""ZenML validation: the ZenML view an export must have, by validation's own rules (README "ZenML"), compared with
what `zenml.client.Client` reads back from the local store: the Model Version of each run, its metadata value by value
(provenance included), and every artifact linked to it (series point by point, files by sha256, long values whole)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from neptune_exporter.model import decimal_array_to_unscaled
from neptune_exporter.storage.exported_run import ExportedRun
from neptune_exporter.storage.zenml_store import equals, listed, zenml_client, zenml_dir, zenml_errors
from neptune_exporter.validation.compare import (
    Difference,
    PointDigest,
    RecordDigest,
    compare_files,
    compare_mappings,
    file_digest,
    short,
)
from neptune_exporter.validation.export_view import FILE_TYPES, read_export, series_rows, single_values, timestamps_ms
from neptune_exporter.validation.report import RunValidation
from neptune_exporter.validation.rules import KeyRule, RecordedKeys, run_key, step_text

NAME_LIMIT = 255
PROVENANCE_PREFIX = "neptune."
VALUE_LIMIT = 65_535  # longer JSON: ZenML would skip the value, so the load keeps it whole in an artifact
POINTER_PREFIX = 1_000
ARTIFACT_FACTS = "neptune.artifacts"  # metadata: artifact name → {attribute, type, count}


class MetadataKeys(KeyRule):
    """ZenML metadata keys: any text of 1..255 characters without `:` or control characters (`//`, `..` are fine)."""

    def storable(self, key: str) -> bool:
        return 0 < len(key) <= self.max_length and re.fullmatch(f"{self.allowed}+", key) is not None


KEYS = MetadataKeys(
    r"[^\x00-\x1f\x7f:]", NAME_LIMIT, reserved_prefixes=(PROVENANCE_PREFIX,), rename_reserved=(PROVENANCE_PREFIX,)
)
REFUSED_IN_NAMES = set("\t\n\r\v\f")
STAGE_NAMES = {"none", "staging", "production", "archived", "latest"}
SERIES = {"float_series": "float_value", "string_series": "string_value", "histogram_series": "histogram_value"}
NO_TIME = -1


def model_name(template: str | None, project_id: str) -> str:
    """The Model of a project: the template (default `{project_id}`) with {project_id}, {workspace}, {project}."""
    workspace, _, project = project_id.rpartition("/")
    return (template or "{project_id}").format(project_id=project_id, workspace=workspace, project=project).strip()


def version_name(run_id: str) -> str:
    """The run id, unless ZenML refuses it as a version name: then `run-<id, refused characters as _>-<8 hex>`."""
    refused = (
        not run_id
        or len(run_id) > NAME_LIMIT
        or run_id.isnumeric()
        or run_id.lower() in STAGE_NAMES
        or bool(REFUSED_IN_NAMES & set(run_id))
    )
    if not refused:
        return run_id
    digest = hashlib.blake2b(run_id.encode("utf-8"), digest_size=4).hexdigest()
    return "run-" + "".join("_" if c in REFUSED_IN_NAMES else c for c in run_id)[:200] + "-" + digest


def metadata_value(attribute_type: str, value: Any) -> Any:
    """A single value as the metadata should hold it: JSON natives, datetimes ISO 8601 UTC ms, sets sorted lists."""
    if attribute_type == "datetime":
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat(timespec="milliseconds")
    if attribute_type == "string_set":
        return sorted(value)
    return value


def attribute_values(metadata: dict[str, Any], originals: dict[str, str]) -> dict[str, Any]:
    """Metadata entries back to attribute paths: a namespace's dict as `<namespace>/<key>` (key `""`: the
    namespace's own value), a plain entry as its name; renamed keys back to their originals; provenance left out."""
    values: dict[str, Any] = {}
    for key, value in metadata.items():
        if key.startswith(PROVENANCE_PREFIX):
            continue
        name = originals.get(key, key)
        if isinstance(value, dict):
            values.update({f"{name}/{rest}" if rest else name: inner for rest, inner in value.items()})
        else:
            values[name] = value
    return values


def canonical(value: Any) -> str:
    """Comparable text of a metadata value: JSON (type-strict: 1 ≠ 1.0 ≠ true; NaN equals NaN)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


@dataclass
class Expected:
    """What ZenML should hold for one run: metadata, and per attribute its artifact's type, count and content."""

    values: dict[str, Any] = field(default_factory=dict)  # attribute path → metadata value
    provenance: dict[str, Any] = field(default_factory=dict)  # the `neptune.*` entries
    types: dict[str, str] = field(default_factory=dict)  # attribute → Neptune type of its artifact
    counts: dict[str, int] = field(default_factory=dict)
    files: dict[str, dict[str, tuple[int, str]]] = field(default_factory=dict)  # attribute → {path: (size, sha)}
    points: dict[str, PointDigest] = field(default_factory=dict)  # float series
    records: dict[str, RecordDigest] = field(default_factory=dict)  # string and histogram series
    long_values: dict[str, str] = field(default_factory=dict)  # attribute → whole text


class ExpectedZenmlRun:
    """Builds `Expected` for one export (keys from the recorded key map, each rename checked)."""

    def __init__(self, export: ExportedRun, key_map: dict, artifact_names: dict[str, str]):
        self.export, self.artifact_names = export, artifact_names
        self.keys = RecordedKeys(KEYS, dict(key_map))
        self.expected = Expected()

    def build(self) -> Expected:
        for path, attribute_type, value, step in single_values(self.export):
            if attribute_type in FILE_TYPES or attribute_type == "file_series":
                self._file(path, attribute_type, value, step)
            else:
                self._value(path, attribute_type, metadata_value(attribute_type, value))
        for attribute_type in SERIES:
            self._series(attribute_type)
        for path in self.expected.values:
            self.keys(path.partition("/")[0])  # the top-level key of the path's namespace (or of the name)
        accepted = {o: t for o, t in self.keys.recorded.items() if self.keys(o) == t}
        self.expected.provenance = self._provenance(accepted)
        return self.expected

    def originals(self) -> dict[str, str]:
        """Top-level metadata key → the namespace or name it holds (as validation expects the keys)."""
        return {target: original for original, target in self.keys.targets.items()}

    def _value(self, path: str, attribute_type: str, value: Any) -> None:
        if len(json.dumps({path: value})) <= VALUE_LIMIT:
            self.expected.values[path] = value
            return
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        where = self.artifact_names.get(path, "<its artifact>")
        self.expected.values[path] = (
            f"{text[:POINTER_PREFIX]} …[truncated: {len(text)} chars, whole value in artifact {where}]"
        )
        self.expected.types[path], self.expected.counts[path] = attribute_type, len(text)
        self.expected.long_values[path] = text

    def _file(self, path: str, attribute_type: str, value: Any, step: int | None) -> None:
        local = self.export.local_file(path, value)
        if local is None:
            return
        prefix = f"step_{step_text(step or 0)}/" if attribute_type == "file_series" else ""
        entries = self.expected.files.setdefault(path, {})
        if local.is_dir():
            for file in sorted(f for f in local.rglob("*") if f.is_file()):
                entries[f"{prefix}{local.name}/{file.relative_to(local).as_posix()}"] = file_digest(file)
        else:
            entries[f"{prefix}{local.name}"] = file_digest(local)
        self.expected.types[path] = attribute_type
        self.expected.counts[path] = self.expected.counts.get(path, 0) + 1

    def _series(self, attribute_type: str) -> None:
        column = SERIES[attribute_type]
        for rows in series_rows(self.export, attribute_type, [column]):
            for path, steps, stamps, values in _by_path(rows, column):
                self.expected.types[path] = attribute_type
                self.expected.counts[path] = self.expected.counts.get(path, 0) + len(steps)
                _add_points(self.expected, path, attribute_type, steps, stamps, values)

    def _provenance(self, key_map: dict[str, str]) -> dict[str, Any]:
        export = self.export
        record = {
            "neptune.project": export.project_id,
            "neptune.run_id": export.run_id,
            "neptune.run_key": run_key(export.project_id, export.run_id),
            "neptune.export_checksum": export.checksum,
            "neptune.load_state": "complete",
            "neptune.experiment": export.experiment_name,
            "neptune.fork_parent": export.fork_parent,
            "neptune.fork_step": None if export.fork_step is None else float(export.fork_step),
            "neptune.key_map": key_map,
        }
        return {key: value for key, value in record.items() if value is not None}


def _by_path(rows: pa.RecordBatch | pa.Table, column: str):
    """(path, unscaled steps, epoch-ms times or NO_TIME, values) of the rows, one path at a time."""
    paths = rows.column("attribute_path")
    for path in pc.unique(paths).to_pylist():
        mine = rows.filter(pc.equal(paths, path))
        steps = decimal_array_to_unscaled(mine.column("step"))
        yield path, steps, timestamps_ms(mine, None), mine.column(column)


def _add_points(target: Expected, path: str, attribute_type: str, steps, stamps, values) -> None:
    """Points into the digest of their kind: floats NaN-aware and vectorised, other values as JSON records."""
    if attribute_type == "float_series":
        numbers = np.asarray(pc.fill_null(values, math.nan).to_numpy(zero_copy_only=False), dtype=np.float64)
        target.points.setdefault(path, PointDigest()).update(steps, stamps, numbers)
        return
    digest = target.records.setdefault(path, RecordDigest())
    for step, stamp, value in zip(steps.tolist(), stamps.tolist(), values.to_pylist(), strict=True):
        digest.add([step_text(step), stamp, value])


@dataclass
class ZenmlValidator:
    """Validates exported runs against the ZenML local store in `folder`."""

    folder: Path
    model_template: str | None = None

    @classmethod
    def from_options(cls, options, settings=None) -> ZenmlValidator:
        """Build from `load.LoadOptions`."""
        return cls(zenml_dir(options.zenml_dir), options.zenml_model_template)

    def validate(self, data_root: Path, files_root: Path, project_id: str, run_id: str) -> RunValidation:
        """The run's Model Version, metadata and artifacts against its export."""
        export = read_export(Path(data_root), Path(files_root), project_id, run_id)
        model, version = model_name(self.model_template, project_id), version_name(run_id)
        found = self._read(model, version, export.checksum)
        if found is None:
            where = f"{model}/{version}"
            missing = Difference(project_id, run_id, "run", where, "missing", "a complete ZenML model version", None)
            return RunValidation(project_id, run_id, None, [missing])
        version_id, metadata, artifacts = found
        names = {a["attribute"]: a["name"] for a in artifacts if a["attribute"]}
        metadata.pop(ARTIFACT_FACTS, None)  # read into `artifacts` (no value of the run, no provenance)
        builder = ExpectedZenmlRun(export, metadata.get("neptune.key_map") or {}, names)
        expected = builder.build()
        values = attribute_values(metadata, builder.originals())
        provenance = {k: v for k, v in metadata.items() if k.startswith(PROVENANCE_PREFIX)}
        differences = builder.keys.differences(project_id, run_id)
        for want, got in ((expected.values, values), (expected.provenance, provenance)):
            differences += compare_mappings(
                project_id,
                run_id,
                "metadata",
                {k: canonical(v) for k, v in want.items()},
                {k: canonical(v) for k, v in got.items()},
            )
        differences += _artifact_differences(project_id, run_id, version, expected, artifacts)
        checked = {
            "params": len(expected.values) + len(expected.provenance),
            "metrics": len(expected.points) + len(expected.records),
            "points": sum(d.count for d in expected.points.values()) + sum(d.count for d in expected.records.values()),
            "artifacts": sum(len(e) for e in expected.files.values()) + len(expected.long_values),
        }
        return RunValidation(project_id, run_id, version_id, differences, checked)

    def _read(self, model: str, version: str, checksum: str) -> tuple[str, dict, list[dict]] | None:
        """(version id, metadata, artifacts) of the complete Model Version of this export, None when there is none."""
        with zenml_client(self.folder) as client, zenml_errors(f"read model version {model}/{version}"):
            models = client.list_models(name=equals(model)).items
            versions = (
                client.list_model_versions(models[0].id, name=equals(version), hydrate=True).items if models else []
            )
            if not versions:
                return None
            metadata = dict(versions[0].run_metadata or {})
            if metadata.get("neptune.load_state") != "complete" or metadata.get("neptune.export_checksum") != checksum:
                return None
            facts = metadata.get(ARTIFACT_FACTS) or {}
            artifacts = [
                _artifact_facts(a, facts)
                for a in listed(client.list_artifact_versions, model_version_id=versions[0].id, hydrate=True)
            ]
        return str(versions[0].id), metadata, artifacts


def _artifact_facts(artifact: Any, recorded: dict[str, dict]) -> dict:
    """An artifact as validation compares it: its Neptune facts as the version's `neptune.artifacts` records them
    under its name (none: an artifact the load did not account for), its version and where its data is."""
    facts = recorded.get(artifact.artifact.name) or {}
    return {
        "attribute": facts.get("attribute"),
        "type": facts.get("type"),
        "count": facts.get("count"),
        "name": artifact.artifact.name,
        "version": artifact.version,
        "uri": Path(artifact.uri),
    }


def _artifact_differences(
    project_id: str, run_id: str, version: str, expected: Expected, artifacts: list[dict]
) -> list[Difference]:
    """Each expected artifact present once, with its type, count, version and content; none unexpected."""
    differences: list[Difference] = []
    found: dict[str, dict] = {}
    for artifact in artifacts:
        attribute = artifact["attribute"] or artifact["name"]
        if attribute not in expected.types or attribute in found:
            differences.append(
                Difference(project_id, run_id, "artifact", attribute, "unexpected", None, artifact["name"])
            )
            continue
        found[attribute] = artifact
    for attribute in sorted(expected.types):
        if attribute not in found:
            differences.append(
                Difference(project_id, run_id, "artifact", attribute, "missing", expected.types[attribute])
            )
            continue
        facts = {"type": expected.types[attribute], "count": expected.counts[attribute], "version": version}
        actual = {name: found[attribute][name] for name in facts}
        differences += compare_mappings(
            project_id, run_id, "artifact", _keyed(attribute, facts), _keyed(attribute, actual)
        )
        differences += _content_differences(project_id, run_id, attribute, expected, found[attribute]["uri"])
    return differences


def _keyed(attribute: str, facts: dict) -> dict:
    return {f"{attribute}:{name}": value for name, value in facts.items()}


def _content_differences(
    project_id: str, run_id: str, attribute: str, expected: Expected, uri: Path
) -> list[Difference]:
    """An artifact's folder against the export: files by size and sha256, series point by point, long values whole."""
    if attribute in expected.files:
        actual = {f.relative_to(uri).as_posix(): file_digest(f) for f in sorted(uri.rglob("*")) if f.is_file()}
        return compare_files(
            project_id, run_id, _keyed(attribute, expected.files[attribute]), _keyed(attribute, actual)
        )
    if attribute in expected.long_values:
        files = sorted(f for f in uri.iterdir() if f.is_file()) if uri.is_dir() else []
        text = files[0].read_bytes().decode() if len(files) == 1 else None
        whole = expected.long_values[attribute]
        if text == whole:
            return []
        return [Difference(project_id, run_id, "long-value", attribute, "value", short(whole), short(text))]
    read = Expected()
    for part in sorted(uri.glob("*.parquet")) if uri.is_dir() else []:
        table = pq.read_table(part)
        steps = decimal_array_to_unscaled(table.column("step"))
        stamps = timestamps_ms(table, None)
        _add_points(read, attribute, expected.types[attribute], steps, stamps, table.column("value"))
    want: dict = (expected.points.get(attribute) or expected.records[attribute]).to_json()
    got: dict = (read.points.get(attribute) or read.records.get(attribute) or PointDigest()).to_json()
    return [] if want == got else [Difference(project_id, run_id, "series", attribute, "points", want, got)]

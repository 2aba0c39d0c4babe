"""MLflow validation: the MLflow view an export must have, by validation's own rules (README mapping table),
compared with what MlflowClient returns: params, tags, every metric point, every artifact, run times."""

from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from neptune_exporter.errors import OutputPathError, TargetError, TargetUnavailableError
from neptune_exporter.model import STEP_SCALE, decimal_array_to_unscaled
from neptune_exporter.storage.exported_run import ExportedRun
from neptune_exporter.validation.compare import (
    Difference,
    FileExpectation,
    PointDigest,
    RecordDigest,
    compare_digests,
    compare_files,
    compare_mappings,
    file_digest,
    point_examples,
    point_set,
)
from neptune_exporter.validation.export_view import (
    FILE_TYPES,
    read_export,
    series_beyond_int64,
    series_rows,
    series_steps,
    single_values,
    timestamps_ms,
)
from neptune_exporter.validation.report import RunValidation
from neptune_exporter.validation.rules import (
    KeyRule,
    RecordedKeys,
    expected_multiplier,
    run_key,
    scaled,
    step_text,
)

ATTRIBUTE_KEYS = KeyRule(r"[/\w.\- :]", 250)
TAG_KEYS = KeyRule(r"[/\w.\- :]", 250, reserved_prefixes=("mlflow.", "neptune."))
MAX_PARAM_CHARS = 6000
MAX_FLOAT = 1.7976931348623157e308  # MLflow's SQL stores keep ±inf as ±max float64
KEY_MAP = "neptune/key_map.json"
LONG_VALUES = "neptune/long_values"
PARENT_TAGS = ("neptune.fork_parent_mlflow_run_id", "mlflow.parentRunId")
SERIES_FILES = {"string_series": "series.jsonl", "histogram_series": "histograms.jsonl"}
ORIGINAL_POINTS = "neptune/original_points"  # per metric key: points MLflow cannot hold as they are, as exported


def expected_experiment(template: str, project_id: str, experiment: str | None) -> str:
    """`template` with {project} and {experiment}; without an experiment its `/{experiment}` part is dropped."""
    if experiment:
        return template.format(project=project_id, experiment=experiment)
    return re.sub(r"/?\{experiment\}", "", template).format(project=project_id).strip("/ ") or project_id


def param_text(attribute_type: str, value: Any) -> str:
    """A single value as MLflow param text."""
    if attribute_type == "float":
        return repr(float(value))
    if attribute_type == "string_set":  # a JSON list of the sorted strings (README mapping table)
        return json.dumps(sorted(value), ensure_ascii=False)
    if attribute_type == "datetime":
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return str(value)


def _ms_of_iso(text: str | None) -> int | None:
    return None if text is None else int(datetime.fromisoformat(text).timestamp() * 1000)


def series_record(attribute_type: str, unscaled: int, stamp: int | None, value: Any) -> list:
    """One string or histogram point as a comparable record."""
    if attribute_type == "string_series":
        return [step_text(unscaled), stamp, value]
    value = value or {}
    return [
        step_text(unscaled),
        stamp,
        value.get("type"),
        [float(e) for e in value.get("edges") or []],
        [float(v) for v in value.get("values") or []],
    ]


def parsed_series_file(attribute_type: str, path: Path) -> RecordDigest:
    """Records of a `series.jsonl` / `histograms.jsonl` artifact as MLflow holds it."""
    digest = RecordDigest()
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            _add_line(digest, attribute_type, json.loads(line))
    return digest


def original_point(unscaled: int, stamp: int, value: float) -> list | None:
    """What MLflow cannot keep of a point (a time before 1970, ±inf, -0.0) as a record; None when it keeps it all."""
    early = stamp < 0
    changed = math.isinf(value) or (value == 0 and math.copysign(1.0, value) < 0)
    if not early and not changed:
        return None
    return [step_text(unscaled), stamp if early else None, repr(value) if changed else None]


def _add_line(digest: RecordDigest, attribute_type: str, item: dict) -> None:
    unscaled = int(Decimal(item["step"]).scaleb(STEP_SCALE))
    if attribute_type == "original_points":
        digest.add([step_text(unscaled), item.get("timestamp"), item.get("value")])
        return
    value = item.get("value") if attribute_type == "string_series" else item
    digest.add(series_record(attribute_type, unscaled, _ms_of_iso(item.get("timestamp")), value))


@dataclass
class MlflowView:
    """What one run holds (expected, or read back): params, tags, metric digests, artifacts."""

    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, PointDigest] = field(default_factory=dict)
    files: FileExpectation = field(default_factory=FileExpectation)  # artifact path → (size, sha256)
    records: dict[str, tuple[str, RecordDigest]] = field(
        default_factory=dict
    )  # generated series artifact → (type, records)
    present: set[str] = field(default_factory=set)  # artifacts only checked to exist

    def artifact_count(self) -> int:
        return len(self.files.files) + len(self.records) + len(self.present)


class ExpectedRun:
    """Builds the expected MlflowView of one export (keys from the run's recorded key map, checked)."""

    def __init__(self, export: ExportedRun, multiplier: int, key_map: dict):
        self.export, self.multiplier = export, multiplier
        self.keys = RecordedKeys(ATTRIBUTE_KEYS, dict(key_map.get("attributes") or {}))
        self.tag_keys = RecordedKeys(TAG_KEYS, dict(key_map.get("tags") or {}), kind="tag-key")
        self.view = MlflowView(present={KEY_MAP})

    def build(self) -> MlflowView:
        for path, attribute_type, value, step in single_values(self.export):
            self._single(path, attribute_type, value, step)
        self._metrics()
        self._series()
        return self.view

    def _single(self, path: str, attribute_type: str, value: Any, step: int | None) -> None:
        if path == "sys/tags":
            self.view.tags.update({self.tag_keys(tag): "" for tag in value})
        elif attribute_type in FILE_TYPES:
            self._files(path, value, self.keys(path))
        elif attribute_type == "file_series":
            self._files(path, value, f"{self.keys(path)}/step_{int(scaled(np.array([step]), self.multiplier)[0])}")
        else:
            self._param(self.keys(path), param_text(attribute_type, value))

    def _param(self, key: str, text: str) -> None:
        if len(text) > MAX_PARAM_CHARS:
            stored = f"{LONG_VALUES}/{key}.txt"
            data = text.encode("utf-8")
            self.view.files.files[stored] = (len(data), hashlib.sha256(data).hexdigest())
            pointer = f" …[truncated: {len(text)} chars, full value in artifact {stored}]"
            text = text[: MAX_PARAM_CHARS - len(pointer)] + pointer
        self.view.params[key] = text

    def _files(self, path: str, value: Any, folder: str) -> None:
        local = self.export.local_file(path, value)
        if local is None:
            return
        if local.is_dir():
            self.view.files.add_tree(local, folder)
        else:
            self.view.files.add_file(local, f"{folder}/{local.name}")

    def points(self, originals: set[str] | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
        """(original path, MLflow steps, timestamps, values) of float series, attribute by attribute per part."""
        for rows in series_rows(self.export, "float_series", ["float_value"]):
            steps = scaled(decimal_array_to_unscaled(rows.column("step")), self.multiplier)
            stamps = np.maximum(timestamps_ms(rows, self.export.start_ms or 0), 0)  # before 1970: at 1970-01-01
            values = np.asarray(
                pc.fill_null(rows.column("float_value"), float("nan")).to_numpy(zero_copy_only=False), dtype=np.float64
            )
            paths = np.asarray(rows.column("attribute_path").to_pylist(), dtype=object)
            for path in sorted(set(paths.tolist()) & originals if originals is not None else set(paths.tolist())):
                mask = paths == path
                yield path, steps[mask], stamps[mask], values[mask]

    def _metrics(self) -> None:
        for path, steps, stamps, values in self.points():
            self.view.metrics.setdefault(self.keys(path), PointDigest()).update(steps, stamps, values, MAX_FLOAT)
        for rows in series_rows(self.export, "float_series", ["float_value"]):
            values = pc.fill_null(rows.column("float_value"), float("nan")).to_numpy(zero_copy_only=False)
            stamps = timestamps_ms(rows, self.export.start_ms or 0)
            unusual = np.flatnonzero((stamps < 0) | np.isinf(values) | (values == 0))  # the few worth a look
            paths, unscaled = rows.column("attribute_path"), decimal_array_to_unscaled(rows.column("step"))
            for i in unusual.tolist():
                record = original_point(int(unscaled[i]), int(stamps[i]), float(values[i]))
                if record is not None:
                    artifact = f"{ORIGINAL_POINTS}/{self.keys(paths[i].as_py())}.jsonl"
                    self.view.records.setdefault(artifact, ("original_points", RecordDigest()))[1].add(record)

    def _series(self) -> None:
        for attribute_type, file_name in SERIES_FILES.items():
            column = "string_value" if attribute_type == "string_series" else "histogram_value"
            for rows in series_rows(self.export, attribute_type, [column]):
                unscaled = decimal_array_to_unscaled(rows.column("step")).tolist()
                stamps = timestamps_ms(rows, None).tolist()
                for path, step, stamp, value in zip(
                    rows.column("attribute_path").to_pylist(),
                    unscaled,
                    stamps,
                    rows.column(column).to_pylist(),
                    strict=True,
                ):
                    _, digest = self.view.records.setdefault(
                        f"{self.keys(path)}/{file_name}", (attribute_type, RecordDigest())
                    )
                    digest.add(series_record(attribute_type, step, stamp if stamp >= 0 else None, value))

    def provenance(self) -> dict[str, str]:
        """Tags naming the export, its checksum, the step multiplier and the finished load."""
        export = self.export
        tags = {
            "neptune.project": export.project_id,
            "neptune.run_id": export.run_id,
            "neptune.run_key": run_key(export.project_id, export.run_id),
            "neptune.export_checksum": export.checksum,
            "neptune.load_state": "complete",
            "neptune.step_multiplier": str(self.multiplier),
        }
        if export.fork_parent:
            tags["neptune.fork_parent"] = export.fork_parent
            if export.fork_step is not None:
                tags["neptune.fork_step"] = repr(float(export.fork_step))
        return tags

    def key_differences(self) -> list[Difference]:
        return self.keys.differences(self.export.project_id, self.export.run_id) + self.tag_keys.differences(
            self.export.project_id, self.export.run_id
        )


_TRANSIENT = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}


@contextmanager
def _reading(action: str):
    """MLflow and HTTP failures while reading → typed errors (server trouble transient, refusals terminal)."""
    import requests
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, requests.RequestException) as error:
        if isinstance(error, requests.RequestException) or getattr(error, "error_code", "") in _TRANSIENT:
            raise TargetUnavailableError(
                f"MLflow failed to {action}: {error}", "check the tracking server is up, then validate again"
            ) from error
        raise TargetError(f"MLflow refused to {action}: {error}", "check the tracking URI and permissions") from error


@dataclass
class MlflowValidator:
    """Validates exported runs against one MLflow tracking store (server URL or sqlite:///)."""

    tracking_uri: str
    experiment_name_template: str = "{project}/{experiment}"
    step_multiplier: int | None = None
    history_page_size: int = 25_000  # metric points read per request (bounds memory)
    download_workers: int = 4

    def __post_init__(self) -> None:
        self._client = None

    @classmethod
    def from_options(cls, options, settings) -> MlflowValidator:
        """Build from `load.LoadOptions` (+ settings)."""
        return cls(
            tracking_uri=options.mlflow_tracking_uri,
            experiment_name_template=options.experiment_name_template or "{project}/{experiment}",
            step_multiplier=options.step_multiplier,
            history_page_size=settings.series_batch_rows,
            download_workers=max(2, settings.workers),
        )

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    # ---------------------------------------------------------------- finding runs
    def copies(self, export: ExportedRun) -> list:
        """Active MLflow runs of this export in its expected experiment (complete or not)."""
        from mlflow.entities import ViewType

        name = expected_experiment(self.experiment_name_template, export.project_id, export.experiment_name)
        with _reading(f"look up experiment {name!r}"):
            experiment = self.client.get_experiment_by_name(name)
        if experiment is None or experiment.lifecycle_stage != "active":
            return []
        query = f"tags.`neptune.run_key` = '{run_key(export.project_id, export.run_id)}'"
        with _reading(f"search runs of {export.project_id}/{export.run_id}"):
            return list(
                self.client.search_runs(
                    [experiment.experiment_id], query, run_view_type=ViewType.ACTIVE_ONLY, max_results=100
                )
            )

    def complete_run(self, export: ExportedRun):
        return next((r for r in self.copies(export) if r.data.tags.get("neptune.load_state") == "complete"), None)

    def _parent_target(self, export: ExportedRun) -> str | None:
        if not export.fork_parent:
            return None
        try:
            parent = read_export(
                export.data_root, export.files_root, export.project_id, export.fork_parent, verify=False
            )
        except OutputPathError:
            return None
        run = self.complete_run(parent)
        return run.info.run_id if run else None

    # ---------------------------------------------------------------- validating
    def validate(self, data_root: Path, files_root: Path, project_id: str, run_id: str) -> RunValidation:
        """Params, tags, every metric point, every artifact and the run times of one run against its export."""
        export = read_export(Path(data_root), Path(files_root), project_id, run_id)
        copies = self.copies(export)
        run = next((r for r in copies if r.data.tags.get("neptune.load_state") == "complete"), None)
        if run is None:
            return RunValidation(
                project_id,
                run_id,
                None,
                [Difference(project_id, run_id, "run", run_id, "missing", "a complete MLflow run", None)],
            )
        target_id = run.info.run_id
        paths = list(self._artifact_paths(target_id, None))
        multiplier = expected_multiplier(series_steps(export), self.step_multiplier)
        loadable, beyond = series_beyond_int64(export, multiplier)
        expected_run = ExpectedRun(loadable, multiplier, self._key_map(target_id, paths))
        expected = expected_run.build()
        expected.tags.update(expected_run.provenance())
        parent = self._parent_target(export)
        expected.tags.update({k: parent for k in PARENT_TAGS} if parent else {})
        actual = self._actual(run, paths, expected)
        metrics = compare_digests(project_id, run_id, "metric", expected.metrics, actual.metrics)
        differences = (
            beyond
            + expected_run.key_differences()
            + compare_mappings(project_id, run_id, "param", expected.params, actual.params)
            + compare_mappings(project_id, run_id, "tag", expected.tags, actual.tags)
            + self._explain_points(metrics, expected_run, target_id)
            + compare_files(project_id, run_id, expected.files.files, actual.files.files)
            + self._compare_records(export, expected, actual)
            + [
                Difference(project_id, run_id, "artifact", p, "missing", "present", None)
                for p in sorted(expected.present - set(paths))
            ]
            + self._compare_times(export, run)
            + ([Difference(project_id, run_id, "run", run_id, "copies", 1, len(copies))] if len(copies) > 1 else [])
        )
        checked = {
            "params": len(expected.params),
            "tags": len(expected.tags),
            "metrics": len(expected.metrics),
            "points": sum(d.count for d in expected.metrics.values()),
            "artifacts": expected.artifact_count(),
        }
        return RunValidation(project_id, run_id, target_id, differences, checked)

    def _key_map(self, target_id: str, paths: list[str]) -> dict:
        """The key map the load recorded in the run (empty when it recorded none)."""
        if KEY_MAP not in paths:
            return {}
        with tempfile.TemporaryDirectory(prefix="mlflow-validate-") as folder:
            return json.loads(self._download(target_id, KEY_MAP, Path(folder)).read_text(encoding="utf-8"))

    def _actual(self, run, paths: list[str], expected: MlflowView) -> MlflowView:
        target_id = run.info.run_id
        actual = MlflowView(params=dict(run.data.params))
        actual.tags = {
            k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") or k == "mlflow.parentRunId"
        }
        for key in sorted(run.data.metrics):
            digest = actual.metrics.setdefault(key, PointDigest())
            for steps, stamps, values in self.metric_history(target_id, key):
                digest.update(steps, stamps, values)
        read = [p for p in paths if p not in expected.present]
        with (
            tempfile.TemporaryDirectory(prefix="mlflow-validate-") as folder,
            ThreadPoolExecutor(self.download_workers) as pool,
        ):
            for path, digest in zip(
                read, pool.map(lambda p: self._read_artifact(target_id, p, expected, Path(folder)), read), strict=True
            ):
                if isinstance(digest, RecordDigest):
                    actual.records[path] = (expected.records[path][0], digest)
                else:
                    actual.files.files[path] = digest
        return actual

    def _read_artifact(self, target_id: str, path: str, expected: MlflowView, workdir: Path):
        local = self._download(target_id, path, Path(tempfile.mkdtemp(dir=workdir)))
        try:
            return (
                parsed_series_file(expected.records[path][0], local) if path in expected.records else file_digest(local)
            )
        finally:
            local.unlink()

    def _download(self, target_id: str, path: str, folder: Path) -> Path:
        with _reading(f"download artifact {path}"):
            return Path(self.client.download_artifacts(target_id, path, str(folder)))

    def _artifact_paths(self, target_id: str, folder: str | None) -> Iterator[str]:
        with _reading(f"list artifacts of run {target_id}"):
            entries = self.client.list_artifacts(target_id, folder)
        for entry in entries:
            yield from self._artifact_paths(target_id, entry.path) if entry.is_dir else [entry.path]

    def metric_history(self, target_id: str, key: str) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """A metric's points as (steps, timestamps, values), one `history_page_size` page at a time (the store
        pages; `MlflowClient.get_metric_history` would gather every page into one list)."""
        store = self.client._tracking_client.store
        token = None
        while True:
            with _reading(f"read metric history {key!r}"):
                page = store.get_metric_history(target_id, key, max_results=self.history_page_size, page_token=token)
            yield (
                np.fromiter((m.step for m in page), dtype=np.int64, count=len(page)),
                np.fromiter((m.timestamp for m in page), dtype=np.int64, count=len(page)),
                np.fromiter((m.value for m in page), dtype=np.float64, count=len(page)),
            )
            token = getattr(page, "token", None)
            if not token:
                return

    def _explain_points(
        self, differences: list[Difference], expected_run: ExpectedRun, target_id: str
    ) -> list[Difference]:
        """For metrics on both sides but different: example points missing from / unexpected in MLflow."""
        for difference in differences:
            if difference.problem not in ("count", "points"):
                continue
            originals = {o for o, k in expected_run.keys.targets.items() if k == difference.key}
            expected = point_set(((s, t, v) for _, s, t, v in expected_run.points(originals)), MAX_FLOAT)
            actual = point_set(self.metric_history(target_id, difference.key), MAX_FLOAT)
            difference.expected = {"count": len(expected), "missing_in_target": point_examples(expected - actual)}
            difference.actual = {"count": len(actual), "unexpected_in_target": point_examples(actual - expected)}
        return differences

    def _compare_records(self, export: ExportedRun, expected: MlflowView, actual: MlflowView) -> list[Difference]:
        differences = []
        for path in sorted(expected.records.keys() & actual.records.keys()):
            want, got = expected.records[path][1], actual.records[path][1]
            if want.to_json() != got.to_json():
                differences.append(
                    Difference(
                        export.project_id, export.run_id, "artifact", path, "records", want.to_json(), got.to_json()
                    )
                )
        missing = [
            Difference(
                export.project_id, export.run_id, "artifact", p, "missing", expected.records[p][1].to_json(), None
            )
            for p in sorted(expected.records.keys() - actual.records.keys())
        ]
        return differences + missing

    def _compare_times(self, export: ExportedRun, run) -> list[Difference]:
        expected = {
            k: v for k, v in {"start_time": export.start_ms, "end_time": export.end_ms}.items() if v is not None
        }
        actual = {
            k: v for k, v in {"start_time": run.info.start_time, "end_time": run.info.end_time}.items() if k in expected
        }
        return compare_mappings(export.project_id, export.run_id, "run", expected, actual)

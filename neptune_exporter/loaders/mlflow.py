"""MLflow target: map an exported run to params, tags, metrics and artifacts and load it idempotently."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import requests
from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from neptune_exporter.errors import (
    InvalidOptionError,
    NeptuneExporterError,
    OutputPathError,
    TargetError,
    TargetUnavailableError,
    TerminalError,
)
from neptune_exporter.loaders.base import (
    MLFLOW,
    ExportedRun,
    KeyMap,
    LoadResult,
    format_step,
    integer_steps,
    open_exported_run,
    run_key,
)
from neptune_exporter.loaders.client_env import apply_client_defaults
from neptune_exporter.model import AttributeType, decimal_array_to_unscaled, iso_utc_ms
from neptune_exporter.storage.exported_run import (
    PROVENANCE_CHECKSUM,
    PROVENANCE_FORK_PARENT,
    PROVENANCE_FORK_STEP,
    PROVENANCE_LOAD_STATE,
    PROVENANCE_PROJECT,
    PROVENANCE_RUN_ID,
    PROVENANCE_STEP_MULTIPLIER,
)

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT_TEMPLATE = "{project}/{experiment}"
TAGS_ATTRIBUTE = "sys/tags"
LONG_VALUES_DIR = "neptune/long_values"
KEY_MAP_ARTIFACT_DIR = "neptune"
KEY_MAP_FILE = "key_map.json"
RESERVED_TAG_PREFIXES = ("mlflow.", "neptune.")


def _batch_limit(limit: int | None) -> int:
    """One of MLflow's per-request limits (`loaders/base.MLFLOW`) as a count; None would mean no limit."""
    return sys.maxsize if limit is None else limit


METRICS_PER_BATCH = _batch_limit(MLFLOW.metrics_per_batch)
PARAMS_PER_BATCH = _batch_limit(MLFLOW.params_per_batch)
TAGS_PER_BATCH = _batch_limit(MLFLOW.tags_per_batch)

TAG_PROJECT, TAG_RUN_ID, TAG_RUN_KEY = PROVENANCE_PROJECT, PROVENANCE_RUN_ID, "neptune.run_key"
TAG_CHECKSUM, TAG_LOAD_STATE, TAG_STEP_MULTIPLIER = (
    PROVENANCE_CHECKSUM,
    PROVENANCE_LOAD_STATE,
    PROVENANCE_STEP_MULTIPLIER,
)
TAG_FORK_PARENT, TAG_FORK_STEP, TAG_FORK_PARENT_TARGET = (
    PROVENANCE_FORK_PARENT,
    PROVENANCE_FORK_STEP,
    "neptune.fork_parent_mlflow_run_id",
)
TAG_PARENT_RUN = "mlflow.parentRunId"
LINK_TAGS = (TAG_FORK_PARENT_TARGET, TAG_PARENT_RUN)

PARAM_TYPES = pa.array(
    [
        t.value
        for t in (
            AttributeType.FLOAT,
            AttributeType.INT,
            AttributeType.STRING,
            AttributeType.BOOL,
            AttributeType.DATETIME,
            AttributeType.STRING_SET,
        )
    ]
)
WHOLE_FILE_TYPES = pa.array([t.value for t in (AttributeType.FILE, AttributeType.FILE_SET, AttributeType.ARTIFACT)])

# ============================================================================= mapping


@dataclass
class Params:
    values: dict[str, str]


@dataclass
class Tags:
    values: dict[str, str]


@dataclass
class MetricChunk:
    names: list[str]  # MLflow keys, indexed by `codes`
    codes: np.ndarray  # per point: index into `names`
    steps: np.ndarray  # int64, already scaled to integers
    timestamps: np.ndarray  # int64 epoch ms
    values: np.ndarray  # float64


@dataclass
class ArtifactItem:
    local: Path  # a file (lands at artifact_dir/<name>) or a folder (its tree lands under artifact_dir)
    artifact_dir: str


def param_text(attribute_type: str, value: Any) -> str:
    """MLflow param text of a single value: string sets joined with ',', datetimes ISO 8601 (ms, UTC)."""
    if attribute_type == AttributeType.STRING_SET.value:
        return ",".join(sorted(value))
    if attribute_type == AttributeType.DATETIME.value:
        return iso_utc_ms(value)
    if attribute_type == AttributeType.FLOAT.value:
        return repr(float(value))
    return str(value)


def truncated_param(text: str, artifact_path: str, limit: int) -> str:
    """A param value cut to `limit` characters that says where the whole value is."""
    pointer = f" …[truncated: {len(text)} chars, full value in artifact {artifact_path}]"
    return text[: limit - len(pointer)] + pointer


def provenance_tags(export: ExportedRun, multiplier: int, load_state: str) -> dict[str, str]:
    """Tags every loaded run carries: where it came from, which export, how steps were scaled, load state."""
    record = export.provenance(multiplier, load_state)
    fork_parent, fork_step = record.pop(TAG_FORK_PARENT), record.pop(TAG_FORK_STEP)
    tags = {key: str(value) for key, value in record.items()}
    tags[TAG_RUN_KEY] = run_key(export.project_id, export.run_id)
    if fork_parent:
        tags[TAG_FORK_PARENT] = fork_parent
        if fork_step is not None:
            tags[TAG_FORK_STEP] = repr(float(fork_step))
    return tags


def _iso_ms(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


class RunMapping:
    """Streams one exported run as MLflow params, tags, metric chunks and artifacts, batch by batch."""

    def __init__(self, export: ExportedRun, multiplier: int, workdir: Path):
        self.export = export
        self.multiplier = multiplier
        self.workdir = Path(workdir)
        self.keys = KeyMap(MLFLOW)
        self.tag_keys = KeyMap(MLFLOW)
        self._pending_params: dict[str, str] = {}
        self._series_files: dict[str, Path] = {}

    def items(self) -> Iterator[Params | Tags | MetricChunk | ArtifactItem]:
        """Everything to send, in bounded chunks; generated files come last, the key map very last."""
        for batch in self.export.batches():
            types = batch.column("attribute_type")
            yield from self._parameters(batch.filter(pc.is_in(types, value_set=PARAM_TYPES)))
            yield from self._metrics(batch.filter(pc.equal(types, AttributeType.FLOAT_SERIES.value)))
            self._text_series(batch.filter(pc.equal(types, AttributeType.STRING_SERIES.value)))
            self._histograms(batch.filter(pc.equal(types, AttributeType.HISTOGRAM_SERIES.value)))
            yield from self._whole_files(batch.filter(pc.is_in(types, value_set=WHOLE_FILE_TYPES)))
            yield from self._file_series(batch.filter(pc.equal(types, AttributeType.FILE_SERIES.value)))
        if self._pending_params:
            yield Params(self._pending_params)
            self._pending_params = {}
        for key, path in sorted(self._series_files.items()):
            yield ArtifactItem(path, key)
        yield self._key_map_artifact()

    # ---------------------------------------------------------------- parameters and tags
    def _parameters(self, rows: pa.RecordBatch) -> Iterator[Params | Tags | ArtifactItem]:
        if not rows.num_rows:
            return
        from neptune_exporter.rows import value_column

        paths, types = rows.column("attribute_path").to_pylist(), rows.column("attribute_type").to_pylist()
        columns = {name: rows.column(name) for name in {value_column(t) for t in set(types)}}
        for i, (path, attribute_type) in enumerate(zip(paths, types, strict=True)):
            value = columns[value_column(attribute_type)][i].as_py()
            if value is None:
                continue
            if path == TAGS_ATTRIBUTE:
                yield Tags({self._tag_key(tag): "" for tag in sorted(value)})
                continue
            yield from self._parameter(path, param_text(attribute_type, value))

    def _parameter(self, path: str, text: str) -> Iterator[Params | ArtifactItem]:
        key = self.keys(path)
        limit = MLFLOW.max_param_length
        if limit is not None and len(text) > limit:
            local = self.workdir / LONG_VALUES_DIR / f"{key}.txt"
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(text, encoding="utf-8")
            artifact_dir = str(Path(LONG_VALUES_DIR, key).parent.as_posix())
            yield ArtifactItem(local, artifact_dir)
            text = truncated_param(text, f"{LONG_VALUES_DIR}/{key}.txt", limit)
        self._pending_params[key] = text
        if len(self._pending_params) >= PARAMS_PER_BATCH:
            yield Params(self._pending_params)
            self._pending_params = {}

    def _tag_key(self, tag: str) -> str:
        key = self.tag_keys(tag)
        if key.startswith(RESERVED_TAG_PREFIXES):
            key = self.tag_keys.renamed[tag] = "neptune.tag." + key
        return key

    # ---------------------------------------------------------------- series
    def _steps(self, rows: pa.RecordBatch) -> np.ndarray:
        steps = rows.column("step")
        if steps.null_count:
            raise TerminalError(
                f"run {self.export.run_id!r}: a series row of {rows.column('attribute_path')[0]} has no step",
                "re-export the run; the part file is not a valid export",
            )
        return integer_steps(decimal_array_to_unscaled(steps), self.multiplier)

    def _timestamps(self, rows: pa.RecordBatch) -> np.ndarray:
        fallback = self.export.start_ms or 0
        ms = pc.cast(rows.column("timestamp"), pa.int64())
        return np.asarray(pc.fill_null(ms, fallback).to_numpy(zero_copy_only=False), dtype=np.int64)

    def _metrics(self, rows: pa.RecordBatch) -> Iterator[MetricChunk]:
        if not rows.num_rows:
            return
        encoded = rows.column("attribute_path").dictionary_encode()
        names = [self.keys(path) for path in encoded.dictionary.to_pylist()]
        codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        values = pc.fill_null(rows.column("float_value"), float("nan")).to_numpy(zero_copy_only=False)
        yield MetricChunk(names, codes, self._steps(rows), self._timestamps(rows), np.asarray(values, dtype=np.float64))

    def _append_lines(self, rows: pa.RecordBatch, file_name: str, render: Callable[[Any], dict]) -> None:
        if not rows.num_rows:
            return
        unscaled = decimal_array_to_unscaled(rows.column("step"))
        stamps = pc.cast(rows.column("timestamp"), pa.int64()).to_pylist()
        paths = rows.column("attribute_path").to_pylist()
        column = rows.column("string_value" if file_name == "series.jsonl" else "histogram_value").to_pylist()
        handles: dict[str, Any] = {}
        try:
            for path, step, stamp, value in zip(paths, unscaled.tolist(), stamps, column, strict=True):
                handle = handles.get(path) or handles.setdefault(path, self._series_handle(path, file_name))
                record = {"step": format_step(step), "timestamp": _iso_ms(stamp), **render(value)}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        finally:
            for handle in handles.values():
                handle.close()

    def _series_handle(self, path: str, file_name: str):
        key = self.keys(path)
        local = self.workdir / "series" / key / file_name
        local.parent.mkdir(parents=True, exist_ok=True)
        self._series_files[key] = local
        return open(local, "a", encoding="utf-8")

    def _text_series(self, rows: pa.RecordBatch) -> None:
        self._append_lines(rows, "series.jsonl", lambda value: {"value": value})

    def _histograms(self, rows: pa.RecordBatch) -> None:
        self._append_lines(rows, "histograms.jsonl", lambda value: dict(value or {}))

    # ---------------------------------------------------------------- files
    def _local_file(self, path: str, value: dict | None) -> Path:
        local = self.export.local_file(path, value)
        if local is None:
            raise OutputPathError(
                f"run {self.export.run_id!r}: the file row of {path} names no file",
                "re-export the run's files",
            )
        return local

    def _whole_files(self, rows: pa.RecordBatch) -> Iterator[ArtifactItem]:
        for path, value in zip(
            rows.column("attribute_path").to_pylist(), rows.column("file_value").to_pylist(), strict=True
        ):
            yield ArtifactItem(self._local_file(path, value), self.keys(path))

    def _file_series(self, rows: pa.RecordBatch) -> Iterator[ArtifactItem]:
        if not rows.num_rows:
            return
        steps = self._steps(rows).tolist()
        for path, step, value in zip(
            rows.column("attribute_path").to_pylist(), steps, rows.column("file_value").to_pylist(), strict=True
        ):
            yield ArtifactItem(self._local_file(path, value), f"{self.keys(path)}/step_{step}")

    def _key_map_artifact(self) -> ArtifactItem:
        local = self.workdir / KEY_MAP_ARTIFACT_DIR / KEY_MAP_FILE
        local.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "attributes": dict(sorted(self.keys.renamed.items())),
            "tags": dict(sorted(self.tag_keys.renamed.items())),
        }
        local.write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
        return ArtifactItem(local, KEY_MAP_ARTIFACT_DIR)


# ============================================================================= talking to MLflow

TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}


def _translate(action: str, error: Exception) -> NeptuneExporterError:
    """MLflow/HTTP failure → typed error: server trouble is transient, refusals are terminal."""
    code = getattr(error, "error_code", "")
    if isinstance(error, requests.RequestException) or code in TRANSIENT_CODES:
        return TargetUnavailableError(
            f"MLflow failed to {action}: {error}", "check the tracking server is up; the load resumes where it stopped"
        )
    return TargetError(
        f"MLflow refused to {action}: {error}", "check the tracking URI and permissions; rerun after fixing"
    )


@contextmanager
def _mlflow(action: str):
    """Translate MLflow and HTTP errors raised inside the block."""
    try:
        yield
    except (MlflowException, requests.RequestException) as error:
        raise _translate(action, error) from error


class BoundedPool:
    """Threads with a bounded number of jobs in flight (memory stays bounded); close() raises the first failure."""

    def __init__(self, workers: int, name: str):
        self.workers = max(1, workers)
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=name)
        self.in_flight: set[Future] = set()

    def submit(self, job: Callable[..., None], *args: Any) -> None:
        if len(self.in_flight) >= 2 * self.workers:
            done, self.in_flight = wait(self.in_flight, return_when="FIRST_COMPLETED")
            for future in done:
                future.result()
        self.in_flight.add(self.pool.submit(job, *args))

    def close(self) -> None:
        try:
            for future in list(self.in_flight):
                future.result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


class ArtifactUploader:
    """Uploads artifacts in parallel."""

    def __init__(self, client: MlflowClient, run_id: str, workers: int):
        self.client, self.run_id = client, run_id
        self.jobs = BoundedPool(workers, "mlflow-artifacts")
        self.files = 0

    def submit(self, item: ArtifactItem) -> None:
        self.jobs.submit(self._upload, item)
        self.files += 1

    def _upload(self, item: ArtifactItem) -> None:
        with _mlflow(f"upload artifact {item.artifact_dir}/{item.local.name}"):
            if item.local.is_dir():
                self.client.log_artifacts(self.run_id, str(item.local), item.artifact_dir)
            else:
                self.client.log_artifact(self.run_id, str(item.local), item.artifact_dir)

    def close(self) -> None:
        self.jobs.close()


class MetricBatcher:
    """Packs metric points of any attributes into MLflow's per-request limit; a few requests in flight."""

    def __init__(self, client: MlflowClient, run_id: str, limit: int, in_flight: int = 2):
        self.client, self.run_id, self.limit = client, run_id, limit
        self.jobs = BoundedPool(in_flight, "mlflow-metrics")
        self.pending: list[Metric] = []
        self.points = 0

    def add(self, chunk: MetricChunk) -> None:
        names = chunk.names
        rows = zip(
            chunk.codes.tolist(), chunk.values.tolist(), chunk.timestamps.tolist(), chunk.steps.tolist(), strict=True
        )
        for code, value, stamp, step in rows:
            self.pending.append(Metric(names[code], value, stamp, step))
            if len(self.pending) >= self.limit:
                self.flush()

    def flush(self) -> None:
        if self.pending:
            self.jobs.submit(self._post, self.pending)
            self.points += len(self.pending)
            self.pending = []

    def _post(self, metrics: list[Metric]) -> None:
        with _mlflow(f"log {len(metrics)} metric points"):
            self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)

    def close(self) -> None:
        """Send what is pending and wait for every request."""
        try:
            self.flush()
        finally:
            self.jobs.close()


def _chunks(mapping: dict[str, str], size: int) -> Iterator[dict[str, str]]:
    items = list(mapping.items())
    for start in range(0, len(items), size):
        yield dict(items[start : start + size])


@dataclass
class MlflowLoader:
    """Loads exported runs into one MLflow tracking store (server URL or sqlite:///)."""

    tracking_uri: str
    experiment_name_template: str = DEFAULT_EXPERIMENT_TEMPLATE
    step_multiplier: int | None = None
    artifact_workers: int = 4
    capabilities = MLFLOW
    _experiments: dict[str, str] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if not self.tracking_uri:
            raise InvalidOptionError(
                "no MLflow tracking URI given", "pass --mlflow-tracking-uri or set MLFLOW_TRACKING_URI"
            )
        check_experiment_template(self.experiment_name_template)
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        """Created on first use, so checks run before MLflow touches a store (it creates SQLite files)."""
        if self._client is None:
            apply_client_defaults("mlflow")  # before the first call (load.make_loader applied them before the import)
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @classmethod
    def from_options(cls, options, settings) -> MlflowLoader:
        """Build from `load.LoadOptions` (+ settings)."""
        return cls(
            tracking_uri=options.mlflow_tracking_uri,
            experiment_name_template=options.experiment_name_template or DEFAULT_EXPERIMENT_TEMPLATE,
            step_multiplier=options.step_multiplier,
            artifact_workers=max(2, settings.workers),
        )

    # ---------------------------------------------------------------- target checks
    def check_target(self) -> None:
        """Fail fast with one clear message when the tracking store cannot be reached or written."""
        uri = self.tracking_uri
        if uri.startswith(("http://", "https://")):
            try:
                requests.get(uri.rstrip("/") + "/health", timeout=10).raise_for_status()
            except requests.RequestException as error:
                raise TargetUnavailableError(
                    f"MLflow tracking server {uri} is not reachable ({type(error).__name__})",
                    "start the server or correct --mlflow-tracking-uri / MLFLOW_TRACKING_URI",
                ) from None
        elif uri.startswith("sqlite:///"):
            folder = Path(uri[len("sqlite:///") :]).expanduser().resolve().parent
            if not folder.is_dir():
                raise OutputPathError(
                    f"folder {folder} of the MLflow SQLite store does not exist",
                    "create it or point the sqlite:/// URI elsewhere",
                )
        elif "://" not in uri or uri.startswith("file:"):
            raise InvalidOptionError(
                f"tracking URI {uri!r} is a file store, which MLflow deprecated",
                "use a server URL (http://host:5000) or a SQLite store (sqlite:///path/mlflow.db)",
            )
        with _mlflow("list experiments"):
            self.client.search_experiments(max_results=1)

    # ---------------------------------------------------------------- experiments and lookups
    def experiment_name(self, export: ExportedRun) -> str:
        return experiment_name(self.experiment_name_template, export.project_id, export.experiment_name)

    def _artifact_location(self, name: str) -> str | None:
        if not self.tracking_uri.startswith("sqlite:///"):
            return None  # the server decides (its --artifacts-destination)
        root = Path(self.tracking_uri[len("sqlite:///") :]).expanduser().resolve().parent / "mlartifacts"
        return (root / run_key("experiment", name)).as_uri()

    @overload
    def experiment_id(self, name: str, create: Literal[True] = True) -> str: ...
    @overload
    def experiment_id(self, name: str, create: bool) -> str | None: ...
    def experiment_id(self, name: str, create: bool = True) -> str | None:
        """Id of the active experiment `name` (created when missing and `create`)."""
        with self._lock:
            if name in self._experiments:
                return self._experiments[name]
            with _mlflow(f"look up experiment {name!r}"):
                experiment = self.client.get_experiment_by_name(name)
            if experiment is None and not create:
                return None
            if experiment is None:
                experiment_id = self._create_experiment(name)
            elif experiment.lifecycle_stage != "active":
                raise TargetError(
                    f"MLflow experiment {name!r} exists but is deleted",
                    "restore it (`mlflow experiments restore`), purge it (`mlflow gc`), or use another --experiment-name-template",
                )
            else:
                experiment_id = experiment.experiment_id
            self._experiments[name] = experiment_id
            return experiment_id

    def _create_experiment(self, name: str) -> str:
        try:
            return self.client.create_experiment(name, artifact_location=self._artifact_location(name))
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise _translate(f"create experiment {name!r}", error) from error
        with _mlflow(f"look up experiment {name!r}"):
            experiment = self.client.get_experiment_by_name(name)
        if experiment is None:  # another load created it and it was deleted since
            raise TargetUnavailableError(
                f"MLflow experiment {name!r} already existed but is gone now", "load again once it is stable"
            )
        return experiment.experiment_id

    def find_runs(self, experiment_id: str, project_id: str, run_id: str) -> list:
        """Active MLflow runs carrying this Neptune run's key tag (a failed lookup raises, never returns [])."""
        query = f"tags.`{TAG_RUN_KEY}` = '{run_key(project_id, run_id)}'"
        with _mlflow(f"search runs of {project_id}/{run_id}"):
            return list(
                self.client.search_runs([experiment_id], query, run_view_type=ViewType.ACTIVE_ONLY, max_results=100)
            )

    def active_copies(self, export: ExportedRun) -> list:
        """Every active MLflow run of this export, complete or not (a clean load leaves exactly one)."""
        experiment_id = self.experiment_id(self.experiment_name(export), create=False)
        return [] if experiment_id is None else self.find_runs(experiment_id, export.project_id, export.run_id)

    def loaded_run(self, export: ExportedRun):
        """The complete target run of this export (None when absent)."""
        return next((r for r in self.active_copies(export) if r.data.tags.get(TAG_LOAD_STATE) == "complete"), None)

    # ---------------------------------------------------------------- load
    def load_run(self, data_root, files_root, project_id: str, run_id: str) -> LoadResult:
        """Load one exported run: skip when complete with this checksum, else delete partial/stale copies and load."""
        export = open_exported_run(Path(data_root), Path(files_root), project_id, run_id)
        if not export.complete:
            raise TerminalError(
                f"the export of run {run_id!r} ({project_id}) is marked failed", "re-export the run, then load again"
            )
        multiplier = export.step_multiplier(self.step_multiplier)
        experiment_id = self.experiment_id(self.experiment_name(export))
        existing = self.find_runs(experiment_id, project_id, run_id)
        wanted = provenance_tags(export, multiplier, "complete")
        current = [r for r in existing if all(r.data.tags.get(k) == v for k, v in wanted.items())]
        for stale in existing[:]:
            if not current or stale.info.run_id != current[0].info.run_id:
                with _mlflow(f"delete partial or outdated run {stale.info.run_id}"):
                    self.client.delete_run(stale.info.run_id)
        if current:
            self._link_fork(current[0], export)
            return LoadResult(project_id, run_id, "skipped", target_run_id=current[0].info.run_id)
        return self._load_new(experiment_id, export, multiplier)

    def _load_new(self, experiment_id: str, export: ExportedRun, multiplier: int) -> LoadResult:
        tags = provenance_tags(export, multiplier, "loading")
        with _mlflow(f"create run {export.run_id!r}"):
            run = self.client.create_run(experiment_id, start_time=export.start_ms, tags=tags, run_name=export.run_id)
        target_id = run.info.run_id
        try:
            points, files = self._upload(target_id, export, multiplier)
            self._link_fork(run, export)
            with _mlflow(f"finish run {target_id}"):
                self.client.set_terminated(target_id, RunStatus.to_string(RunStatus.FINISHED), end_time=export.end_ms)
                self.client.set_tag(target_id, TAG_LOAD_STATE, "complete", synchronous=True)
        except NeptuneExporterError:
            self._mark_failed(target_id)
            raise
        return LoadResult(
            export.project_id, export.run_id, "loaded", target_run_id=target_id, points=points, files=files
        )

    def _upload(self, target_id: str, export: ExportedRun, multiplier: int) -> tuple[int, int]:
        metrics = MetricBatcher(self.client, target_id, METRICS_PER_BATCH)
        with tempfile.TemporaryDirectory(prefix="mlflow-load-") as workdir:
            uploader = ArtifactUploader(self.client, target_id, self.artifact_workers)
            try:
                for item in RunMapping(export, multiplier, Path(workdir)).items():
                    if isinstance(item, MetricChunk):
                        metrics.add(item)
                    elif isinstance(item, ArtifactItem):
                        uploader.submit(item)
                    else:
                        self._log_entities(target_id, item)
            finally:
                try:
                    metrics.close()
                finally:
                    uploader.close()
        return metrics.points, uploader.files

    def _log_entities(self, target_id: str, item: Params | Tags) -> None:
        if isinstance(item, Params):
            params = [Param(k, v) for k, v in item.values.items()]
            with _mlflow(f"log {len(params)} params"):
                self.client.log_batch(target_id, params=params, synchronous=True)
            return
        for chunk in _chunks(item.values, TAGS_PER_BATCH):
            with _mlflow(f"log {len(chunk)} tags"):
                self.client.log_batch(target_id, tags=[RunTag(k, v) for k, v in chunk.items()], synchronous=True)

    def _mark_failed(self, target_id: str) -> None:
        """Best effort: label a run whose load failed (a later load deletes and redoes it either way)."""
        try:
            self.client.set_tag(target_id, TAG_LOAD_STATE, "failed", synchronous=True)
            self.client.set_terminated(target_id, RunStatus.to_string(RunStatus.FAILED))
        except (MlflowException, requests.RequestException) as error:
            log.warning("could not mark MLflow run %s as failed: %s", target_id, error)

    def _link_fork(self, run, export: ExportedRun) -> None:
        """Point a forked run at its parent's MLflow run when the parent is loaded."""
        parent_id = self.fork_parent_target(export)
        if parent_id is None or run.data.tags.get(TAG_FORK_PARENT_TARGET) == parent_id:
            return
        with _mlflow(f"link run {run.info.run_id} to its fork parent"):
            self.client.log_batch(run.info.run_id, tags=[RunTag(k, parent_id) for k in LINK_TAGS], synchronous=True)

    def fork_parent_target(self, export: ExportedRun) -> str | None:
        """MLflow run id of the loaded fork parent (None when not forked, not exported or not loaded)."""
        if not export.fork_parent:
            return None
        try:
            parent = open_exported_run(export.data_root, export.files_root, export.project_id, export.fork_parent)
        except OutputPathError:
            return None
        loaded = self.loaded_run(parent)
        return loaded.info.run_id if loaded else None


# ============================================================================= naming


def check_experiment_template(template: str) -> None:
    """Raise InvalidOptionError unless the template uses only {project} and {experiment}."""
    try:
        template.format(project="p", experiment="e")
    except (KeyError, IndexError, ValueError) as error:
        raise InvalidOptionError(
            f"--experiment-name-template {template!r} is invalid ({error})",
            "use only the fields {project} and {experiment}, e.g. '{project}/{experiment}'",
        ) from None


def experiment_name(template: str, project_id: str, experiment: str | None) -> str:
    """MLflow experiment name; runs without a Neptune experiment go to the template's project part alone."""
    if experiment:
        return template.format(project=project_id, experiment=experiment)
    without = template.replace("/{experiment}", "").replace("{experiment}", "")
    return without.format(project=project_id).strip("/ ") or project_id

"""MlflowLoader: exported runs loaded into one MLflow tracking store idempotently (experiments, runs, forks)."""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

import requests
from mlflow.entities import Param, RunStatus, RunTag, ViewType
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
from neptune_exporter.loaders.base import MLFLOW, ExportedRun, LoadResult, open_exported_run, run_key
from neptune_exporter.loaders.client_env import apply_client_defaults
from neptune_exporter.loaders.mlflow.client import (
    mlflow_errors,
    sqlite_store_path,
    store_lock,
    tracking_client,
    translate_error,
)
from neptune_exporter.loaders.mlflow.mapping import (
    METRICS_PER_BATCH,
    TAGS_PER_BATCH,
    ArtifactItem,
    MetricChunk,
    Params,
    RunMapping,
    Tags,
)
from neptune_exporter.loaders.mlflow.pacing import AdaptiveLimit
from neptune_exporter.loaders.mlflow.provenance import (
    LINK_TAGS,
    TAG_FORK_PARENT_TARGET,
    TAG_LOAD_STATE,
    TAG_RUN_KEY,
    provenance_tags,
)
from neptune_exporter.loaders.mlflow.sqlite_metrics import SqliteMetricWriter
from neptune_exporter.loaders.mlflow.writers import ArtifactUploader, MetricBatcher, chunks_of

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT_TEMPLATE = "{project}/{experiment}"


@dataclass
class MlflowLoader:
    """Loads exported runs into one MLflow tracking store (server URL or sqlite:///)."""

    tracking_uri: str
    experiment_name_template: str = DEFAULT_EXPERIMENT_TEMPLATE
    step_multiplier: int | None = None
    artifact_workers: int = 4
    metric_requests_ceiling: int = 8  # at most this many metric requests in flight (pacing finds how many help)
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
        self._pacing = AdaptiveLimit(self.metric_requests_ceiling)

    @property
    def client(self) -> MlflowClient:
        """Created on first use, so checks run before MLflow touches a store (it creates SQLite files)."""
        if self._client is None:
            apply_client_defaults("mlflow")  # before the first call (load.make_loader applied them before the import)
            self._client = tracking_client(self.tracking_uri)
        return self._client

    @classmethod
    def from_options(cls, options, settings) -> MlflowLoader:
        """Build from `load.LoadOptions` (+ settings)."""
        return cls(
            tracking_uri=options.mlflow_tracking_uri,
            experiment_name_template=options.experiment_name_template or DEFAULT_EXPERIMENT_TEMPLATE,
            step_multiplier=options.step_multiplier,
            artifact_workers=max(2, settings.workers),
            metric_requests_ceiling=2 * max(1, settings.workers),
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
        with mlflow_errors("list experiments"):
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
            with mlflow_errors(f"look up experiment {name!r}"):
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
                raise translate_error(f"create experiment {name!r}", error) from error
        with mlflow_errors(f"look up experiment {name!r}"):
            experiment = self.client.get_experiment_by_name(name)
        if experiment is None:  # another load created it and it was deleted since
            raise TargetUnavailableError(
                f"MLflow experiment {name!r} already existed but is gone now", "load again once it is stable"
            )
        return experiment.experiment_id

    def find_runs(self, experiment_id: str, project_id: str, run_id: str) -> list:
        """Active MLflow runs carrying this Neptune run's key tag (a failed lookup raises, never returns [])."""
        query = f"tags.`{TAG_RUN_KEY}` = '{run_key(project_id, run_id)}'"
        with mlflow_errors(f"search runs of {project_id}/{run_id}"):
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
        left_out = export.series_beyond_range(multiplier) if self.step_multiplier else {}
        return self._load_or_skip(export.without(left_out), multiplier).failed_for_series(left_out)

    def _load_or_skip(self, export: ExportedRun, multiplier: int) -> LoadResult:
        project_id, run_id = export.project_id, export.run_id
        experiment_id = self.experiment_id(self.experiment_name(export))
        existing = self.find_runs(experiment_id, project_id, run_id)
        wanted = provenance_tags(export, multiplier, "complete")
        current = [r for r in existing if all(r.data.tags.get(k) == v for k, v in wanted.items())]
        for stale in existing[:]:
            if not current or stale.info.run_id != current[0].info.run_id:
                with mlflow_errors(f"delete partial or outdated run {stale.info.run_id}"):
                    self.client.delete_run(stale.info.run_id)
        if current:
            self._link_fork(current[0], export)
            return LoadResult(project_id, run_id, "skipped", target_run_id=current[0].info.run_id)
        return self._load_new(experiment_id, export, multiplier)

    def _load_new(self, experiment_id: str, export: ExportedRun, multiplier: int) -> LoadResult:
        tags = provenance_tags(export, multiplier, "loading")
        with mlflow_errors(f"create run {export.run_id!r}"):
            run = self.client.create_run(experiment_id, start_time=export.start_ms, tags=tags, run_name=export.run_id)
        target_id = run.info.run_id
        try:
            points, files = self._upload(target_id, export, multiplier)
            self._link_fork(run, export)
            with mlflow_errors(f"finish run {target_id}"):
                self.client.set_terminated(target_id, RunStatus.to_string(RunStatus.FINISHED), end_time=export.end_ms)
                self.client.set_tag(target_id, TAG_LOAD_STATE, "complete", synchronous=True)
        except NeptuneExporterError:
            self._mark_failed(target_id)
            raise
        return LoadResult(
            export.project_id, export.run_id, "loaded", target_run_id=target_id, points=points, files=files
        )

    def _metric_writer(self, target_id: str) -> MetricBatcher | SqliteMetricWriter:
        """Bulk inserts into a SQLite store (one writer in this process); batches of MLflow's limit to a server."""
        path = sqlite_store_path(self.tracking_uri)
        if path is None:
            return MetricBatcher(self.client, target_id, METRICS_PER_BATCH, self._pacing)
        return SqliteMetricWriter(self.client, target_id, store_lock(path))

    def _upload(self, target_id: str, export: ExportedRun, multiplier: int) -> tuple[int, int]:
        metrics = self._metric_writer(target_id)
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
            with mlflow_errors(f"log {len(params)} params"):
                self.client.log_batch(target_id, params=params, synchronous=True)
            return
        for chunk in chunks_of(item.values, TAGS_PER_BATCH):
            with mlflow_errors(f"log {len(chunk)} tags"):
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
        with mlflow_errors(f"link run {run.info.run_id} to its fork parent"):
            self.client.log_batch(run.info.run_id, tags=[RunTag(k, parent_id) for k in LINK_TAGS], synchronous=True)

    def fork_parent_target(self, export: ExportedRun) -> str | None:
        """MLflow run id of the loaded fork parent (None when not forked, not exported or not loaded)."""
        if not export.fork_parent:
            return None
        try:
            parent = open_exported_run(
                export.data_root, export.files_root, export.project_id, export.fork_parent, verify=False
            )
        except OutputPathError:
            return None
        loaded = self.loaded_run(parent)
        return loaded.info.run_id if loaded else None


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

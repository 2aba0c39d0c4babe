"""ZenmlLoader: exported runs become Model Versions of the ZenML local store under --zenml-dir, idempotently."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neptune_exporter.errors import CorruptPartError, InvalidOptionError, TargetError
from neptune_exporter.loaders.base import ExportedRun, LoadResult, open_exported_run, run_key
from neptune_exporter.loaders.zenml.content import RunContent
from neptune_exporter.loaders.zenml.names import ZENML, model_name, version_name
from neptune_exporter.storage.exported_run import (
    PROVENANCE_CHECKSUM,
    PROVENANCE_FORK_PARENT,
    PROVENANCE_FORK_STEP,
    PROVENANCE_LOAD_STATE,
    PROVENANCE_PROJECT,
    PROVENANCE_RUN_ID,
)
from neptune_exporter.storage.zenml_store import (
    artifact_root,
    check_writable,
    equals,
    folder_registrar,
    listed,
    require_zenml,
    zenml_client,
    zenml_dir,
    zenml_errors,
)

log = logging.getLogger(__name__)

RUN_KEY = "neptune.run_key"
EXPERIMENT = "neptune.experiment"
KEY_MAP = "neptune.key_map"
RUNS_FOLDER = "neptune"  # <artifact store>/neptune/<run key>/a<n>: one folder per artifact


def description(project_id: str, run_id: str) -> str:
    """The Model Version's description: marks it as this Neptune run's (set when created, before any metadata)."""
    return f"Neptune run {run_id} of project {project_id}, loaded by neptune-exporter"


@dataclass
class ZenmlLoader:
    """Loads exported runs into the ZenML local store in `folder`: project → Model, run → Model Version."""

    folder: Path
    model_template: str | None = None
    step_multiplier: int | None = None
    capabilities = ZENML
    _models: dict[str, Any] = field(default_factory=dict, repr=False)  # model name → id (under the store's lock)

    @classmethod
    def from_options(cls, options, settings=None) -> ZenmlLoader:
        """Build from `load.LoadOptions`."""
        return cls(zenml_dir(options.zenml_dir), options.zenml_model_template, options.step_multiplier)

    # ---------------------------------------------------------------- verbs
    def check_target(self) -> None:
        """Fail fast: options ZenML cannot use, ZenML not installed, the folder not writable; then open the store
        (created on first use)."""
        if self.step_multiplier is not None:
            raise InvalidOptionError(
                "--step-multiplier does not apply to --target zenml",
                "drop it: ZenML series keep their exact decimal steps (Parquet decimal128(18,6))",
            )
        model_name(self.model_template, "workspace/project")
        require_zenml()
        check_writable(self.folder)
        with zenml_client(self.folder) as client, zenml_errors(f"open the local store in {self.folder}"):
            artifact_root(client).mkdir(parents=True, exist_ok=True)

    def load_run(self, data_root, files_root, project_id: str, run_id: str) -> LoadResult:
        """Load one run: skip it when complete with this export checksum, else clear what a partial or outdated load
        left and load it again."""
        export = open_exported_run(Path(data_root), Path(files_root), project_id, run_id)
        if not export.complete:
            raise CorruptPartError(f"the export of run {run_id!r} failed", "export the run again", run=run_id)
        model, version = model_name(self.model_template, project_id), version_name(run_id)
        with zenml_client(self.folder) as client, zenml_errors(f"look up model version {model}/{version}"):
            existing = self._version(client, model, version)
            folder = artifact_root(client) / RUNS_FOLDER / run_key(project_id, run_id)
            if existing is not None and self._complete(existing, export):
                return LoadResult(project_id, run_id, "skipped", target_run_id=str(existing.id))
            self._discard(client, existing, folder)
            model_id = self._model(client, model, project_id)
            with zenml_errors(f"create model version {model}/{version}"):
                created = client.create_model_version(
                    model_id, name=version, description=description(project_id, run_id)
                )
            self._log(created.id, self._provenance(export, "loading"))
        content = RunContent(export, folder, model).read()
        with zenml_client(self.folder) as client, zenml_errors(f"log the metadata and artifacts of {model}/{version}"):
            self._write(client, created, content, version)
            self._log(created.id, {PROVENANCE_LOAD_STATE: "complete"})
        return LoadResult(
            project_id, run_id, "loaded", target_run_id=str(created.id), points=content.points, files=content.files
        )

    # ---------------------------------------------------------------- state
    def _version(self, client: Any, model: str, version: str) -> Any | None:
        """The Model Version of this name (hydrated: its metadata), None when absent."""
        if model not in self._models:
            models = client.list_models(name=equals(model)).items
            if not models:
                return None
            self._models[model] = models[0].id
        found = client.list_model_versions(self._models[model], name=equals(version), hydrate=True).items
        return found[0] if found else None

    def _complete(self, existing: Any, export: ExportedRun) -> bool:
        """True when the version holds this export completely; TargetError when it is not this run's at all."""
        metadata = existing.run_metadata or {}
        ours = existing.description == description(export.project_id, export.run_id)
        if not ours or metadata.get(PROVENANCE_PROJECT, export.project_id) != export.project_id:
            raise TargetError(
                f"ZenML model version {existing.model.name}/{existing.name} exists and was not loaded from Neptune "
                f"run {export.run_id} of {export.project_id}",
                "delete it, or load into another model (--zenml-model-template) or --zenml-dir",
                run=export.run_id,
            )
        return (
            metadata.get(PROVENANCE_LOAD_STATE) == "complete" and metadata.get(PROVENANCE_CHECKSUM) == export.checksum
        )

    def _discard(self, client: Any, existing: Any | None, folder: Path) -> None:
        """Remove what an earlier load of the run left: its artifact versions, their folder, its model version."""
        with zenml_errors(f"remove the partial or outdated load in {folder}"):
            stale = set()
            if existing is not None or folder.exists():  # a first load (no version, no folder) has nothing to remove
                stale = {a.id for a in listed(client.list_artifact_versions, uri=f"startswith:{folder}/")}
            if existing is not None:
                stale |= {a.id for a in listed(client.list_artifact_versions, model_version_id=existing.id)}
            for artifact_id in stale:  # the store's own call: Client's re-lists every unused version per delete
                client.zen_store.delete_artifact_version(artifact_id)
            if folder.exists():
                shutil.rmtree(folder)
            if existing is not None:
                log.info("redoing ZenML model version %s/%s (partial or outdated)", existing.model.name, existing.name)
                client.delete_model_version(existing.id)

    def _model(self, client: Any, name: str, project_id: str) -> Any:
        """The Model's id, created when missing (`_version` looked it up first)."""
        if name not in self._models:
            with zenml_errors(f"create model {name}"):
                created = client.create_model(name=name, description=f"Neptune project {project_id} (neptune-exporter)")
            self._models[name] = created.id
        return self._models[name]

    # ---------------------------------------------------------------- writing
    def _provenance(self, export: ExportedRun, load_state: str) -> dict[str, Any]:
        record = {
            PROVENANCE_PROJECT: export.project_id,
            PROVENANCE_RUN_ID: export.run_id,
            RUN_KEY: run_key(export.project_id, export.run_id),
            PROVENANCE_CHECKSUM: export.checksum,
            PROVENANCE_LOAD_STATE: load_state,
            EXPERIMENT: export.experiment_name,
            PROVENANCE_FORK_PARENT: export.fork_parent,
            PROVENANCE_FORK_STEP: None if export.fork_step is None else float(export.fork_step),
        }
        return {key: value for key, value in record.items() if value is not None}  # ZenML stores no null

    def _write(self, client: Any, created: Any, content: RunContent, version: str) -> None:
        """Metadata values (by namespace), the key map and the artifacts' facts, then each artifact registered and
        linked to the version."""
        calls = content.metadata_calls() or [{}]
        calls[0][KEY_MAP] = dict(sorted(content.keys.renamed.items()))  # every top-level key is claimed by now
        for call in calls:
            self._log(created.id, call)
        register = folder_registrar(client)
        for artifact in content.artifacts.values():
            register(artifact.folder, artifact.name, version, created.id)

    def _log(self, version_id: Any, metadata: dict[str, Any]) -> None:
        from zenml import log_metadata

        log_metadata(metadata=metadata, model_version_id=version_id)

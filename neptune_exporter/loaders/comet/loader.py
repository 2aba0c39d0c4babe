"""CometLoader: exported runs become Comet experiments, one offline archive per run under --comet-dir (uploaded
later with `comet upload`), or written online when COMET_API_KEY is set; idempotent and resumable."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from neptune_exporter.errors import TargetError, TargetUnavailableError, TerminalError
from neptune_exporter.loaders.base import ExportedRun, LoadResult, open_loadable
from neptune_exporter.loaders.comet.target import CometTarget, experiment_key, require_comet
from neptune_exporter.loaders.comet.writer import COMET, CometRunWriter, Written
from neptune_exporter.storage.comet_archive import archive_state
from neptune_exporter.storage.exported_run import PROVENANCE_FORK_STEP, PROVENANCE_STEP_MULTIPLIER

log = logging.getLogger(__name__)

# comet_ml keeps one live experiment per process: starting one ends the one before (unfinished, its archive torn).
# Runs are therefore written one at a time; reading exports and checking archives still run in parallel.
ONE_EXPERIMENT = threading.Lock()
OFFLINE_QUEUE_TIMEOUT_S = 0.02

# no code, git, environment, console or system metrics: the experiment holds the Neptune run and nothing else
QUIET_EXPERIMENT = dict(
    log_code=False,
    log_graph=False,
    auto_param_logging=False,
    auto_metric_logging=False,
    parse_args=False,
    auto_output_logging=False,
    log_env_details=False,
    log_git_metadata=False,
    log_git_patch=False,
    log_env_gpu=False,
    log_env_host=False,
    log_env_cpu=False,
    log_env_network=False,
    log_env_disk=False,
    display_summary_level=0,
)


class CometLoader:
    """Loads exported runs into Comet with the shared loader verbs."""

    capabilities = COMET

    def __init__(self, target: CometTarget, step_multiplier: int | None = None):
        self.target = target
        self.step_multiplier = step_multiplier

    @classmethod
    def from_options(cls, options, settings=None) -> CometLoader:
        """Build from `load.LoadOptions` (a bad --comet-project-template is refused here, before any work)."""
        return cls(CometTarget.from_options(options), step_multiplier=options.step_multiplier)

    def next_steps(self) -> list[str]:
        """What the user runs next: the `comet upload` line for offline archives."""
        return [] if self.target.online else [f"Upload the offline archives with: {self.target.upload_command()}"]

    # -- verbs

    def check_target(self) -> None:
        """comet-ml installed; the archive folder writable (offline archives and staging live there)."""
        self.target.apply_env()  # before comet_ml is imported: it reads its logging settings then
        require_comet()
        self.target.check_writable()

    def load_run(self, data_root, files_root, project_id: str, run_id: str) -> LoadResult:
        """Load one run: skip when its archive (or online experiment) is complete for this export, else (re)load."""
        key = experiment_key(project_id, run_id)
        result = LoadResult(project_id, run_id, "loaded", target_run_id=key)
        try:
            exported, multiplier, left_out = open_loadable(
                data_root, files_root, project_id, run_id, self.step_multiplier
            )
            wanted = {"checksum": exported.checksum, "multiplier": multiplier}
            if self._already_loaded(key, wanted):
                result.status = "skipped"
                return result.failed_for_series(left_out)
            written = self._load(exported.without(left_out), key, multiplier)
            result.points, result.files = written.points, written.files
            result.failed_for_series(left_out)
        except TerminalError as error:
            result.status, result.error = "failed", error.to_record()
        return result

    # -- what is already there

    def _already_loaded(self, key: str, wanted: dict) -> bool:
        if self.target.online:
            return self._online_loaded(key, wanted)
        archive = self.target.archive(key)
        state = archive_state(archive)
        if state.state == "complete":
            others = state.others or {}
            if state.checksum == wanted["checksum"] and others.get(PROVENANCE_STEP_MULTIPLIER) == wanted["multiplier"]:
                return True
            kept = self.target.superseded(key, state.checksum or "", others.get(PROVENANCE_STEP_MULTIPLIER))
            kept.parent.mkdir(parents=True, exist_ok=True)
            os.replace(archive, kept)  # an older export's complete archive is kept, never deleted
            log.info("archive %s is of an older export (or step multiplier): kept as %s", archive, kept)
        elif state.state == "incomplete":
            log.info("archive %s is incomplete (%s): it is redone", archive, state.why)
            archive.unlink()
        return False

    def _online_loaded(self, key: str, wanted: dict) -> bool:
        """Online: True when the experiment of this key is complete for this export; a partial one is deleted (to be
        redone); a complete one of another export is kept and the run refused (TargetError naming it)."""
        comet_ml = require_comet()
        with comet_errors(comet_ml, f"look up Comet experiment {key}"):
            api = comet_ml.API(api_key=self.target.api_key)
            experiment = api.get_experiment_by_key(key)
            if experiment is None:
                return False
            others = {o["name"]: o.get("valueCurrent") for o in experiment.get_others_summary()}
            current = (others.get("neptune.export_checksum"), str(others.get(PROVENANCE_STEP_MULTIPLIER)))
            if others.get("neptune.load_state") == "complete":
                if current == (wanted["checksum"], str(wanted["multiplier"])):
                    return True
                raise TargetError(
                    f"Comet experiment {key} holds a complete load of another export of this run (checksum "
                    f"{current[0]}, step multiplier {current[1]})",
                    f"archive or delete experiment {key} in Comet to load this export, or load offline (--comet-dir)",
                )
            api.delete_experiment(key)
        return False

    # -- loading

    def _load(self, exported: ExportedRun, key: str, multiplier: int) -> Written:
        comet_ml = require_comet()
        staging = self.target.staging(key)
        shutil.rmtree(staging, ignore_errors=True)  # a killed load's leftovers
        staging.mkdir(parents=True)
        try:
            with ONE_EXPERIMENT, tempfile.TemporaryDirectory(dir=staging) as workdir:
                experiment = self._experiment(comet_ml, exported, key, staging)
                try:
                    writer = CometRunWriter(experiment, exported, multiplier, Path(workdir))
                    written = writer.write()
                    writer.finish(self._provenance(exported, multiplier))
                finally:
                    experiment.end()  # writes the archive; without the `complete` marker it is redone later
            if not self.target.online:
                self._publish(key, staging)
            return written
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _provenance(exported: ExportedRun, multiplier: int) -> dict:
        record = {**exported.provenance(multiplier, "complete"), "neptune.experiment": exported.experiment_name}
        fork_step = record[PROVENANCE_FORK_STEP]
        record[PROVENANCE_FORK_STEP] = None if fork_step is None else float(fork_step)
        return record

    def _experiment(self, comet_ml, exported: ExportedRun, key: str, staging: Path):
        project = self.target.project_name(exported.project_id)
        try:
            if self.target.online:
                experiment = comet_ml.Experiment(
                    api_key=self.target.api_key,
                    project_name=project,
                    workspace=self.target.workspace,
                    experiment_key=key,
                    **QUIET_EXPERIMENT,
                )
            else:
                experiment = comet_ml.OfflineExperiment(
                    project_name=project,
                    workspace=self.target.workspace,
                    offline_directory=str(staging),
                    experiment_key=key,
                    **QUIET_EXPERIMENT,
                )
        except (ValueError, OSError, comet_ml.exceptions.CometException) as error:
            raise TargetError(
                f"Comet refused experiment {key} of run {exported.run_id!r}: {error}",
                "check --comet-dir, --comet-workspace and COMET_API_KEY",
            ) from None
        experiment.set_name(exported.run_id)
        streamer = getattr(experiment, "streamer", None)
        if not self.target.online and hasattr(streamer, "queue_timeout"):
            # comet_ml's offline writer waits up to 1 s for each message; end() then waits that long for it to stop
            streamer.queue_timeout = OFFLINE_QUEUE_TIMEOUT_S  # type: ignore[union-attr]
        return experiment

    def _publish(self, key: str, staging: Path) -> None:
        """Move the finished archive into --comet-dir (atomic), once it reads back complete."""
        staged = staging / f"{key}.zip"
        state = archive_state(staged)
        if state.state != "complete":
            raise TargetUnavailableError(
                f"the Comet archive of experiment {key} is not complete after the run ended ({state.why or state.state})",
                "load again (the unfinished archive is redone); check free space under --comet-dir",
            )
        os.replace(staged, self.target.archive(key))


@contextmanager
def comet_errors(comet_ml, what: str) -> Iterator[None]:
    """Comet's REST errors as typed ones: a refused key is terminal, anything else (network, 5xx) transient."""
    import requests

    try:
        yield
    except comet_ml.exceptions.InvalidAPIKey as error:
        raise TargetError(f"Comet refused the API key to {what}: {error}", "check COMET_API_KEY") from None
    except (comet_ml.exceptions.CometException, requests.RequestException, OSError) as error:
        raise TargetUnavailableError(
            f"Comet failed to {what}: {error}", "retry; check COMET_URL_OVERRIDE and the server's health"
        ) from error

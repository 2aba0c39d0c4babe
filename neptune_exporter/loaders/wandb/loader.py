"""WandbLoader: exported runs become W&B runs with the shared loader verbs (check, load one run idempotently)."""

from __future__ import annotations

import logging
import shutil
from functools import partial
from typing import Any

from neptune_exporter.errors import (
    InvalidOptionError,
    TargetError,
    TargetUnavailableError,
    TerminalError,
)
from neptune_exporter.loaders.base import WANDB, ExportedRun, KeyMap, LoadResult, open_loadable
from neptune_exporter.loaders.wandb.artifacts import artifact_specs
from neptune_exporter.loaders.wandb.export_reader import RunContent, mapped_run
from neptune_exporter.loaders.wandb.history import HistoryWriter, write_history
from neptune_exporter.loaders.wandb.names import wandb_project_name, wandb_run_id
from neptune_exporter.loaders.wandb.offline import CHECKSUM, LOAD_STATE, await_offline_log, offline_prior_state
from neptune_exporter.loaders.wandb.online import PriorState, fork_point, online_prior_state
from neptune_exporter.loaders.wandb.target import WandbTarget, check_writable

log = logging.getLogger(__name__)


class WandbLoader:
    """Loads exported runs into W&B with the shared loader verbs."""

    capabilities = WANDB

    def __init__(self, target: WandbTarget, step_multiplier: int | None = None, spill_chunk_rows: int = 1_000_000):
        self.target = target
        self.step_multiplier = step_multiplier
        self.spill_chunk_rows = spill_chunk_rows

    @classmethod
    def from_options(cls, options, settings=None) -> WandbLoader:
        """Build from `load.LoadOptions`. Runs may load concurrently from threads: wandb 0.31 keeps one
        run per `wandb.init(reinit="create_new")` and does the I/O in its own wandb-core process."""
        target = WandbTarget.from_env(options.wandb_dir, options.wandb_entity, options.wandb_project_template)
        return cls(target, step_multiplier=options.step_multiplier)

    def next_steps(self) -> list[str]:
        """What the user runs next: the `wandb sync` line for offline runs."""
        return [] if self.target.online else [f"Upload the offline runs with: {self.target.sync_command()}"]

    # -- verbs

    def check_target(self) -> None:
        """Online needs an entity; the wandb dir must be writable (offline runs and artifact staging live there)."""
        if self.target.online and not self.target.entity:
            raise InvalidOptionError(
                "loading to W&B online needs an entity (WANDB_API_KEY is set)",
                "pass --entity YOUR_TEAM (or set WANDB_ENTITY), or unset WANDB_API_KEY to write offline runs",
            )
        self.target.project_template and wandb_project_name("ws/p", self.target.project_template)
        check_writable(self.target.wandb_dir)
        self.target.apply_env()

    def load_run(self, data_root, files_root, project_id: str, run_id: str) -> LoadResult:
        """Load one run: skip when complete with the same export checksum, otherwise (re)load it."""
        target_run_id = wandb_run_id(project_id, run_id)
        result = LoadResult(project_id, run_id, "loaded", target_run_id=target_run_id)
        try:
            exported, multiplier, left_out = open_loadable(
                data_root, files_root, project_id, run_id, self.step_multiplier
            )
            prior = self._prior_state(exported, target_run_id)
            self._discard(prior)
            if prior.state == "complete":
                result.status = "skipped"
                return result.failed_for_series(left_out)
            result.points, result.files = self._load(exported.without(left_out), target_run_id, prior, multiplier)
            result.failed_for_series(left_out)
        except TerminalError as error:
            result.status, result.error = "failed", error.to_record()
        except _wandb_errors() as error:
            raise TargetUnavailableError(
                f"W&B failed while loading run {run_id!r}: {error}",
                "retry; check WANDB_BASE_URL and the server's health",
            ) from error
        return result

    # -- state

    def project_name(self, project_id: str) -> str:
        return wandb_project_name(project_id, self.target.project_template)

    def _prior_state(self, exported: ExportedRun, target_run_id: str) -> PriorState:
        if self.target.online:
            return online_prior_state(self, exported, target_run_id)
        return offline_prior_state(self.target.wandb_dir, target_run_id, exported.checksum)

    def _discard(self, prior: PriorState) -> None:
        for folder in prior.folders:
            shutil.rmtree(folder, ignore_errors=False)

    # -- loading

    def _load(self, exported: ExportedRun, target_run_id: str, prior: PriorState, multiplier: int) -> tuple[int, int]:
        staging_root = self.target.data_dir() / "neptune-staging"
        with mapped_run(exported, staging_root, self.spill_chunk_rows) as (content, spill, keymap, staging):
            run = self._init_run(exported, target_run_id, content, keymap, multiplier, prior)
            try:
                history = write_history(run, content, spill, multiplier, staging, prior.next_step)
                self._log_artifacts(run, target_run_id, content, history)
                run.summary[LOAD_STATE] = "complete"
                run.summary[CHECKSUM] = exported.checksum
                run.config.update({LOAD_STATE: "complete"}, allow_val_change=True)
            except BaseException:
                run.finish(exit_code=1)
                raise
            run.finish()
        if not self.target.online:
            await_offline_log(self.target.wandb_dir, target_run_id, exported.checksum)
        return history.points, content.file_count

    def _init_run(
        self,
        exported: ExportedRun,
        target_run_id: str,
        content: RunContent,
        keymap: KeyMap,
        multiplier: int,
        prior: PriorState,
    ):
        import wandb

        config = dict(content.config)
        config.update(self._provenance(exported, multiplier, content))
        config["neptune.key_map"] = dict(keymap.renamed)
        settings = wandb.Settings(
            mode="online" if self.target.online else "offline",
            root_dir=str(self.target.wandb_dir),
            console="off",
            save_code=False,
            disable_git=True,
            silent=True,
            x_disable_stats=True,
            x_disable_meta=True,
            x_disable_machine_info=True,
        )
        # set only when given: a setting passed explicitly (even its default) overrides WANDB_BASE_URL / WANDB_API_KEY
        if self.target.base_url:
            settings.base_url = self.target.base_url
        if self.target.api_key:
            settings.api_key = self.target.api_key
        init = partial(
            wandb.init,
            entity=self.target.entity,
            project=self.project_name(exported.project_id),
            id=target_run_id,
            name=exported.run_id,
            group=exported.experiment_name or None,
            tags=content.tags,
            config=config,
            allow_val_change=True,
            reinit="create_new",
            settings=settings,
            resume="allow" if self.target.online and prior.state == "partial" else None,
        )
        fork_from = self._fork_from(exported) if prior.state == "absent" else None
        try:
            if fork_from:
                try:
                    return init(fork_from=fork_from)
                except (wandb.errors.CommError, wandb.errors.UsageError) as error:
                    if "fork" not in str(error).lower():
                        raise
                    log.info("W&B server does not fork runs (%s); the parent stays in config only", error)
            return init()
        except (wandb.errors.CommError, wandb.errors.UsageError) as error:
            raise TargetError(
                f"W&B refused run {target_run_id}: {error}", "check --entity, WANDB_API_KEY and WANDB_BASE_URL"
            ) from None

    def _fork_from(self, exported: ExportedRun) -> str | None:
        """`<parent id>?_step=<fork step>` when online and the parent is already in W&B (else None)."""
        if not (self.target.online and exported.fork_parent and exported.fork_step is not None):
            return None
        return fork_point(self, exported, wandb_run_id(exported.project_id, exported.fork_parent))

    def _provenance(self, exported: ExportedRun, multiplier: int, content: RunContent) -> dict[str, Any]:
        return {
            "neptune.step_offset": content.step_offset(multiplier),
            "neptune.experiment": exported.experiment_name,
            **exported.provenance(multiplier, "partial"),
        }

    def _log_artifacts(self, run, target_run_id: str, content: RunContent, history: HistoryWriter) -> None:
        import wandb

        for spec in artifact_specs(target_run_id, content, history):
            artifact = wandb.Artifact(spec.name, type=spec.type, metadata=spec.metadata)
            for local, name in spec.entries:
                (artifact.add_dir if local.is_dir() else artifact.add_file)(str(local), name=name)
            run.log_artifact(artifact)


def _wandb_errors() -> tuple[type[BaseException], ...]:
    import wandb

    return (wandb.errors.CommError, wandb.errors.Error)

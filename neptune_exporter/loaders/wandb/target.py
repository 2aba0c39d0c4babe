"""Where W&B runs go: online (API key set) or offline under --wandb-dir, its process-wide settings and sync line."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from neptune_exporter.settings import WANDB_OFFLINE_DIR
from neptune_exporter.storage.files import require_writable_folder

# quiet, local-only W&B: no console capture, no system stats, no code/git/metadata collection
QUIET_ENV = {
    "WANDB_SILENT": "true",
    "WANDB_CONSOLE": "off",
    "WANDB_DISABLE_CODE": "true",
    "WANDB_DISABLE_GIT": "true",
    "WANDB__DISABLE_STATS": "true",
    "WANDB_X_DISABLE_STATS": "true",
    "WANDB_X_DISABLE_META": "true",
    "WANDB_X_DISABLE_MACHINE_INFO": "true",
    "WANDB_ERROR_REPORTING": "false",
}


@dataclass(frozen=True)
class WandbTarget:
    """Where runs go: online (API key set) or offline under `wandb_dir`."""

    wandb_dir: Path
    entity: str | None = None
    project_template: str | None = None
    api_key: str | None = None
    base_url: str | None = None

    @property
    def online(self) -> bool:
        return bool(self.api_key)

    @classmethod
    def from_env(cls, wandb_dir: Path | str | None, entity: str | None, project_template: str | None) -> WandbTarget:
        """Online when WANDB_API_KEY is set (WANDB_BASE_URL for W&B Server), offline otherwise."""
        return cls(
            wandb_dir=Path(wandb_dir or WANDB_OFFLINE_DIR).absolute(),
            entity=entity or os.environ.get("WANDB_ENTITY") or None,
            project_template=project_template,
            api_key=os.environ.get("WANDB_API_KEY") or None,
            base_url=os.environ.get("WANDB_BASE_URL") or None,
        )

    def data_dir(self) -> Path:
        """Artifact staging inside the wandb dir so it survives until `wandb sync`."""
        return self.wandb_dir / "wandb-data"

    def apply_env(self) -> None:
        """Process-wide W&B settings (staging, cache and config dirs inside the wandb dir, quiet mode)."""
        for name, value in QUIET_ENV.items():
            os.environ.setdefault(name, value)
        os.environ["WANDB_DIR"] = str(self.wandb_dir)
        os.environ["WANDB_DATA_DIR"] = str(self.data_dir())
        os.environ["WANDB_CACHE_DIR"] = str(self.wandb_dir / "wandb-cache")
        os.environ.setdefault("WANDB_CONFIG_DIR", str(self.wandb_dir / "wandb-config"))
        os.environ["WANDB_MODE"] = "online" if self.online else "offline"

    def sync_command(self) -> str:
        """The exact command that uploads the offline runs later (already-synced runs are skipped)."""
        entity = f" --entity {shlex.quote(self.entity)}" if self.entity else ""
        folder = shlex.quote(str(self.wandb_dir / "wandb"))
        return f"WANDB_DATA_DIR={shlex.quote(str(self.data_dir()))} wandb sync --yes{entity} {folder}/offline-run-*"


def check_writable(directory: Path) -> None:
    require_writable_folder(directory, "W&B folder", "--wandb-dir")


def offline_sync_hint(options) -> str | None:
    """For `load --target wandb` without WANDB_API_KEY: the line that uploads the offline runs (else None)."""
    if getattr(options, "target", None) != "wandb":
        return None
    target = WandbTarget.from_env(options.wandb_dir, options.wandb_entity, options.wandb_project_template)
    return None if target.online else f"offline W&B runs written; upload them with:\n  {target.sync_command()}"

"""Where Comet experiments go: offline archives under --comet-dir (or online with COMET_API_KEY), their names."""

from __future__ import annotations

import os
import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from neptune_exporter.errors import InvalidOptionError, OutputPathError, UnsupportedError
from neptune_exporter.loaders.base import run_key
from neptune_exporter.settings import COMET_OFFLINE_DIR

DEFAULT_PROJECT_TEMPLATE = "{project}"
TEMPLATE_FIELDS = "{project}, {workspace}, {project_id}"
STAGING_DIR = ".staging"  # archives being written: <comet-dir>/.staging/<experiment key>/
SUPERSEDED_DIR = "superseded"  # complete archives of an older export of a run, kept (never deleted), not uploaded
INSTALL_HINT = "pip install 'neptune-exporter[comet]'"

# quiet, local-only Comet: no error reports, no announcements (a value the user set wins: client_env.py)
QUIET_ENV = {
    "COMET_ERROR_TRACKING_ENABLE": "false",
    "COMET_DISABLE_ANNOUNCEMENT": "true",
    "COMET_LOGGING_CONSOLE": "ERROR",  # no "COMET INFO: ... comet upload <staging path>" lines per run
}


def require_comet():
    """The comet_ml module; UnsupportedError naming the extra when it is not installed."""
    try:
        import comet_ml
    except ImportError:
        raise UnsupportedError(
            "the Comet target needs the comet-ml package, which is not installed", f"install it: {INSTALL_HINT}"
        ) from None
    return comet_ml


def experiment_key(project_id: str, run_id: str) -> str:
    """Deterministic Comet experiment key (32 hex characters: Comet takes 32-50 alphanumerics)."""
    return run_key(project_id, run_id)


def check_project_template(template: str) -> None:
    """InvalidOptionError unless the template formats with {project}, {workspace} and {project_id} alone."""
    try:
        template.format(project="p", workspace="w", project_id="w/p")
    except (KeyError, IndexError, ValueError, AttributeError) as error:
        raise InvalidOptionError(
            f"--comet-project-template {template!r} is not valid ({type(error).__name__}: {error})",
            f"use only the fields {TEMPLATE_FIELDS}, e.g. '{DEFAULT_PROJECT_TEMPLATE}'",
        ) from None


def comet_project_name(project_id: str, template: str | None) -> str:
    """Comet project of a Neptune project: the template, cleaned to [A-Za-z0-9_.-] (others become '-')."""
    workspace, _, project = project_id.rpartition("/")
    name = (template or DEFAULT_PROJECT_TEMPLATE).format(project=project, workspace=workspace, project_id=project_id)
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", name)[:100] or "neptune"


@dataclass(frozen=True)
class CometTarget:
    """Offline archives under `comet_dir` (absolute), or online when an API key is set."""

    comet_dir: Path
    workspace: str | None = None
    project_template: str | None = None
    api_key: str | None = None

    @property
    def online(self) -> bool:
        return bool(self.api_key)

    @classmethod
    def from_options(cls, options) -> CometTarget:
        """From `load.LoadOptions`: online exactly when COMET_API_KEY is set; the template checked first."""
        template = options.comet_project_template
        check_project_template(template or DEFAULT_PROJECT_TEMPLATE)
        return cls(
            comet_dir=Path(os.path.abspath(os.path.expanduser(options.comet_dir or COMET_OFFLINE_DIR))),
            workspace=options.comet_workspace or os.environ.get("COMET_WORKSPACE") or None,
            project_template=template,
            api_key=os.environ.get("COMET_API_KEY") or None,
        )

    def project_name(self, project_id: str) -> str:
        return comet_project_name(project_id, self.project_template)

    def archive(self, key: str) -> Path:
        """The run's finished archive: <comet-dir>/<experiment key>.zip."""
        return self.comet_dir / f"{key}.zip"

    def staging(self, key: str) -> Path:
        return self.comet_dir / STAGING_DIR / key

    def superseded(self, key: str, checksum: str, multiplier: object) -> Path:
        """A free name for a complete archive of an older export (or step multiplier) in superseded/."""
        stem = self.comet_dir / SUPERSEDED_DIR / f"{key}-{checksum[:16] or 'unknown'}-x{multiplier}"
        path, copy = stem.with_name(stem.name + ".zip"), 1
        while path.exists():
            copy += 1
            path = stem.with_name(f"{stem.name}-{copy}.zip")
        return path

    def upload_command(self) -> str:
        """The command that sends the offline archives to Comet (COMET_API_KEY set)."""
        return f"comet upload {shlex.quote(str(self.comet_dir))}/*.zip"

    def check_writable(self) -> None:
        """OutputPathError when the archive folder cannot be created or written."""
        try:
            self.comet_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.comet_dir):
                pass
        except OSError as error:
            raise OutputPathError(
                f"the Comet folder {self.comet_dir} is not writable ({error.strerror or error})",
                "pass --comet-dir pointing at a folder you can write to",
            ) from None

    def apply_env(self) -> None:
        for name, value in QUIET_ENV.items():
            os.environ.setdefault(name, value)


def offline_upload_hint(options) -> str | None:
    """For `load --target comet` without COMET_API_KEY: the line that uploads the archives (else None)."""
    if getattr(options, "target", None) != "comet":
        return None
    target = CometTarget.from_options(options)
    return None if target.online else f"offline Comet archives written; upload them with:\n  {target.upload_command()}"

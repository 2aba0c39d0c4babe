"""The ZenML local store under one folder (SQLite + local artifact store), shared by the ZenML loader and validation:
the process environment that points ZenML there and keeps it quiet and offline, the client, typed errors."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from neptune_exporter.errors import (
    DiskFullError,
    NeptuneExporterError,
    OutputPathError,
    TargetError,
    TargetUnavailableError,
    UnsupportedError,
    disk_full_cause,
)
from neptune_exporter.storage.files import require_writable_folder

DEFAULT_ZENML_DIR = "./zenml-store"  # the local store goes here when no --zenml-dir is given
INSTALL_HINT = "pip install 'neptune-exporter[zenml]'"

# Set before ZenML is imported (it reads some at import) and whenever the folder changes: no analytics, no rich
# traceback hook, no colours, warnings only.
QUIET_ENV = {
    "ZENML_ANALYTICS_OPT_IN": "false",
    "ZENML_ENABLE_RICH_TRACEBACK": "false",
    "ZENML_LOGGING_COLORS_DISABLED": "true",
    "ZENML_LOGGING_VERBOSITY": "WARN",
    "AUTO_OPEN_DASHBOARD": "false",
    "ZENML_CAPTURE_PRINTS": "false",  # else `import zenml` replaces builtins.print process-wide
}
# ZENML_STORE_URL etc. would send the load to a server: this target is the local store under the folder only.
REMOTE_STORE_PREFIXES = ("ZENML_STORE_", "ZENML_SERVER")

_lock = threading.RLock()  # one ZenML call at a time per process: one SQLite file, one client singleton
_active: list[Path] = []  # the folder the process's ZenML singletons point at (empty before the first use)


def zenml_dir(folder: str | Path | None) -> Path:
    """The store folder, absolute (`~` expanded); the default when none is given."""
    return Path(os.path.abspath(os.path.expanduser(str(folder or DEFAULT_ZENML_DIR))))


def store_env(folder: Path) -> dict[str, str]:
    """The environment that makes ZenML use only `folder`: global config, repository and local stores there."""
    return {
        **QUIET_ENV,
        "ZENML_CONFIG_PATH": str(folder),
        "ZENML_REPOSITORY_PATH": str(folder),
        "ZENML_LOCAL_STORES_PATH": str(folder / "local_stores"),
    }


def check_writable(folder: Path) -> None:
    require_writable_folder(folder, "ZenML folder", "--zenml-dir")


def require_zenml() -> None:
    """UnsupportedError naming the extra when ZenML (with its local store's packages) is not installed; nothing is
    imported (ZenML's import takes seconds and configures logging)."""
    for name in ("zenml", "sqlmodel"):  # sqlmodel: the local SQLite store (zenml[local])
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError, AttributeError):
            found = None
        if found is None:
            raise _not_installed(name)


def _not_installed(name: str) -> UnsupportedError:
    return UnsupportedError(
        f"the ZenML target needs the zenml package ({name} is not installed)", f"install it: {INSTALL_HINT}"
    )


@contextmanager
def zenml_client(folder: Path) -> Iterator[Any]:
    """`zenml.client.Client` of the local store in `folder`, under the process-wide ZenML lock; the singletons are
    reset when an earlier use pointed them at another folder."""
    with _lock:
        _point_at(folder)
        from zenml.client import Client

        yield Client()


def _point_at(folder: Path) -> None:
    for name in [n for n in os.environ if n.startswith(REMOTE_STORE_PREFIXES)]:
        del os.environ[name]
    os.environ.update(store_env(folder))
    if _active and _active[0] == folder:
        return
    require_zenml()
    _import_zenml_quietly()
    from zenml.client import Client
    from zenml.config.global_config import GlobalConfiguration

    GlobalConfiguration._reset_instance()
    Client._reset_instance()
    GlobalConfiguration().analytics_opt_in = False  # also in the folder's config.yaml, for ZenML's own CLI there
    if not Client.is_repository_directory(folder):  # the repository is ZenML's source root (no guess from __main__)
        Client.initialize(root=folder)
    _commit_without_fsync(Client().zen_store)
    _active[:] = [folder]


def _commit_without_fsync(zen_store: Any) -> None:
    """SQLite in WAL mode with synchronous=NORMAL: a commit no longer waits for the disk (ZenML commits each
    metadata value on its own: 500 values took 20 s at ~15 ms a commit). A killed process loses nothing committed;
    only a power loss can undo the last commits, which a rerun redoes (the run is not `complete` then)."""
    from sqlalchemy import event

    engine = getattr(zen_store, "engine", None)
    if engine is None or engine.dialect.name != "sqlite":
        return

    def on_connect(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # pooled connections were opened before: the next ones get the pragmas


def _import_zenml_quietly() -> None:
    """`import zenml` sets the root logger's level and adds a stdout handler to it (its `init_logging`): both are
    put back as they were, so the CLI's output and Prefect's logs stay ours; ZenML's own loggers report errors only
    (unless the user set their level)."""
    if "zenml" in sys.modules:
        return
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import zenml  # noqa: F401
    except ImportError as error:
        raise _not_installed(error.name or "zenml") from None

    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    quiet = logging.getLogger("zenml")  # its warnings (e.g. "Setting the global active stack to default.")
    if quiet.level == logging.NOTSET:
        quiet.setLevel(logging.ERROR)


def artifact_root(client: Any) -> Path:
    """The local artifact store's folder (inside the ZenML folder)."""
    return Path(client.active_stack.artifact_store.path)


def folder_registrar(client: Any) -> Callable[[Path, str, str, Any], None]:
    """`register(folder, name, version, model_version_id)`: `folder` (new, inside the artifact store) registered as
    version `version` of artifact `name` and linked to the model version. It stores what ZenML's `register_artifact`
    + `link_artifact_version_to_model_version` store, less their look-ups repeated per artifact: the stack, the
    project, an earlier registration of the same folder (a quarter of the time; the loader removed any) and a
    pipeline step to link (a load runs in none)."""
    from zenml.artifacts.preexisting_data_materializer import PreexistingDataMaterializer
    from zenml.enums import ArtifactSaveType, ArtifactType
    from zenml.models import ArtifactVersionRequest, ModelVersionArtifactRequest
    from zenml.utils import source_utils

    common = {
        "type": ArtifactType.DATA,
        "save_type": ArtifactSaveType.PREEXISTING,
        "materializer": source_utils.resolve(PreexistingDataMaterializer),
        "data_type": source_utils.resolve(Path),
        "project": client.active_project.id,
        "artifact_store_id": client.active_stack.artifact_store.id,
        "has_custom_name": True,
    }

    def register(folder: Path, name: str, version: str, model_version_id: Any) -> None:
        request = ArtifactVersionRequest(artifact_name=name, version=version, uri=str(folder), **common)
        created = client.zen_store.create_artifact_version(artifact_version=request)
        link = ModelVersionArtifactRequest(artifact_version=created.id, model_version=model_version_id)
        client.zen_store.create_model_version_artifact_link(link)

    return register


@contextmanager
def zenml_errors(what: str) -> Iterator[None]:
    """ZenML, SQLite and file failures as typed errors with a fix: a locked store is transient (retried), a full
    disk or an unwritable folder is the folder's, anything else ZenML refused is terminal."""
    try:
        yield
    except NeptuneExporterError:
        raise
    except Exception as error:
        text = " ".join(str(error).split())[:500] or type(error).__name__
        if disk_full_cause(error) is not None:
            raise DiskFullError(f"ZenML failed to {what}: {text}", "free space under --zenml-dir") from error
        if "database is locked" in text or isinstance(error, (ConnectionError, TimeoutError)):
            raise TargetUnavailableError(
                f"ZenML failed to {what}: {text}", "retry once the other writer of the ZenML store is done"
            ) from error
        if isinstance(error, OSError):
            raise OutputPathError(f"ZenML failed to {what}: {text}", "check the --zenml-dir folder") from error
        raise TargetError(
            f"ZenML failed to {what}: {type(error).__name__}: {text}", "check the ZenML store under --zenml-dir"
        ) from error


def listed(list_method: Any, **filters: Any) -> Iterator[Any]:
    """Every item of a paged `Client.list_*` call (1,000 per page)."""
    page = 1
    while True:
        found = list_method(page=page, size=1000, **filters)
        yield from found.items
        if page >= found.total_pages:
            return
        page += 1


def equals(text: str) -> str:
    """A ZenML list filter that matches `text` exactly (a bare value that starts with `contains:` would not)."""
    return f"equals:{text}"

"""Process-wide defaults of target clients that read their settings only from environment variables.

MLflow offers no other way for these (and reads MLFLOW_DISABLE_TELEMETRY at `import mlflow`), so
`apply_client_defaults` is the one function that writes them, never at import or in a constructor:
`load.make_loader` calls it before importing the target's loader, and a loader calls it again right before
its first client call. A value the user set wins.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping

CLIENT_DEFAULTS: dict[str, dict[str, str]] = {
    "mlflow": {
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # one bar per file floods logs
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # one "View run" line per run
        "MLFLOW_DISABLE_TELEMETRY": "true",  # phones home; its setup races request headers
    },
}


# Loggers of target clients that log an error with its traceback and then raise it to us: the loader reports it once
# (a retry line naming the run and the attempt, or the run's failure with its fix), so they stay quiet unless the user
# set their level. mlflow.store.db.utils: ~90 lines per "database is locked" of a sqlite:/// store.
QUIET_LOGGERS: dict[str, tuple[str, ...]] = {"mlflow": ("mlflow.store.db.utils",)}


def apply_client_defaults(target: str, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the target client's defaults that are unset in `environ` (this process's environment by default), and
    quiet its QUIET_LOGGERS (those with no level set)."""
    environ = os.environ if environ is None else environ
    added = {name: value for name, value in CLIENT_DEFAULTS.get(target, {}).items() if name not in environ}
    environ.update(added)
    for name in QUIET_LOGGERS.get(target, ()):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.CRITICAL)
    return added

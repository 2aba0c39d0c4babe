"""Comet target: exported runs become Comet experiments, one offline archive per run under --comet-dir (for
`comet upload`), or online when COMET_API_KEY is set. comet-ml is an optional extra, imported only when used.

Modules: `loader` (CometLoader), `target` (where archives go, names, the upload line), `writer` (one run into one
experiment). The archive format is read by `neptune_exporter.storage.comet_archive`.
"""

from neptune_exporter.loaders.comet.loader import CometLoader
from neptune_exporter.loaders.comet.target import (
    DEFAULT_PROJECT_TEMPLATE,
    CometTarget,
    check_project_template,
    comet_project_name,
    experiment_key,
    offline_upload_hint,
)

__all__ = [
    "DEFAULT_PROJECT_TEMPLATE",
    "CometLoader",
    "CometTarget",
    "check_project_template",
    "comet_project_name",
    "experiment_key",
    "offline_upload_hint",
]

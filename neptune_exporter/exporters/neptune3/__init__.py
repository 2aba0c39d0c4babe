"""Neptune 3.x source over the public neptune-query API: run discovery, streamed run export, typed errors.

Modules: `source` (Neptune3Source), `discovery` (run filter, listing), `run_export` (one run streamed), `files`
(its downloads), `frames` (neptune-query's frames as values), `client` (token, process-wide knobs, typed errors).
"""

from neptune_exporter.exporters.neptune3.client import (
    SERIES_PER_REQUEST,
    configure_neptune_query,
    neptune_errors,
    required_token,
    server_of_token,
    translate_error,
)
from neptune_exporter.exporters.neptune3.discovery import (
    LISTING_ATTRIBUTES,
    MAX_PUSHED_RUN_IDS,
    archived_too,
    build_run_filter,
    check_project_id,
    run_selected,
    runs_from_table,
)
from neptune_exporter.exporters.neptune3.files import (
    FILES_PER_DOWNLOAD,
    FileDownloads,
    collision_free_groups,
    step_label,
)
from neptune_exporter.exporters.neptune3.frames import SeriesChunk, parameter_value, split_series_frame
from neptune_exporter.exporters.neptune3.run_export import (
    ALL_TYPES,
    FILE_TYPES,
    FORK_ATTRIBUTES,
    FORK_PARENT_ATTRIBUTES,
    FORK_STEP_ATTRIBUTES,
    PARAMETER_TYPES,
    SERIES_TYPES,
    RunExport,
)
from neptune_exporter.exporters.neptune3.source import Neptune3Source

__all__ = [
    "ALL_TYPES",
    "FILES_PER_DOWNLOAD",
    "FILE_TYPES",
    "FORK_ATTRIBUTES",
    "FORK_PARENT_ATTRIBUTES",
    "FORK_STEP_ATTRIBUTES",
    "LISTING_ATTRIBUTES",
    "MAX_PUSHED_RUN_IDS",
    "PARAMETER_TYPES",
    "SERIES_PER_REQUEST",
    "SERIES_TYPES",
    "FileDownloads",
    "Neptune3Source",
    "RunExport",
    "SeriesChunk",
    "archived_too",
    "build_run_filter",
    "check_project_id",
    "collision_free_groups",
    "configure_neptune_query",
    "neptune_errors",
    "parameter_value",
    "required_token",
    "run_selected",
    "runs_from_table",
    "server_of_token",
    "split_series_frame",
    "step_label",
    "translate_error",
]

"""Neptune 2.x source: runs read with the `neptune` 1.x client (read-only mode) and streamed as rows and files.

Modules: `source` (Neptune2Source: access, discovery, model registry, atom reads), `run_export` (one run streamed),
`attributes` (2.x types → exported types), `nql` (query text), `client` (client setup, typed errors, retried reads).
"""

# Choices and bounds:
#
# - Run id: the 2.x `sys/id` ("PROJ-123"), as the peer tool neptune-ai/neptune-exporter does for 2.x, so
#   exports of either tool line up run for run (plans, resumes and loads match). A run's custom run id is
#   kept in `RunRef.custom_run_id` and `--runs` matches it too.
# - `sys/name` is a run's display name in 2.x: `RunRef.name`; `experiment_name` stays None.
# - Listing pages with the client's `fetch_runs_table` in windows of at most 10,000 runs, ascending by
#   `sys/creation_time`; the next window starts at the last creation time seen (`>=`) and drops ids already
#   listed, so runs sharing a creation time across a window boundary are never lost.
# - Atom values come from one project-table read per run (`fetch_runs_table(id=...)`): one call for
#   hundreds of attributes, and the only public path to `sys/state`, git and notebook references
#   (`run.fetch()` fails on runs holding a notebook reference in neptune 1.14).
# - Series are read page by page (`FetchableSeries._fetch_values_from_backend`, the paging hook of the
#   public `fetch_values`, which would otherwise build one DataFrame of the whole series with local-time
#   timestamps; float series send the same request and read its JSON into arrays, see pages.py),
#   PREFETCH_PAGES pages of SERIES_PAGE_POINTS in flight per series, in order. Memory bound,
#   whatever the run's size: each of `workers` attribute workers holds at most one batch being built
#   (≤ series_batch_rows + one page) plus its prefetched pages, the hand-over queue holds ≤ 2·workers
#   batches and the consumer one: about (3·workers + 1) · series_batch_rows points.
# - Model registry (`list_models`): models (`PROJ-MOD`) and their versions (`PROJ-MOD-1`) are containers
#   like runs, exported as runs whose run id is the sys id, in the peer tool's entity scopes
#   (`<project-dir>/models/`, `<project-dir>/model_versions/`). Listed with `fetch_models_table` and each
#   model's `fetch_model_versions_table` (one `init_model` per model: the only public path to its versions),
#   opened with `init_model` / `init_model_version`, atoms read from the same tables. Run filters do not
#   apply; trashed models (and their versions) only with include_archived; the client never lists trashed
#   versions.
# - File series: the 2.x read API serves images by index only, so a point's step is its index
#   (how 2.x numbers images appended without an explicit step; the peer tool does the same).

from neptune_exporter.exporters.neptune2.attributes import (
    ATOM_TYPES,
    OTHER_TYPES,
    SourceAttribute,
    atom_value,
    run_attributes,
    select_attributes,
    source_attributes,
)
from neptune_exporter.exporters.neptune2.client import (
    TOKEN_REMEDY,
    client_retry_timeout,
    configure_client,
    connection_pool_size,
    retrying,
    size_connection_pool,
    token_server,
    typed_error,
)
from neptune_exporter.exporters.neptune2.nql import combine_nql, modified_after_nql, nql_datetime, sys_id_nql, where_nql
from neptune_exporter.exporters.neptune2.pages import client_pages, exact_page, float_page_of, points_to_arrays
from neptune_exporter.exporters.neptune2.run_export import PREFETCH_PAGES, SERIES_PAGE_POINTS
from neptune_exporter.exporters.neptune2.source import (
    LIST_COLUMNS,
    WINDOW_RUNS,
    Neptune2Source,
    as_utc,
    run_matches,
    run_source_facts,
    version_model_id,
)

__all__ = [
    "ATOM_TYPES",
    "LIST_COLUMNS",
    "OTHER_TYPES",
    "PREFETCH_PAGES",
    "SERIES_PAGE_POINTS",
    "TOKEN_REMEDY",
    "WINDOW_RUNS",
    "Neptune2Source",
    "SourceAttribute",
    "as_utc",
    "atom_value",
    "client_retry_timeout",
    "combine_nql",
    "configure_client",
    "connection_pool_size",
    "size_connection_pool",
    "client_pages",
    "exact_page",
    "float_page_of",
    "modified_after_nql",
    "nql_datetime",
    "points_to_arrays",
    "retrying",
    "run_matches",
    "run_source_facts",
    "run_attributes",
    "select_attributes",
    "source_attributes",
    "sys_id_nql",
    "token_server",
    "typed_error",
    "version_model_id",
    "where_nql",
]

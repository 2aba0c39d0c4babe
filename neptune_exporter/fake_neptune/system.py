"""System attributes the fake derives on read (never stored): 3.x and 2.x views, diagnostics counts, archive flags.

What each server version reports (see README.md, "System attributes"):
- 3.x: the names neptune-query 1.14 knows (`_KNOWN_SYS_ATTRIBUTES` in
  `neptune_query/internal/composition/type_inference.py`, listed in ../shared/reference/neptune-wire-protocol.md
  "System attributes of 3.x runs") with those types.
- 2.x: the fields of the legacy API's `SystemAttributesDTO` (reference/neptune-api-specs/leaderboard-swagger.json;
  required: description, failed, monitoringTime (int), pingTime, runningTime (float), size (float), trashed, ...).
  No sys/archived, sys/group_tags, sys/family or diagnostics there: 2.x does not have them.

Diagnostics counts: the reference and Neptune's docs are silent on whether `sys/diagnostics/attributes/*` count the
sys/* attributes themselves. The fake counts the run's own non-`sys/` attributes as 3.x sees them (what the user
logged), and `total_series_datapoints` sums the run's own points of every series type (no inherited fork points).
Computed on every read, so appended points and new attributes show at once.
"""

from __future__ import annotations

from collections.abc import Callable

from neptune_exporter.fake_neptune import store
from neptune_exporter.fake_neptune.store import Attribute, Run

DIAGNOSTICS = "sys/diagnostics/attributes/"
# 3.x type → its diagnostics counter (neptune-query's names; datetimes have none and only add to total_count)
COUNTERS = {
    store.BOOL: "bool_count",
    store.FILE: "file_ref_count",
    store.FILE_SERIES: "file_ref_series_count",
    store.FLOAT: "float_count",
    store.FLOAT_SERIES: "float_series_count",
    store.HISTOGRAM_SERIES: "histogram_series_count",
    store.INT: "int_count",
    store.STRING: "string_count",
    store.STRING_SERIES: "string_series_count",
    store.STRING_SET: "string_set_count",
}
ALL_COUNTERS = (*sorted({*COUNTERS.values(), "histogram_count"}), "total_count", "total_series_datapoints")


def diagnostics(attributes: list[Attribute]) -> dict[str, int]:
    """`sys/diagnostics/attributes/*` of a run from its (3.x-visible) attributes; sys/* are not counted."""
    counts = dict.fromkeys(ALL_COUNTERS, 0)
    for attr in attributes:
        if attr.path.startswith("sys/"):
            continue
        counts["total_count"] += 1
        if attr.type in COUNTERS:
            counts[COUNTERS[attr.type]] += 1
        if attr.series is not None:
            counts["total_series_datapoints"] += len(attr.series)
    return {DIAGNOSTICS + name: value for name, value in counts.items()}


def _family(run: Run) -> str:
    return run.family or run.custom_run_id or run.sys_id


def _relative_creation_ms(run: Run) -> int:
    created, root = run.get("sys/creation_time"), run.family_created or run.get("sys/creation_time")
    return 0 if created is None or root is None else int(round((created - root).total_seconds() * 1000))


def _ping_time(run: Run) -> Attribute:
    return Attribute("sys/ping_time", store.DATETIME, run.get("sys/modification_time"))


# 3.x: path → the derived attribute of a run; sys/archived, the experiment's running time and the diagnostics
# counts are added by v3_derived_attributes / v3_derived
V3_DERIVED: dict[str, Callable[[Run], Attribute]] = {
    "sys/description": lambda run: Attribute("sys/description", store.STRING, ""),
    "sys/failed": lambda run: Attribute("sys/failed", store.BOOL, False),
    "sys/group_tags": lambda run: Attribute("sys/group_tags", store.STRING_SET, set()),
    "sys/ping_time": _ping_time,
    "sys/running_time_seconds": lambda run: Attribute("sys/running_time_seconds", store.FLOAT, 0.0),
    "sys/size": lambda run: Attribute("sys/size", store.INT, 0),
    "sys/family": lambda run: Attribute("sys/family", store.STRING, _family(run)),
    "sys/relative_creation_time_ms": lambda run: Attribute(
        "sys/relative_creation_time_ms", store.INT, _relative_creation_ms(run)
    ),
    "sys/diagnostics/project_uuid": lambda run: Attribute(
        "sys/diagnostics/project_uuid", store.STRING, run.project_uuid
    ),
    "sys/diagnostics/run_uuid": lambda run: Attribute("sys/diagnostics/run_uuid", store.STRING, run.uuid),
}
V3_EXPERIMENT_RUNNING_TIME = "sys/experiment/running_time_seconds"
V2_DERIVED: dict[str, Callable[[Run], Attribute]] = {
    "sys/description": V3_DERIVED["sys/description"],
    "sys/failed": V3_DERIVED["sys/failed"],
    "sys/ping_time": _ping_time,
    "sys/running_time": lambda run: Attribute("sys/running_time", store.FLOAT, 0.0),
    "sys/monitoring_time": lambda run: Attribute("sys/monitoring_time", store.INT, 0),
    "sys/size": lambda run: Attribute("sys/size", store.FLOAT, 0.0),
}


def reports_archived(run: Run) -> bool:
    """Whether 3.x reports `sys/archived` for this run (variants "archived" and "both")."""
    return run.archived_paths in ("archived", "both")


def reports_trashed(run: Run) -> bool:
    """Whether 3.x reports `sys/trashed` for this run (variants "trashed" and "both")."""
    return run.archived_paths in ("trashed", "both")


def v3_derived_attributes(run: Run, stored: list[Attribute]) -> list[Attribute]:
    """Every derived 3.x system attribute of a run (stored attributes of the same path win); `stored`: its 3.x ones."""
    derived = [make(run) for path, make in V3_DERIVED.items() if path not in run.attributes]
    if reports_archived(run) and "sys/archived" not in run.attributes:
        derived.append(Attribute("sys/archived", store.BOOL, run.trashed))
    if run.get("sys/experiment/name") is not None and V3_EXPERIMENT_RUNNING_TIME not in run.attributes:
        derived.append(Attribute(V3_EXPERIMENT_RUNNING_TIME, store.FLOAT, 0.0))
    counts = diagnostics(stored).items()
    derived.extend(Attribute(path, store.INT, count) for path, count in counts if path not in run.attributes)
    return derived


def v3_derived(run: Run, path: str, visible: Callable[[], list[Attribute]]) -> Attribute | None:
    """The derived 3.x attribute `path` of a run (None when it has none); `visible` lists its 3.x attributes."""
    if path in run.attributes:
        return None
    if path in V3_DERIVED:
        return V3_DERIVED[path](run)
    if path == "sys/archived" and reports_archived(run):
        return Attribute(path, store.BOOL, run.trashed)
    if path == V3_EXPERIMENT_RUNNING_TIME and run.get("sys/experiment/name") is not None:
        return Attribute(path, store.FLOAT, 0.0)
    if path.startswith(DIAGNOSTICS) and path[len(DIAGNOSTICS) :] in ALL_COUNTERS:
        return Attribute(path, store.INT, diagnostics(visible())[path])
    return None


def v2_derived(run: Run) -> dict[str, Attribute]:
    """The 2.x system attributes of a run the store does not hold (runs only; models keep what they store)."""
    if isinstance(run, (store.Model, store.ModelVersion)):
        return {}
    return {path: make(run) for path, make in V2_DERIVED.items() if path not in run.attributes}

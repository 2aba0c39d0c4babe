"""Neptune 3.x run discovery: the run selection as a server filter, the listing table as RunRefs, exact local checks."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pandas as pd

from neptune_exporter.errors import ProjectNotFoundError, UnsupportedError
from neptune_exporter.exporters.neptune3.frames import present, python_datetime, text_or_none, truthy, typed_column
from neptune_exporter.exporters.where import parse_where, to_neptune_query_filter
from neptune_exporter.model import ProjectId, RunRef, as_utc
from neptune_exporter.selection import RunSelection

# sys/* attributes read while listing runs (absent ones are simply missing from the table).
LISTING_ATTRIBUTES = [
    "sys/id",
    "sys/custom_run_id",
    "sys/name",
    "sys/experiment/name",
    "sys/creation_time",
    "sys/modification_time",
    "sys/archived",
    "sys/trashed",
]
MAX_PUSHED_RUN_IDS = 100  # longer exact run-id lists are filtered locally to keep the query small


def check_project_id(project_id: str) -> None:
    if not re.fullmatch(r"[^/\s]+/[^/\s]+", project_id or ""):
        raise ProjectNotFoundError(
            f"{project_id!r} is not a project name", "name projects as workspace/project, e.g. -p my-team/my-project"
        )


def archived_too():
    """A always-true condition naming sys/trashed: Neptune searches archived (trashed) runs only when asked."""
    from neptune_query.filters import Attribute, Filter

    trashed = Attribute("sys/trashed", type="bool")
    return Filter.exists(trashed) | ~Filter.exists(trashed)


def build_run_filter(selection: RunSelection):
    """The server-side part of a run selection as a neptune-query Filter (None: every run)."""
    from neptune_query.filters import Attribute, Filter

    parts = [archived_too()] if selection.include_archived else []
    if selection.where:
        parts.append(to_neptune_query_filter(parse_where(selection.where)))
    if selection.modified_after is not None:
        after = as_utc(selection.modified_after)
        parts.append(Filter.gt(Attribute("sys/modification_time", type="datetime"), after))
    if selection.run_ids and len(selection.run_ids) <= MAX_PUSHED_RUN_IDS:
        ids = Filter.eq(Attribute("sys/custom_run_id", type="string"), selection.run_ids[0])
        ids = ids | Filter.eq(Attribute("sys/id", type="string"), selection.run_ids[0])
        for run_id in selection.run_ids[1:]:
            ids = ids | Filter.eq(Attribute("sys/custom_run_id", type="string"), run_id)
            ids = ids | Filter.eq(Attribute("sys/id", type="string"), run_id)
        parts.append(ids)
    if selection.query:
        raise UnsupportedError("--query (raw NQL) is for Neptune 2.x sources", "use --where with --source neptune3")
    if not parts:
        return None
    result = parts[0]
    for part in parts[1:]:
        result = result & part
    return result


def _columns_first_present(frame: pd.DataFrame, names: tuple[str, ...], type_name: str) -> list:
    """Per row, the first of `names` that has a value (columns read once, not cell by cell)."""
    columns = [c.tolist() for name in names if (c := typed_column(frame, name, type_name)) is not None]
    result = []
    for row in range(len(frame)):
        result.append(next((col[row] for col in columns if present(col[row])), None))
    return result


def _any_true(frame: pd.DataFrame, names: tuple[str, ...]) -> list[bool]:
    """Per row, whether any of the bool columns `names` is true: servers report sys/archived, sys/trashed or both."""
    columns = [c.tolist() for name in names if (c := typed_column(frame, name, "bool")) is not None]
    return [any(present(col[row]) and truthy(col[row]) for col in columns) for row in range(len(frame))]


def runs_from_table(project_id: ProjectId, frame: pd.DataFrame) -> Iterator[RunRef]:
    """RunRefs from the listing table (custom run id as run id, else sys/id)."""
    if frame.empty:
        return
    sys_ids = _columns_first_present(frame, ("sys/id",), "string")
    customs = _columns_first_present(frame, ("sys/custom_run_id",), "string")
    experiments = _columns_first_present(frame, ("sys/experiment/name", "sys/name"), "string")
    created = _columns_first_present(frame, ("sys/creation_time",), "datetime")
    modified = _columns_first_present(frame, ("sys/modification_time",), "datetime")
    archived = _any_true(frame, ("sys/archived", "sys/trashed"))
    for row in range(len(frame)):
        sys_id = text_or_none(sys_ids[row])
        if sys_id is None:
            continue
        custom = text_or_none(customs[row])
        custom = None if custom == sys_id else custom  # servers report sys/id when a run has no custom id
        yield RunRef(
            project_id=project_id,
            run_id=custom or sys_id,
            sys_id=sys_id,
            experiment_name=text_or_none(experiments[row]),
            custom_run_id=custom,
            creation_time=python_datetime(created[row]),
            modification_time=python_datetime(modified[row]),
            archived=archived[row],
            source_kind="neptune3",
        )


def run_selected(ref: RunRef, selection: RunSelection, runs_pattern, experiments_pattern) -> bool:
    if ref.archived and not selection.include_archived:
        return False
    if selection.run_ids and not ({ref.run_id, ref.sys_id, ref.custom_run_id} & set(selection.run_ids)):
        return False
    if runs_pattern is not None and not any(
        value is not None and runs_pattern.search(value) for value in (ref.run_id, ref.custom_run_id, ref.sys_id)
    ):
        return False
    if experiments_pattern is not None and not (
        ref.experiment_name and experiments_pattern.search(ref.experiment_name)
    ):
        return False
    if selection.modified_after is not None and ref.modification_time is not None:
        return ref.modification_time > as_utc(selection.modified_after)
    return True

"""Where an export reads and writes: projects and absolute paths, resolved alike for the CLI and for flow runs."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from neptune_exporter.errors import InvalidOptionError
from neptune_exporter.settings import default_projects

CLI_PROJECT_FIX = "pass -p WORKSPACE/PROJECT, --workspace WS, or set NEPTUNE_PROJECT"
FLOW_PROJECT_FIX = (
    "pass the `projects` parameter (e.g. --param projects='[\"WORKSPACE/PROJECT\"]') or `selection.workspace`, "
    "or set NEPTUNE_PROJECT in the environment of the process that runs the flow (`neptune-exporter serve`, the worker)"
)


def absolute_path(path: str | Path) -> str:
    """`path` made absolute against this process's working directory (`~` expanded), as the CLI hands it to a flow."""
    return os.path.abspath(os.path.expanduser(str(path)))


def require_absolute(path: str | Path, parameter: str) -> str:
    """`path` when absolute (`~` expanded); InvalidOptionError naming the absolute path a relative one would become."""
    expanded = os.path.expanduser(str(path))
    if os.path.isabs(expanded):
        return os.path.normpath(expanded)
    would_be = absolute_path(expanded)
    raise InvalidOptionError(
        f"{parameter} {str(path)!r} is relative: this flow run would write to {would_be} (its working directory "
        f"{os.getcwd()}), which is not a place to guess",
        f"pass an absolute path, e.g. {parameter}={would_be!r} if that is where the export belongs",
    )


def select_projects(projects: Iterable[str] | None, workspace: str | None, fix: str) -> tuple[str, ...]:
    """The projects given, else NEPTUNE_PROJECT (unless a workspace is given); InvalidOptionError with `fix` if none."""
    chosen = tuple(projects or ()) or (() if workspace else tuple(default_projects()))
    if not chosen and not workspace:
        raise InvalidOptionError("no project given", fix)
    return chosen

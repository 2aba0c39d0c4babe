"""What to export: run and attribute selections, user regexes, the export options, and their JSON codecs."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime

from neptune_exporter.errors import InvalidOptionError, InvalidRegexError
from neptune_exporter.model import KIND_OF_TYPE, AttributeKind, AttributeType, iso_utc_ms, parse_iso


def compile_regex(pattern: str | None, option: str) -> re.Pattern | None:
    """Compile a user regex or raise InvalidRegexError naming the option."""
    if pattern is None or pattern == "":
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InvalidRegexError(
            f"{option} {pattern!r} is not a valid regular expression: {exc}",
            f"correct the pattern given to {option} (Python `re` syntax; escape special characters like '.' '(' '[')",
        ) from None


@dataclass(frozen=True)
class RunSelection:
    """Which runs to export from a project."""

    runs_regex: str | None = None  # matched (re.search) against run id / custom run id / sys id
    experiments_regex: str | None = None  # 3.x experiment name
    where: str | None = None  # the tool's expression language (exporters/where.py)
    query: str | None = None  # raw NQL (2.x only)
    modified_after: datetime | None = None
    include_archived: bool = False
    run_ids: tuple[str, ...] = ()  # exact run ids, when given


@dataclass(frozen=True)
class AttributeSelection:
    """Which attributes of a run to export."""

    regex: str | None = None  # re.search on the attribute path
    names: tuple[str, ...] = ()  # exact paths (union with regex when both given)
    include_kinds: frozenset[AttributeKind] = frozenset(AttributeKind)
    exclude_kinds: frozenset[AttributeKind] = frozenset()
    include_previews: bool = False

    def kinds(self) -> frozenset[AttributeKind]:
        return frozenset(self.include_kinds) - frozenset(self.exclude_kinds)

    def to_json(self) -> dict:
        return {
            "regex": self.regex,
            "names": sorted(self.names),
            "kinds": sorted(k.value for k in self.kinds()),
            "include_previews": self.include_previews,
        }


def matches_kind(attribute_type: AttributeType, selection: AttributeSelection) -> bool:
    """True when the attribute's kind is selected."""
    return KIND_OF_TYPE[attribute_type] in selection.kinds()


def matches_path(path: str, selection: AttributeSelection, pattern: re.Pattern | None) -> bool:
    """True when the path is selected by the exact names and/or regex (no filter → all)."""
    if not selection.names and pattern is None:
        return True
    return path in selection.names or (pattern is not None and pattern.search(path) is not None)


def check_run_selection(source: str, selection: RunSelection, flag: str = "--source") -> None:
    """The run selection checked before any request: its regexes compile, --query (NQL) only for 2.x."""
    if selection.query and source != "neptune2":
        raise InvalidOptionError(f"--query (NQL) works with {flag} neptune2 only", "use --where with neptune3")
    compile_regex(selection.runs_regex, "--runs")
    compile_regex(selection.experiments_regex, "--experiments")


# ----------------------------------------------------------------------------- JSON codecs


def run_selection_to_json(selection: RunSelection) -> dict:
    """A RunSelection as JSON types."""
    return {
        "runs_regex": selection.runs_regex,
        "experiments_regex": selection.experiments_regex,
        "where": selection.where,
        "query": selection.query,
        "modified_after": iso_utc_ms(selection.modified_after),
        "include_archived": selection.include_archived,
        "run_ids": list(selection.run_ids),
    }


def run_selection_from_json(data: dict) -> RunSelection:
    """The RunSelection of `run_selection_to_json` output."""
    return RunSelection(
        runs_regex=data.get("runs_regex"),
        experiments_regex=data.get("experiments_regex"),
        where=data.get("where"),
        query=data.get("query"),
        modified_after=parse_iso(data.get("modified_after")),
        include_archived=bool(data.get("include_archived", False)),
        run_ids=tuple(data.get("run_ids") or ()),
    )


def attribute_selection_to_json(selection: AttributeSelection) -> dict:
    """An AttributeSelection as JSON types (every field, unlike its fingerprint form `to_json`)."""
    return {
        "regex": selection.regex,
        "names": list(selection.names),
        "include_kinds": sorted(k.value for k in selection.include_kinds),
        "exclude_kinds": sorted(k.value for k in selection.exclude_kinds),
        "include_previews": selection.include_previews,
    }


def attribute_selection_from_json(data: dict) -> AttributeSelection:
    """The AttributeSelection of `attribute_selection_to_json` output."""
    include = data.get("include_kinds")
    return AttributeSelection(
        regex=data.get("regex"),
        names=tuple(data.get("names") or ()),
        include_kinds=frozenset(AttributeKind(k) for k in include) if include is not None else frozenset(AttributeKind),
        exclude_kinds=frozenset(AttributeKind(k) for k in data.get("exclude_kinds") or ()),
        include_previews=bool(data.get("include_previews", False)),
    )


@dataclass(frozen=True)
class ExportOptions:
    """What to export and where; JSON-typed for flow parameters. `api_token` is never serialised or shown."""

    source: str = "neptune3"
    projects: tuple[str, ...] = ()
    workspace: str | None = None
    include_projects: str | None = None
    exclude_projects: str | None = None
    data_path: str = "./exports/data"
    files_path: str = "./exports/files"
    runs: RunSelection = field(default_factory=RunSelection)
    attributes: AttributeSelection = field(default_factory=AttributeSelection)
    api_token: str | None = field(default=None, repr=False, compare=False)
    workers: int = 4
    include_models: bool = False  # 2.x model registry: models and versions under <project-dir>/<scope>/
    processes: int | None = None  # worker processes (export_processes.py); None: cores - 1 for a remote source

    def to_json(self) -> dict:
        """Every option except the token, as JSON types."""
        return {
            "source": self.source,
            "projects": list(self.projects),
            "workspace": self.workspace,
            "include_projects": self.include_projects,
            "exclude_projects": self.exclude_projects,
            "data_path": str(self.data_path),
            "files_path": str(self.files_path),
            "runs": run_selection_to_json(self.runs),
            "attributes": attribute_selection_to_json(self.attributes),
            "workers": self.workers,
            "include_models": self.include_models,
            "processes": self.processes,
        }

    @classmethod
    def from_json(cls, data: dict, api_token: str | None = None) -> ExportOptions:
        """Options from `to_json()` output; the token comes from the argument (or the environment later)."""
        return cls(
            source=data.get("source", "neptune3"),
            projects=tuple(data.get("projects") or ()),
            workspace=data.get("workspace"),
            include_projects=data.get("include_projects"),
            exclude_projects=data.get("exclude_projects"),
            data_path=str(data.get("data_path", "./exports/data")),
            files_path=str(data.get("files_path", "./exports/files")),
            runs=run_selection_from_json(data.get("runs") or {}),
            attributes=attribute_selection_from_json(data.get("attributes") or {}),
            api_token=api_token,
            workers=int(data.get("workers", 4)),
            include_models=bool(data.get("include_models", False)),
            processes=None if data.get("processes") is None else int(data["processes"]),
        )

    def fingerprint(self) -> str:
        """Hash of what decides a run's content (source kind + attribute selection); run selection and paths excluded."""
        payload = {"source": self.source, "attributes": self.attributes.to_json()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]

    def manifest_options(self) -> dict:
        """The options record a manifest keeps: the fingerprint planning compares, and every option."""
        return {"fingerprint": self.fingerprint(), "json": self.to_json()}

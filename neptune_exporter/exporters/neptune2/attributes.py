"""Neptune 2.x attributes: the client's attribute classes and type names, mapped to exported types and selected."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from neptune_exporter.model import AttributeType
from neptune_exporter.selection import AttributeSelection, compile_regex, matches_kind, matches_path

# Neptune 2.x attribute type names (AttributeType values of the client) → the exported attribute type.
ATOM_TYPES: dict[str, AttributeType] = {
    "float": AttributeType.FLOAT,
    "int": AttributeType.INT,
    "bool": AttributeType.BOOL,
    "string": AttributeType.STRING,
    "datetime": AttributeType.DATETIME,
    "stringSet": AttributeType.STRING_SET,
    "experimentState": AttributeType.STRING,  # sys/state: "Active" / "Inactive"
    "gitRef": AttributeType.STRING,  # the commit id
    "notebookRef": AttributeType.STRING,  # the notebook name
}


OTHER_TYPES: dict[str, AttributeType] = {
    "floatSeries": AttributeType.FLOAT_SERIES,
    "stringSeries": AttributeType.STRING_SERIES,
    "imageSeries": AttributeType.FILE_SERIES,
    "file": AttributeType.FILE,
    "fileSet": AttributeType.FILE_SET,
    "artifact": AttributeType.ARTIFACT,
}


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceAttribute:
    """One attribute of a 2.x run: its path, 2.x type name, exported type and the client's attribute object."""

    path: str
    neptune_type: str
    attribute_type: AttributeType
    handle: Any = None


def neptune_type_of(attribute: Any) -> str | None:
    """2.x type name of a client attribute object (by class), None for types this exporter does not know."""
    from neptune import attributes as na

    classes = {
        na.Float: "float",
        na.Integer: "int",
        na.Boolean: "bool",
        na.String: "string",
        na.Datetime: "datetime",
        na.StringSet: "stringSet",
        na.RunState: "experimentState",
        na.GitRef: "gitRef",
        na.NotebookRef: "notebookRef",
        na.FloatSeries: "floatSeries",
        na.StringSeries: "stringSeries",
        na.FileSeries: "imageSeries",
        na.File: "file",
        na.FileSet: "fileSet",
        na.Artifact: "artifact",
    }
    return classes.get(type(attribute))


def flatten_structure(structure: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, attribute) for every leaf of a run's nested `get_structure()` dict."""
    for name, value in structure.items():
        path = f"{prefix}/{name}" if prefix else name
        if isinstance(value, dict):
            yield from flatten_structure(value, path)
        else:
            yield path, value


def source_attributes(structure: dict) -> list[SourceAttribute]:
    """The run's attributes with their types; attributes of unknown types are logged and left out."""
    found = []
    for path, handle in flatten_structure(structure):
        neptune_type = neptune_type_of(handle)
        exported = (ATOM_TYPES.get(neptune_type) or OTHER_TYPES.get(neptune_type)) if neptune_type else None
        if neptune_type is None or exported is None:
            log.warning(
                "attribute %s has a type this exporter does not know (%s); left out", path, type(handle).__name__
            )
            continue
        found.append(SourceAttribute(path, neptune_type, exported, handle))
    return found


def select_attributes(found: Iterable[SourceAttribute], selection: AttributeSelection) -> list[SourceAttribute]:
    """Attributes chosen by kind and by path (exact names and/or regex)."""
    pattern = compile_regex(selection.regex, "--attributes")
    return [a for a in found if matches_kind(a.attribute_type, selection) and matches_path(a.path, selection, pattern)]


def atom_value(attribute_type: AttributeType, value: Any) -> Any:
    """A table value as the exported type: floats arrive as numbers or as "NaN"/"Infinity"/"-Infinity" text."""
    if attribute_type is AttributeType.FLOAT:
        return float(value)
    if attribute_type is AttributeType.INT:
        return int(value)
    return value

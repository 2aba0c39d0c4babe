"""Neptune 2.x attributes: the client's attribute classes and type names, mapped to exported types and selected."""

from __future__ import annotations

import logging
from collections.abc import Iterable
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


def run_attributes(handle: Any) -> list[SourceAttribute]:
    """Every attribute of an opened run (or model) at the path Neptune reports, with a client attribute object that
    reads exactly that path. The client's own structure splits paths on "/" and drops empty parts, so `a//b`,
    `trailing/` and `/leading` would be read at paths the server does not know (or at another attribute's): the
    client joins a one-element path list as it is."""
    from neptune.attributes.utils import create_attribute_from_type

    reported = handle._backend.get_attributes(handle._id, handle.container_type)
    return source_attributes(
        (a.path, a.type.value, create_attribute_from_type(a.type, handle, [a.path])) for a in reported
    )


def source_attributes(reported: Iterable[tuple[str, str, Any]]) -> list[SourceAttribute]:
    """(path, 2.x type name, client object) as attributes with their exported types; unknown types logged, left out."""
    found = []
    for path, neptune_type, handle in reported:
        exported = ATOM_TYPES.get(neptune_type) or OTHER_TYPES.get(neptune_type)
        if exported is None:
            log.warning("attribute %s has a type this exporter does not know (%s); left out", path, neptune_type)
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

"""NQL text for the Neptune 2.x server: run filters (`--where`, `--query`, modified after, one sys id) combined."""

from __future__ import annotations

from datetime import datetime

from neptune_exporter.model import as_utc as model_as_utc


def combine_nql(*clauses: str | None) -> str | None:
    """AND of the non-empty NQL clauses, each parenthesised; None when there are none."""
    parts = [c.strip() for c in clauses if c and c.strip()]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return " AND ".join(f"({p})" for p in parts)


def nql_datetime(when: datetime) -> str:
    """A datetime as the 2.x server reads it in NQL (UTC, milliseconds, Z)."""
    text = model_as_utc(when).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    return f"{text}Z"


def modified_after_nql(when: datetime | None) -> str | None:
    """NQL keeping runs modified strictly after `when`."""
    if when is None:
        return None
    return f'`sys/modification_time`:datetime > "{nql_datetime(when)}"'


def where_nql(where: str | None) -> str | None:
    """`--where` translated to NQL by the shared expression language (exporters/where.py)."""
    if not where:
        return None
    from neptune_exporter.exporters.where import parse_where, to_nql

    return to_nql(parse_where(where))


def sys_id_nql(sys_id: str) -> str:
    """NQL selecting one container by its sys id."""
    return f'`sys/id`:string = "{sys_id}"'

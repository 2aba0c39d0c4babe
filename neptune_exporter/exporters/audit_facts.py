"""What a source audit knows of one run (either side: the server or the export), in one comparable form."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from neptune_exporter.model import as_utc


@dataclass
class SeriesFacts:
    """What is known of one series: None where the side cannot tell cheaply."""

    count: int | None = None
    first_step: float | None = None
    last_step: float | None = None
    last_value: Any = None


@dataclass
class RunFacts:
    """One run as one side reports it: attribute types, atom values, series facts, file sizes."""

    run_id: str
    types: dict[str, str] = field(default_factory=dict)
    atoms: dict[str, Any] = field(default_factory=dict)
    series: dict[str, SeriesFacts] = field(default_factory=dict)
    file_sizes: dict[str, int] = field(default_factory=dict)  # single files whose size the side reports
    series_points: int | None = None  # points of all its series together, where the side counts them


def normal(value: Any) -> Any:
    """One comparable form for both sides: UTC ISO datetimes (ms), sorted string sets, plain numbers and dicts."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return as_utc(value).isoformat(timespec="milliseconds")
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [normal(v) for v in value]
    return value


@dataclass
class Window:
    """Server points of one series in a step window (steps in millionths: low exclusive, high inclusive; None:
    unbounded). A deep audit's windows tile the step line, so the export's points fall in exactly one."""

    low: int | None
    high: int | None
    steps: np.ndarray  # int64 millionths (the export's step unit)
    values: Any  # float64 array for float series, else a list of plain values

"""W&B comparison helpers: order-free history digests, config value normalisation, artifact digests, run facts."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neptune_exporter.validation.compare import (
    Difference,
    PointDigest,
    compare_digests,
    compare_mappings,
)

NO_TIME = int(np.iinfo(np.int64).min)  # a point or row without a time (times before 1970 are negative, not missing)
POINT_TIME = "_neptune_time/"  # + key: a point's own epoch-ms time in its row, where it is not the row's `_timestamp`
WANDB_ROW_KEYS = frozenset({"_step", "_timestamp", "_runtime", "_wandb"})  # W&B's own; every other key is compared


def _own_key(key: str) -> bool:
    """W&B's own row keys and the point times kept beside a row's values: not values of a Neptune attribute."""
    return key in WANDB_ROW_KEYS or key.startswith(POINT_TIME)


def md5_base64(path: Path, chunk_size: int = 1 << 20) -> str:
    """W&B's artifact entry digest of a file (base64 md5), streamed."""
    md5 = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            md5.update(chunk)
    return base64.b64encode(md5.digest()).decode("ascii")


def histogram_number(value: dict) -> float:
    """A histogram ({values, bins}) as one exact float (52-bit hash) so histogram series share PointDigest."""
    canonical = json.dumps([[float(v) for v in value.get("values", [])], [float(b) for b in value.get("bins", [])]])
    return float(int.from_bytes(hashlib.blake2b(canonical.encode(), digest_size=8).digest(), "little") % 2**52)


def comparable(value: Any) -> Any:
    """Config values with NaN made equal to itself and ints/floats compared by value."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


@dataclass
class HistoryDigest:
    """Order-free digests of a run's history: per key (step, row time, value), plus rows and last values.

    Points are buffered per key and folded into PointDigests in arrays (memory bounded by `flush_points`).
    """

    series: dict[str, PointDigest] = field(default_factory=dict)
    rows: PointDigest = field(default_factory=PointDigest)  # (step, row time, number of keys)
    last: dict[str, Any] = field(default_factory=dict)
    flush_points: int = 200_000
    _pending: dict[str, tuple[list, list, list]] = field(default_factory=dict)
    _buffered: int = 0

    def log(self, row: dict[str, Any], step: int) -> None:
        """Accept a row like `wandb.Run.log` does (the loader's writer drives this on the expected side)."""
        self.add_row({**{k: _plain(v) for k, v in row.items()}, "_step": step})

    def add_row(self, row: dict[str, Any]) -> None:
        """A history row as read back (`_step`, `_timestamp`, keys → numbers or histogram dicts)."""
        step = int(row["_step"])
        timestamp = round(float(row["_timestamp"]) * 1000) if "_timestamp" in row else NO_TIME
        values = {k: v for k, v in row.items() if not _own_key(k)}
        self._add("\x00rows", step, timestamp, float(len(values)))
        for key, value in values.items():
            number = histogram_number(value) if isinstance(value, dict) else float(value)
            own = row.get(POINT_TIME + key)  # the point's own time where it is not its row's
            self._add(key, step, timestamp if own is None else int(own), number)
            self.last[key] = number
        if self._buffered >= self.flush_points:
            self.flush()

    def _add(self, key: str, step: int, timestamp: int, number: float) -> None:
        steps, timestamps, numbers = self._pending.setdefault(key, ([], [], []))
        steps.append(step)
        timestamps.append(timestamp)
        numbers.append(number)
        self._buffered += 1

    def flush(self) -> HistoryDigest:
        for key, (steps, timestamps, numbers) in self._pending.items():
            digest = self.rows if key == "\x00rows" else self.series.setdefault(key, PointDigest())
            digest.update(np.array(steps, np.int64), np.array(timestamps, np.int64), np.array(numbers, np.float64))
        self._pending, self._buffered = {}, 0
        return self

    def add_rows(self, rows: Iterable[dict[str, Any]]) -> HistoryDigest:
        for row in rows:
            self.add_row(row)
        return self.flush()


def _plain(value: Any) -> Any:
    """wandb.Histogram → the dict W&B stores; other values unchanged."""
    if hasattr(value, "histogram") and hasattr(value, "bins"):
        return {"values": list(value.histogram), "bins": list(value.bins)}
    return value


@dataclass
class WandbFacts:
    """What a W&B run holds, read from a `.wandb` log or `wandb.Api`."""

    target_run_id: str
    name: str
    group: str
    tags: list[str]
    config: dict[str, Any]
    summary: dict[str, Any]
    history: HistoryDigest
    artifacts: dict[str, dict[str, str]]  # Neptune attribute → {path inside its artifact: base64 md5}


def fact_differences(project_id: str, run_id: str, expected: WandbFacts, actual: WandbFacts) -> list[Difference]:
    """Every way two W&B runs' facts differ (actual config/summary keys the expectation does not name are W&B's own)."""
    run_expected = {"name": expected.name, "group": expected.group, "tags": sorted(expected.tags)}
    run_actual = {"name": actual.name, "group": actual.group, "tags": sorted(actual.tags)}
    config_actual = {k: v for k, v in actual.config.items() if k != "_wandb"}
    summary_keys = set(expected.summary)
    summary_actual = {k: v for k, v in actual.summary.items() if k in summary_keys}
    artifacts_expected = {f"{a}/{p}": d for a, entries in expected.artifacts.items() for p, d in entries.items()}
    artifacts_actual = {f"{a}/{p}": d for a, entries in actual.artifacts.items() for p, d in entries.items()}
    return (
        compare_mappings(project_id, run_id, "run", run_expected, run_actual)
        + compare_mappings(project_id, run_id, "param", comparable(expected.config), comparable(config_actual))
        + compare_mappings(project_id, run_id, "summary", comparable(expected.summary), comparable(summary_actual))
        + compare_digests(project_id, run_id, "metric", expected.history.series, actual.history.series)
        + compare_digests(project_id, run_id, "history", {"rows": expected.history.rows}, {"rows": actual.history.rows})
        + compare_mappings(
            project_id, run_id, "metric-last", comparable(expected.history.last), comparable(actual.history.last)
        )
        + compare_mappings(project_id, run_id, "artifact", artifacts_expected, artifacts_actual)
    )

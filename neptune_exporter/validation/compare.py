"""Target-independent comparison helpers: order-free point digests, file digests and mapping differences."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
_CANONICAL_NAN = np.float64("nan").view(np.uint64)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised (uint64 arithmetic wraps)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def value_bits(values: np.ndarray, infinity_stored_as: float | None = None) -> np.ndarray:
    """float64 → uint64 bits with every NaN made equal (NaN-aware equality) and ±inf as the target stores it."""
    values = np.asarray(values, dtype=np.float64).copy()
    if infinity_stored_as is not None:
        values[np.isposinf(values)] = infinity_stored_as
        values[np.isneginf(values)] = -infinity_stored_as
    values[values == 0] = 0.0  # -0.0 and 0.0 are one value
    bits = values.view(np.uint64).copy()
    bits[np.isnan(values)] = _CANONICAL_NAN
    return bits


@dataclass
class PointDigest:
    """Order-independent summary of a series' points: count, step range and a hash of (step, timestamp, value)."""

    count: int = 0
    digest: int = 0
    min_step: int | None = None
    max_step: int | None = None

    def update(
        self, steps: np.ndarray, timestamps_ms: np.ndarray, values: np.ndarray, infinity_stored_as: float | None = None
    ) -> None:
        """Add points (integer steps, epoch-ms timestamps, float values)."""
        steps = np.asarray(steps, dtype=np.int64)
        if not steps.size:
            return
        with np.errstate(over="ignore"):
            h = _mix(steps.view(np.uint64) + np.uint64(0x9E3779B97F4A7C15))
            h = _mix(h ^ np.asarray(timestamps_ms, dtype=np.int64).view(np.uint64))
            h = _mix(h ^ value_bits(values, infinity_stored_as))
            total = int(np.sum(h, dtype=np.uint64))
        self.digest = (self.digest + total) & 0xFFFFFFFFFFFFFFFF
        self.count += int(steps.size)
        low, high = int(steps.min()), int(steps.max())
        self.min_step = low if self.min_step is None else min(self.min_step, low)
        self.max_step = high if self.max_step is None else max(self.max_step, high)

    def to_json(self) -> dict:
        return {
            "count": self.count,
            "min_step": self.min_step,
            "max_step": self.max_step,
            "digest": f"{self.digest:016x}",
        }


def file_digest(path: Path, chunk_size: int = 1 << 20) -> tuple[int, str]:
    """(size, sha256 hex) of a file, streamed."""
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


@dataclass
class Difference:
    """One way the target differs from the export."""

    project_id: str
    run_id: str
    kind: str  # "run" | "param" | "tag" | "metric" | "artifact"
    key: str
    problem: str  # "missing" | "unexpected" | "value" | "count" | "points" | "size" | "sha256" | ...
    expected: Any = None
    actual: Any = None

    def to_json(self) -> dict:
        return {k: _jsonable(v) for k, v in self.__dict__.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return repr(value)
    if isinstance(value, (str, int, float, bool, type(None), list, dict)):
        return value
    return str(value)


def short(value: Any, limit: int = 200) -> Any:
    """Values in reports stay readable: long strings are cut with their length noted."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}… ({len(value)} chars)"
    return value


def compare_mappings(
    project_id: str, run_id: str, kind: str, expected: Mapping[str, Any], actual: Mapping[str, Any]
) -> list[Difference]:
    """Missing, unexpected and differing keys of two key → value mappings."""
    differences = []
    for key in sorted(expected.keys() | actual.keys()):
        if key not in actual:
            differences.append(Difference(project_id, run_id, kind, key, "missing", short(expected[key]), None))
        elif key not in expected:
            differences.append(Difference(project_id, run_id, kind, key, "unexpected", None, short(actual[key])))
        elif expected[key] != actual[key]:
            differences.append(
                Difference(project_id, run_id, kind, key, "value", short(expected[key]), short(actual[key]))
            )
    return differences


def compare_digests(
    project_id: str, run_id: str, kind: str, expected: Mapping[str, PointDigest], actual: Mapping[str, PointDigest]
) -> list[Difference]:
    """Series present on one side only, or whose counts / steps / values / timestamps differ."""
    differences = []
    for key in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(key), actual.get(key)
        if got is None or want is None:
            problem = "missing" if got is None else "unexpected"
            differences.append(
                Difference(project_id, run_id, kind, key, problem, want and want.to_json(), got and got.to_json())
            )
        elif want.count != got.count:
            differences.append(Difference(project_id, run_id, kind, key, "count", want.count, got.count))
        elif (want.min_step, want.max_step, want.digest) != (got.min_step, got.max_step, got.digest):
            differences.append(Difference(project_id, run_id, kind, key, "points", want.to_json(), got.to_json()))
    return differences


@dataclass
class FileExpectation:
    """Expected artifacts: relative target path → (size, sha256)."""

    files: dict[str, tuple[int, str]] = field(default_factory=dict)

    def add_file(self, local: Path, target_path: str) -> None:
        self.files[target_path] = file_digest(local)

    def add_tree(self, local_dir: Path, target_dir: str) -> None:
        for path in sorted(p for p in Path(local_dir).rglob("*") if p.is_file()):
            self.add_file(path, f"{target_dir}/{path.relative_to(local_dir).as_posix()}".lstrip("/"))


def compare_files(
    project_id: str, run_id: str, expected: Mapping[str, tuple[int, str]], actual: Mapping[str, tuple[int, str]]
) -> list[Difference]:
    """Artifacts missing, unexpected, or with another size or sha256."""
    differences = []
    for key in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(key), actual.get(key)
        if got is None or want is None:
            problem = "missing" if got is None else "unexpected"
            differences.append(Difference(project_id, run_id, "artifact", key, problem, want, got))
        elif want[0] != got[0]:
            differences.append(Difference(project_id, run_id, "artifact", key, "size", want[0], got[0]))
        elif want[1] != got[1]:
            differences.append(Difference(project_id, run_id, "artifact", key, "sha256", want[1], got[1]))
    return differences


@dataclass
class RecordDigest:
    """Order-free summary of records (JSON-able lists): their count and the sum of their hashes."""

    count: int = 0
    digest: int = 0

    def add(self, record: list) -> None:
        text = json.dumps(record, ensure_ascii=False, sort_keys=True)
        self.digest = (
            self.digest + int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
        ) & 0xFFFFFFFFFFFFFFFF
        self.count += 1

    def to_json(self) -> dict:
        return {"count": self.count, "digest": f"{self.digest:016x}"}


def point_set(chunks, infinity_stored_as: float | None = None) -> set[tuple[int, int, int]]:
    """Points as (step, timestamp, value bits as the target stores them), NaN-aware."""
    points: set[tuple[int, int, int]] = set()
    for steps, stamps, values in chunks:
        bits = value_bits(np.asarray(values, dtype=np.float64), infinity_stored_as)
        points.update(
            zip(
                np.asarray(steps, dtype=np.int64).tolist(),
                np.asarray(stamps, dtype=np.int64).tolist(),
                bits.tolist(),
                strict=True,
            )
        )
    return points


def point_examples(points: set[tuple[int, int, int]], limit: int = 10) -> list[dict]:
    """The first few points (by step) in readable form."""
    chosen = sorted(points)[:limit]
    values = np.array([bits for _, _, bits in chosen], dtype=np.uint64).view(np.float64).tolist()
    return [
        {"step": step, "timestamp": stamp, "value": value}
        for (step, stamp, _), value in zip(chosen, values, strict=True)
    ]

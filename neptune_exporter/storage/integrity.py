"""Part integrity, the one check every reader of an export makes: each part against its manifest's size, sha256, rows.

Cheap on every read: a part's size is compared first; its sha256 and row count are measured once and kept in
`<run-file>.verified.json` beside the run's manifest, keyed by the part's size, mtime and ctime, so a part that was
written, copied, replaced or touched since is measured again. The export records the parts it writes (it hashed
them as it wrote them), so a fresh export is never hashed twice. The cache only saves work: what a part must be
always comes from the manifest. A cache that cannot be written (a read-only copy of an export) costs a re-hash on
the next read. A change that keeps size, mtime and ctime (bit rot under the file system) is not seen while the cache
holds the part: delete the `*.verified.json` files to re-hash every part.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from neptune_exporter.errors import DamagedExportError
from neptune_exporter.storage.files import file_sha256
from neptune_exporter.storage.manifest import MANIFEST_SUFFIX, Manifest, PartInfo, manifest_path, replacing

log = logging.getLogger(__name__)

VERIFIED_SUFFIX = ".verified.json"
CACHE_FORMAT = 1
MISSING = "missing"
REEXPORT_REMEDY = "export the run again (rerun the same `neptune-exporter export`: it redoes damaged runs)"

# Run states a reader reports: parts match the manifest / a part does not / no manifest to check against (peer tool).
VERIFIED, DAMAGED, UNVERIFIED = "verified", "damaged", "unverified"


@dataclass(frozen=True)
class PartDamage:
    """One part that is not on disk as its manifest records it, and how."""

    path: str  # relative to the data root, as the manifest lists it
    problem: str

    def describe(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass(frozen=True)
class Measured:
    """What one part on disk held when it was last hashed (valid while size, mtime and ctime are unchanged)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    sha256: str
    rows: int | None  # None: the Parquet footer could not be read

    def same_file(self, stat: os.stat_result) -> bool:
        return (self.size, self.mtime_ns, self.ctime_ns) == (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def cache_path(data_root: Path | str, manifest: Manifest) -> Path:
    """`<run-file>.verified.json` beside the run's manifest."""
    path = manifest_path(data_root, manifest.project_id, manifest.run_id, manifest.scope)
    return path.with_name(path.name[: -len(MANIFEST_SUFFIX)] + VERIFIED_SUFFIX)


def _read_cache(path: Path) -> dict[str, Measured]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != CACHE_FORMAT:
            return {}
        return {part: Measured(**entry) for part, entry in data["parts"].items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.debug("ignoring unreadable verification cache %s (%s)", path, exc)
        return {}


def _write_cache(path: Path, entries: dict[str, Measured]) -> None:
    """Replace the cache atomically; a folder we cannot write to only means hashing again next time."""
    try:
        with replacing(path) as handle:
            json.dump({"format": CACHE_FORMAT, "parts": {k: asdict(v) for k, v in sorted(entries.items())}}, handle)
    except OSError as exc:
        log.debug("could not write the verification cache %s (%s)", path, exc)


def _count_rows(path: Path) -> int | None:
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowInvalid):
        return None


def _measure(path: Path, stat: os.stat_result) -> Measured:
    return Measured(stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, file_sha256(path), _count_rows(path))


def _problem(part: PartInfo, measured: Measured) -> str | None:
    if measured.sha256 != part.sha256:
        return "its sha256 differs from the manifest's (overwritten or corrupted)"
    if measured.rows != part.rows:
        return f"{'unreadable' if measured.rows is None else measured.rows} rows, the manifest records {part.rows}"
    return None


def _check(data_root: Path, part: PartInfo, known: Measured | None) -> tuple[str | None, Measured | None]:
    """(problem or None, the measurement to cache) of one part: existence, then size, then sha256 and rows."""
    path = data_root / part.path
    try:
        stat = path.stat()
    except FileNotFoundError:
        return MISSING, None
    if stat.st_size != part.bytes:
        return f"{stat.st_size:,} bytes, the manifest records {part.bytes:,} (truncated or replaced)", None
    measured = known if known is not None and known.same_file(stat) else _measure(path, stat)
    return _problem(part, measured), measured


def damaged_parts(data_root: Path | str, manifest: Manifest) -> list[PartDamage]:
    """The parts of `manifest` that are not on disk as it records them (empty: every part verified)."""
    data_root = Path(data_root)
    cached_at = cache_path(data_root, manifest)
    cache = _read_cache(cached_at)
    damage, entries = [], {}
    for part in manifest.parts:
        problem, measured = _check(data_root, part, cache.get(part.path))
        if measured is not None:
            entries[part.path] = measured
        if problem is not None:
            damage.append(PartDamage(part.path, problem))
    if entries != cache:
        _write_cache(cached_at, entries)
    return damage


def run_state(data_root: Path | str, manifest: Manifest) -> tuple[str, list[PartDamage]]:
    """VERIFIED, DAMAGED (with the damage) or UNVERIFIED (a manifest derived from peer-tool parts: nothing to check)."""
    if manifest.derived:
        return UNVERIFIED, []
    damage = damaged_parts(data_root, manifest)
    return (DAMAGED if damage else VERIFIED), damage


def describe_damage(damage: list[PartDamage]) -> str:
    """`N part(s) damaged: <first part>: <problem>[; and M more]` (one line)."""
    more = f"; and {len(damage) - 1} more" if len(damage) > 1 else ""
    return f"{len(damage)} part(s) differ from the manifest: {damage[0].describe()}{more}"


def require_intact(data_root: Path | str, manifest: Manifest, remedy_then: str = "") -> None:
    """DamagedExportError (one line, naming the run, the first damaged part and the fix) unless every part verifies."""
    state, damage = run_state(data_root, manifest)
    if state == DAMAGED:
        raise DamagedExportError(
            f"the export of run {manifest.run_id!r} ({manifest.project_id}) is damaged: {describe_damage(damage)}",
            REEXPORT_REMEDY + (f", then {remedy_then}" if remedy_then else ""),
            run=manifest.run_id,
        )


def remember_written(data_root: Path | str, manifest: Manifest, written: Iterable[PartInfo]) -> None:
    """Record the parts an export just wrote (hashed as they were written) as measured, keeping the run's other
    cached parts that still match; parts renamed since (part 0) are matched by their sha256."""
    data_root = Path(data_root)
    trusted = {part.sha256 for part in written}
    cached_at = cache_path(data_root, manifest)
    cache = _read_cache(cached_at)
    entries = {}
    for part in manifest.parts:
        try:
            stat = (data_root / part.path).stat()
        except FileNotFoundError:
            continue
        known = cache.get(part.path)
        if known is not None and known.same_file(stat):
            entries[part.path] = known
        elif part.sha256 in trusted and stat.st_size == part.bytes:
            entries[part.path] = Measured(stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, part.sha256, part.rows)
    _write_cache(cached_at, entries)

"""A distributed export on shared storage: the marker its parent writes in the data path, each chunk's journal of
finished runs and its heartbeat there, and the split of a plan into chunks (the flows run the chunks on Prefect
workers; nothing here imports Prefect).

Everything lives under `<data>/.neptune-exporter-distributed/<command>/` (a dot folder: never read as a project; one
place per distributed command, e.g. `export-neptune3`, `load-mlflow`, `validate-wandb`, so a distributed load and a
distributed validation of one data path never touch each other's files): `marker.json` names the distribution now
running (a random token); `<token>/<chunk>-<attempt>.jsonl` holds one JSON result per finished run of that chunk
attempt (appended and flushed as each run ends, so a crashed chunk leaves the results of its finished runs);
`<token>/<chunk>-<attempt>.beat` changes every few seconds while the chunk runs.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from neptune_exporter.errors import InvalidOptionError, StorageNotSharedError
from neptune_exporter.model import utc_now_iso
from neptune_exporter.storage.manifest import Manifest, manifest_path, read_manifest, write_json_atomic
from neptune_exporter.storage.parquet import SERIES_TYPE_NAMES

FOLDER = ".neptune-exporter-distributed"
MARKER = "marker.json"
POLL_SECONDS = 1.0
NOT_SHARED_REMEDY = (
    "mount the same shared storage (NFS, a mounted bucket) at the same absolute path on every worker and on the "
    "machine that starts the export, or export without --distribute"
)


@dataclass(frozen=True)
class Distribution:
    """The export flow's `distribute` parameter: chunks of at most `chunk_runs` runs on `work_pool`, at most
    `max_parallel` at a time."""

    work_pool: str
    chunk_runs: int = 100
    max_parallel: int = 4

    def to_json(self) -> dict:
        return {"work_pool": self.work_pool, "chunk_runs": self.chunk_runs, "max_parallel": self.max_parallel}

    @classmethod
    def from_json(cls, data: dict) -> Distribution:
        """Checked: a work pool named, at least one run per chunk and one chunk at a time (InvalidOptionError)."""
        unknown = set(data) - {"work_pool", "chunk_runs", "max_parallel"}
        if unknown:
            raise InvalidOptionError(
                f"distribute: unknown key(s) {', '.join(sorted(unknown))}", "use work_pool, chunk_runs, max_parallel"
            )
        given = {key: value for key, value in data.items() if value is not None}
        distribution = cls(
            str(given.get("work_pool", "")), int(given.get("chunk_runs", 100)), int(given.get("max_parallel", 4))
        )
        if not distribution.work_pool:
            raise InvalidOptionError("--distribute needs the work pool its chunks run on", "pass --work-pool NAME")
        if distribution.chunk_runs < 1 or distribution.max_parallel < 1:
            raise InvalidOptionError(
                f"--chunk-runs {distribution.chunk_runs} / --max-parallel {distribution.max_parallel}: both must be "
                "at least 1",
                "pass --chunk-runs 1 or more and --max-parallel 1 or more",
            )
        return distribution


def place(data_root: Path | str, command: str) -> Path:
    """The folder of `command`'s distributions in the data path (`command`: e.g. `export-neptune3`, `load-mlflow`)."""
    if not command or "/" in command or command.startswith("."):
        raise ValueError(f"not a command name: {command!r}")
    return Path(data_root) / FOLDER / command


# ----------------------------------------------------------------------------- the shared-storage marker


def write_marker(
    where: Path | str,
    owner: str,
    alive_for: float = 0.0,
    on_wait: Callable[[str], object] | None = None,
    sleep: Callable[[float], object] = time.sleep,
) -> str:
    """Start a distribution in `where` (its command's `place`): write a new marker; its token (chunks check it). Chunks of an earlier distribution that
    still run (their parent was killed) see the new marker and start no further run: this waits until their heartbeats
    stop, or stand still for `alive_for` seconds (their worker is gone too), then clears what they left."""
    token = uuid.uuid4().hex
    marker = {"token": token, "owner": owner, "host": socket.gethostname(), "written": utc_now_iso()}
    write_json_atomic(Path(where) / MARKER, marker)
    while beating := beating_elsewhere(where, token, alive_for):
        if on_wait is not None:
            on_wait(f"waiting for {len(beating)} chunk(s) of an earlier distribution to stop: {', '.join(beating)}")
            on_wait = None  # said once
        sleep(POLL_SECONDS)
    for path in Path(where).iterdir():
        if path.is_dir() and path.name != token:
            shutil.rmtree(path, ignore_errors=True)
    return token


def beating_elsewhere(where: Path | str, token: str, alive_for: float) -> list[str]:
    """Chunks of other distributions whose heartbeat changed within the last `alive_for` seconds (`<chunk>-<try>`)."""
    now, found = time.time(), []
    for beat in Path(where).glob("*/*.beat"):
        try:
            fresh = beat.parent.name != token and now - beat.stat().st_mtime < alive_for
        except OSError:  # it stopped meanwhile
            continue
        if fresh:
            found.append(beat.stem)
    return sorted(found)


def read_marker(where: Path | str) -> dict | None:
    try:
        return json.loads((Path(where) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_marker(where: Path | str, token: str) -> None:
    """StorageNotSharedError unless this machine sees the marker with `token` in the data path."""
    marker = read_marker(where)
    if marker is not None and marker.get("token") == token:
        return
    seen = (
        "no marker there"
        if marker is None
        else f"the marker of another distribution ({marker.get('owner')} on {marker.get('host')}, "
        f"{marker.get('written')})"
    )
    raise StorageNotSharedError(
        f"the data path {Path(where).parent.parent} is not shared storage: this worker ({socket.gethostname()}) sees "
        f"{seen}, not the marker the distributing flow run wrote there",
        NOT_SHARED_REMEDY,
    )


def still_current(where: Path | str, token: str) -> bool:
    """True while the marker with `token` is the data path's marker (a newer distribution replaces it)."""
    marker = read_marker(where)
    return marker is not None and marker.get("token") == token


def clear(where: Path | str, token: str) -> None:
    """The distribution is merged: its journals, heartbeats and marker go."""
    if still_current(where, token):
        shutil.rmtree(where, ignore_errors=True)
        with contextlib.suppress(OSError):  # the last command's place gone: the dot folder goes too
            Path(where).parent.rmdir()


# ----------------------------------------------------------------------------- chunk journals and heartbeats


@dataclass(frozen=True)
class ChunkFiles:
    """The journal and heartbeat files of one attempt of one chunk."""

    where: str
    token: str
    chunk: str
    attempt: int

    @property
    def journal(self) -> Path:
        return Path(self.where) / self.token / f"{self.chunk}-{self.attempt}.jsonl"

    @property
    def beat(self) -> Path:
        return Path(self.where) / self.token / f"{self.chunk}-{self.attempt}.beat"

    @property
    def lost(self) -> Path:
        """Written by the parent when it gives this attempt up as lost: the attempt, if it still runs, starts no
        further run (its retry does them)."""
        return Path(self.where) / self.token / f"{self.chunk}-{self.attempt}.lost"

    def give_up(self, reason: str) -> None:
        write_json_atomic(self.lost, {"reason": reason, "written": utc_now_iso()})

    def given_up(self) -> bool:
        """The parent gave this attempt up, or a newer distribution replaced its marker (its parent was killed)."""
        return self.lost.exists() or not still_current(self.where, self.token)

    def append(self, result: dict) -> None:
        """One finished run's result, on disk before the next run's (a crash loses no finished run)."""
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(result, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    @contextmanager
    def beating(self, every_seconds: float) -> Iterator[None]:
        """A thread rewrites the heartbeat file every `every_seconds` for the block (the parent watches it change)."""
        stop, count = threading.Event(), itertools.count(1)

        def beat() -> None:
            write_json_atomic(self.beat, {"beat": next(count), "pid": os.getpid(), "host": socket.gethostname()})

        def keep_beating() -> None:
            while not stop.wait(every_seconds):
                beat()

        beat()  # the first one before the block starts
        thread = threading.Thread(target=keep_beating, name=f"beat-{self.chunk}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.beat.unlink(missing_ok=True)  # stopped: a newer distribution need not wait for it

    def read_beat(self) -> str | None:
        """The heartbeat's content (None before the first beat)."""
        try:
            return self.beat.read_text(encoding="utf-8")
        except OSError:
            return None


def finished_results(where: Path | str, token: str, chunk: str) -> dict[str, dict]:
    """Results journaled by every attempt of `chunk`, by run key (`project/run`); a line cut short by a crash is
    left out."""
    results: dict[str, dict] = {}
    for path in sorted((Path(where) / token).glob(f"{chunk}-*.jsonl")):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        for line in text.splitlines(keepends=True):
            if line.endswith("\n"):
                result = json.loads(line)
                results[f"{result['project_id']}/{result['run_id']}"] = result
    return results


# ----------------------------------------------------------------------------- splitting a plan into chunks


def plan_key(plan: dict) -> str:
    return f"{plan['run']['project_id']}/{plan['run']['run_id']}"


def expected_points(plan: dict, data_root: Path | str) -> int | None:
    """Series points an earlier export of the run held (its manifest), the best guess of its size; None if unknown."""
    if plan["action"] == "full":
        return None
    run = plan["run"]
    manifest = read_manifest(manifest_path(Path(data_root), run["project_id"], run["run_id"], run.get("scope")))
    return None if manifest is None else series_points(manifest)


def series_points(manifest: Manifest) -> int:
    """Series points a manifest lists (its attributes' counts)."""
    return sum(int(entry["count"]) for entry in manifest.attributes.values() if entry["type"] in SERIES_TYPE_NAMES)


def plan_weights(plans: list[dict], data_root: Path | str) -> list[float]:
    """Each plan's expected points; the mean of the known ones (1 when none is known) where unknown."""
    known = [expected_points(plan, data_root) for plan in plans]
    values = [points for points in known if points is not None]
    mean = sum(values) / len(values) if values else 1.0
    return [float(points) if points is not None else mean for points in known]


def split_plans(
    plans: list[dict],
    chunk_runs: int,
    weights: list[float] | None = None,
    project: Callable[[dict], str] = lambda plan: plan["run"]["project_id"],
) -> list[list[dict]]:
    """Chunks by project (`project(plan)`), then by runs: a project's runs in as few chunks of at most `chunk_runs` as
    fit, spread so the chunks' weights (expected points) are as even as the greedy heaviest-first rule makes them;
    each chunk keeps the plan's order."""
    weights = weights or [1.0] * len(plans)
    by_project: dict[str, list[int]] = {}
    for index, plan in enumerate(plans):
        by_project.setdefault(project(plan), []).append(index)
    chunks: list[list[dict]] = []
    for indices in by_project.values():
        count = math.ceil(len(indices) / max(1, chunk_runs))
        bins: list[list[int]] = [[] for _ in range(count)]
        loads = [0.0] * count
        for index in sorted(indices, key=lambda i: (-weights[i], i)):
            open_bins = [b for b in range(count) if len(bins[b]) < chunk_runs]
            target = min(open_bins, key=lambda b: (loads[b], len(bins[b]), b))
            bins[target].append(index)
            loads[target] += weights[index]
        chunks += [[plans[i] for i in sorted(members)] for members in bins]
    return chunks

"""One writer per folder: an exclusive lock file that names its holder (pid, host, start time, what it does).

The lock is `fcntl.flock` on the lock file, so the kernel (or the NFS server) releases it when its holder dies, however
it dies: a lock file left by a killed process names a dead holder and is taken over (and logged). The holder deletes
the file when it is done. On a file system without `flock` the file's content decides: a holder that still runs on
this host (or runs on another host) keeps it, a dead one on this host is taken over.

`if_locked` says what a second writer does: "stop" (PathLockedError naming the holder and the fix) or "wait"
(`on_wait` is told once, then it polls until the holder is gone).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from neptune_exporter.errors import InvalidOptionError, OutputPathError, PathLockedError, RunInUseError
from neptune_exporter.model import utc_now_iso
from neptune_exporter.storage.manifest import MANIFEST_SUFFIX

log = logging.getLogger(__name__)

IF_LOCKED = ("stop", "wait")
EXPORT_LOCK = ".neptune-exporter.lock"  # in the data path: one export at a time
LOAD_LOCK = ".neptune-exporter.load-{target}.lock"  # in the data path: one load of it per target
RUN_LOCK_SUFFIX = ".export.lock"  # next to a run's manifest while a process exports the run
RUN_LOAD_LOCK_SUFFIX = ".load-{target}.lock"  # next to a run's manifest while a process loads it into a target
POLL_SECONDS = 0.5
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: what it does, its process id, host and since when."""

    purpose: str
    pid: int
    host: str
    started: str

    def describe(self) -> str:
        return f"{self.purpose} (pid {self.pid} on {self.host}, since {self.started})"

    def dead_here(self) -> bool:
        """True when the holder ran on this host and its process is gone."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, another user's
        return False


def check_if_locked(value: str, option: str = "--if-locked") -> str:
    """`value` when it is one of IF_LOCKED; InvalidOptionError otherwise."""
    if value not in IF_LOCKED:
        raise InvalidOptionError(
            f"{option} {value!r} is not one of {', '.join(IF_LOCKED)}", f"pass {option} stop or wait"
        )
    return value


def _read_holder(fd: int) -> Holder | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "null")
        return Holder(str(data["purpose"]), int(data["pid"]), str(data["host"]), str(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_holder(fd: int, holder: Holder) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(asdict(holder)).encode("utf-8"), 0)


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: this file system has no flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in _NO_FLOCK:
            return None
        raise


def _still_linked(fd: int, path: Path) -> bool:
    """The locked file is still the one at `path` (its holder may have deleted it while we waited)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _open(path: Path, create_folder: bool) -> int:
    try:
        if create_folder:
            path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise OutputPathError(
            f"cannot create the lock file {path}: {exc.strerror or exc}",
            f"make {path.parent} writable, or point the command at a folder you can write to",
        ) from None


def _acquire_once(path: Path, me: Holder, create_folder: bool, quiet: bool = False) -> int | Holder:
    """The fd holding the lock, or the holder that keeps it (`quiet`: a takeover is logged at DEBUG only)."""
    fd = _open(path, create_folder)
    try:
        got = _try_flock(fd)
        previous = _read_holder(fd)
        if got is False or (got is None and previous is not None and not previous.dead_here()):
            os.close(fd)
            return previous or Holder("another process", 0, "unknown host", "unknown time")
        if got and not _still_linked(fd, path):
            os.close(fd)
            return _acquire_once(path, me, create_folder, quiet)
        if previous is not None and previous.pid != me.pid:
            log.log(
                logging.DEBUG if quiet else logging.WARNING,
                "taking over %s: its holder %s is gone",
                path,
                previous.describe(),
            )
        _write_holder(fd, me)
        return fd
    except BaseException:
        os.close(fd)
        raise


def current_holder(path: Path | str) -> Holder | None:
    """Who holds the lock file `path` now (None when nobody does); never creates, takes or changes it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file: nobody holds it
    try:
        holder = _read_holder(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return holder or Holder("another process", 0, "unknown host", "unknown time")
        except OSError as exc:
            if exc.errno in _NO_FLOCK:  # no flock here: the named holder decides, as for a writer
                return holder if holder is not None and not holder.dead_here() else None
            raise
        return None
    finally:
        os.close(fd)


def locked_message(path: Path, holder: Holder) -> str:
    return f"{path.parent} is in use: {holder.describe()} holds {path}"


@contextmanager
def hold(
    path: Path | str,
    purpose: str,
    if_locked: str = "stop",
    on_wait: Callable[[str], object] | None = None,
    poll_seconds: float = POLL_SECONDS,
    create_folder: bool = True,
    quiet_takeover: bool = False,
) -> Iterator[Holder]:
    """Hold the lock file `path` for the block (yields this process's Holder; its folder made unless
    `create_folder` is False; `quiet_takeover`: taking over a dead holder's lock is no warning); see the module
    docstring."""
    path, me = Path(path), Holder(purpose, os.getpid(), socket.gethostname(), utc_now_iso())
    check_if_locked(if_locked)
    told = False
    while True:
        got = _acquire_once(path, me, create_folder, quiet_takeover)
        if isinstance(got, int):
            fd = got
            break
        holder = got
        if if_locked == "stop":
            raise PathLockedError(
                locked_message(path, holder),
                "wait until it ends (or pass --if-locked wait to wait for it); if that process no longer runs, "
                f"delete {path}",
            )
        if not told:
            (on_wait or log.warning)(f"waiting: {locked_message(path, holder)}; this {purpose} starts when it ends")
            told = True
        time.sleep(poll_seconds)
    try:
        yield me
    finally:
        try:
            path.unlink(missing_ok=True)  # while still locked: a waiter that opened this file sees it go, reopens
        finally:
            os.close(fd)


@contextmanager
def hold_run(manifest: Path, suffix: str, purpose: str, remedy: str, create_folder: bool = True) -> Iterator[None]:
    """Hold `<run><suffix>` next to the run's manifest: one process exports (or loads into one target) a run at a
    time, since a distributed chunk its parent gave up may still run. A killed holder's lock is taken over quietly (its
    run is redone); RunInUseError naming the holder, with `remedy`, when another process has it."""
    path = manifest.with_name(manifest.name.removesuffix(MANIFEST_SUFFIX) + suffix)
    with ExitStack() as stack:
        try:
            stack.enter_context(hold(path, purpose, create_folder=create_folder, quiet_takeover=True))
        except PathLockedError as error:
            raise RunInUseError(str(error), remedy) from None
        yield

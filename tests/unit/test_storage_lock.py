"""storage/lock.py with real processes: a held lock stops (naming its holder) or makes a second writer wait; a lock
file left by a dead process is taken over; the lock file is gone once released."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from neptune_exporter.errors import InvalidOptionError, PathLockedError
from neptune_exporter.storage import lock

HOLDER = """
import sys
from neptune_exporter.storage.lock import hold
with hold(sys.argv[1], "export"):
    print("held", flush=True)
    sys.stdin.readline()
"""


@pytest.fixture
def holder(tmp_path):
    """Start a process holding `<tmp>/data/.neptune-exporter.lock`; release(): let it go and wait for it."""
    path = tmp_path / "data" / lock.EXPORT_LOCK
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline() == "held\n"

    def release() -> None:
        process.stdin.write("\n")
        process.stdin.flush()
        assert process.wait(timeout=60) == 0

    yield path, process, release
    if process.poll() is None:
        release()


def test_a_held_lock_stops_a_second_writer_with_one_line_naming_the_holder(holder):
    path, process, release = holder
    with pytest.raises(PathLockedError) as stopped:
        with lock.hold(path, "export"):
            pytest.fail("two writers held the lock")
    line = str(stopped.value)
    assert "\n" not in line
    assert line.startswith(f"{path.parent} is in use: export (pid {process.pid} on {socket.gethostname()}, since ")
    assert f"holds {path}" in line and "fix: wait until it ends (or pass --if-locked wait" in line
    release()
    assert not path.exists()  # the holder removed its lock file
    with lock.hold(path, "export") as me:
        assert json.loads(path.read_text())["pid"] == me.pid == os.getpid()
    assert not path.exists()


def test_a_waiting_writer_is_told_once_and_starts_when_the_holder_ends(holder):
    path, process, release = holder
    told: list[str] = []
    entered = threading.Event()

    def second_writer() -> None:
        with lock.hold(path, "export", if_locked="wait", on_wait=told.append, poll_seconds=0.05):
            entered.set()

    waiter = threading.Thread(target=second_writer)
    waiter.start()
    while not told:  # the waiter has found the lock held and said so
        assert waiter.is_alive()
        threading.Event().wait(0.05)
    assert not entered.is_set()
    release()
    waiter.join(timeout=60)
    assert entered.is_set() and len(told) == 1
    assert told[0].startswith(f"waiting: {path.parent} is in use: export (pid {process.pid} ")
    assert told[0].endswith("this export starts when it ends")


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_lock_file_left_by_a_dead_process_is_taken_over(tmp_path, caplog):
    path = tmp_path / lock.EXPORT_LOCK
    stale = {"purpose": "export", "pid": dead_pid(), "host": socket.gethostname(), "started": "2024-01-01T00:00:00Z"}
    path.write_text(json.dumps(stale))
    with lock.hold(path, "export"):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert f"taking over {path}: its holder export (pid {stale['pid']} on " in caplog.text
    assert not path.exists()


def test_without_flock_the_holder_named_in_the_file_decides(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "_try_flock", lambda fd: None)  # a file system without flock
    path = tmp_path / lock.EXPORT_LOCK
    alive = {"purpose": "export", "pid": os.getppid(), "host": socket.gethostname(), "started": "2024-01-01T00:00:00Z"}
    path.write_text(json.dumps(alive))
    with pytest.raises(PathLockedError, match=f"pid {os.getppid()} on"):
        with lock.hold(path, "export"):
            pass
    elsewhere = {**alive, "host": "another-host"}
    path.write_text(json.dumps(elsewhere))
    with pytest.raises(PathLockedError, match="on another-host"):
        with lock.hold(path, "export"):
            pass
    path.write_text(json.dumps({**alive, "pid": dead_pid()}))
    with lock.hold(path, "export"):
        with pytest.raises(PathLockedError, match=f"pid {os.getpid()} on"):  # not re-entrant, even in one process
            with lock.hold(path, "export"):
                pass


def test_one_process_cannot_hold_one_lock_twice_and_bad_modes_are_refused(tmp_path):
    path = Path(tmp_path) / lock.EXPORT_LOCK
    with lock.hold(path, "export"):
        with pytest.raises(PathLockedError, match=f"pid {os.getpid()} on"):
            with lock.hold(path, "export"):
                pass
    with pytest.raises(InvalidOptionError, match="--if-locked 'queue' is not one of stop, wait"):
        with lock.hold(path, "export", if_locked="queue"):
            pass


def test_the_export_lock_removes_the_tmp_files_dead_writers_left(tmp_path):
    from neptune_exporter.export import ExportOptions, export_lock

    project = tmp_path / "data" / "ws_p-0123456789abcdef"
    (project / "models").mkdir(parents=True)
    leftovers = [
        project / ".r.manifest.json.123.tmp",
        project / "r_part_3.parquet.tmp",
        project / "models/m_part_0.parquet.tmp",
    ]
    kept = [project / "r_part_0.parquet", project / "r.manifest.json", project / "models/m_part_0.parquet"]
    for path in leftovers + kept:
        path.write_bytes(b"x")
    with export_lock(ExportOptions(data_path=str(tmp_path / "data"))):
        assert [p for p in leftovers if p.exists()] == [] and all(p.exists() for p in kept)


def test_the_current_holder_is_read_without_taking_or_making_the_lock(holder, tmp_path):
    path, process, release = holder
    found = lock.current_holder(path)
    assert (found.purpose, found.pid, found.host) == ("export", process.pid, socket.gethostname())
    with pytest.raises(PathLockedError):  # reading it took nothing: the holder still holds it
        with lock.hold(path, "export"):
            pytest.fail("two writers held the lock")
    release()
    assert lock.current_holder(path) is None and not path.exists()  # nobody, and no file made
    path.write_text(json.dumps({"purpose": "export", "pid": process.pid, "host": socket.gethostname(), "started": ""}))
    assert lock.current_holder(path) is None  # a file a killed holder left: nobody holds it

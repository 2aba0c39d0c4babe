"""Processes as /proc shows them (Linux): a command's descendants and process group, and waiting until they are gone."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")


def stat_of(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of a live process; None when it is gone or a zombie (dead, not reaped)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (command name) "
    state, ppid, pgid = fields[0], int(fields[1]), int(fields[2])
    return None if state in ("Z", "X") else (state, ppid, pgid)


def all_pids() -> list[int]:
    return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]


def descendants(pid: int) -> set[int]:
    """Live processes below `pid` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for other in all_pids():
        if (stat := stat_of(other)) is not None:
            children.setdefault(stat[1], []).append(other)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def group_members(pgid: int) -> set[int]:
    """Live processes of the process group `pgid`."""
    return {pid for pid in all_pids() if (stat := stat_of(pid)) is not None and stat[2] == pgid}


def command_line(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return "?"


def left_over(pids: Iterable[int], pgid: int | None = None) -> dict[int, str]:
    """Which of `pids`, or of the process group `pgid` (if given), still live; with their command lines."""
    alive = {pid for pid in pids if stat_of(pid) is not None} | (group_members(pgid) if pgid else set())
    return {pid: command_line(pid) for pid in sorted(alive)}


def wait_all_gone(pids: Iterable[int], pgid: int | None = None, timeout: float = 30) -> dict[int, str]:
    """Wait until none of `pids` and no process of group `pgid` lives; what still lives at the deadline ({} if none)."""
    deadline = time.monotonic() + timeout
    while (alive := left_over(pids, pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def sigkill_alone(pid: int) -> dict[int, str]:
    """SIGKILL this one process (not its group, not its children, as `kill -9 PID` does); its descendants just
    before (with their command lines), whose fate is then up to them."""
    below = {child: command_line(child) for child in descendants(pid)}
    os.kill(pid, signal.SIGKILL)
    return below

"""How many metric requests a load keeps in flight to one MLflow store, found by measuring points per second."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

FLOOR = 2  # one request in flight leaves the server idle while the next batch is built
GAIN = 1.05  # a level must carry 5% more points per second than the one below it to be kept
SATURATED = 0.75  # a window counts only when the limit was reached this share of its time
REPROBE_EVERY = 20  # windows spent at a settled level before trying one more again


class AdaptiveLimit:
    """The in-flight limit of a load's metric requests, shared by its runs' writers.

    The best number depends on the server, not on us: a tracking server on two cores over SQLite writes fastest with
    two requests at a time (more only make its workers wait for the database lock), one with many cores and
    PostgreSQL with many more. So the limit starts at FLOOR and climbs one step per window of finished requests while
    each step carries at least GAIN times the points per second of the step below; the first step that does not is
    undone and the limit stays there, trying one more again every REPROBE_EVERY windows. Windows where the writers
    could not keep the limit busy (reading the export was slower) say nothing about the server and are skipped.
    """

    def __init__(self, ceiling: int, clock: Callable[[], float] = time.monotonic):
        self.ceiling = max(1, ceiling)
        self.limit = min(FLOOR, self.ceiling)
        self.clock = clock
        self.in_flight = 0
        self.rates: dict[int, float] = {}  # points per second last measured at each limit
        self.climbing = True
        self.settled_windows = 0
        self.window_started = 0.0
        self.window_points = self.window_requests = 0
        self.saturated_s = 0.0
        self.saturated_since: float | None = None
        self._cond = threading.Condition()
        self._start_window()

    @contextmanager
    def slot(self, points: int) -> Iterator[None]:
        """Hold one of the limit's places while sending `points` points."""
        with self._cond:
            while self.in_flight >= self.limit:
                self._cond.wait(timeout=1.0)
            self._set_in_flight(self.in_flight + 1)
        try:
            yield
        finally:
            with self._cond:
                self._set_in_flight(self.in_flight - 1)
                self.window_points += points
                self.window_requests += 1
                if self.window_requests >= max(12, 4 * self.limit):
                    self._end_window()
                self._cond.notify_all()

    def _set_in_flight(self, count: int) -> None:
        now = self._count_saturation()
        self.in_flight = count
        self.saturated_since = now if count >= self.limit else None

    def _count_saturation(self) -> float:
        """Add the time the limit has been reached since it was last counted; the current time."""
        now = self.clock()
        if self.saturated_since is not None:
            self.saturated_s += now - self.saturated_since
            self.saturated_since = now
        return now

    def _start_window(self) -> None:
        self.window_started = self.clock()
        self.window_points = self.window_requests = 0
        self.saturated_s = 0.0
        self.saturated_since = self.window_started if self.in_flight >= self.limit else None

    def _end_window(self) -> None:
        now = self._count_saturation()
        elapsed = now - self.window_started
        if elapsed > 0 and self.saturated_s >= SATURATED * elapsed:
            self._judge(self.window_points / elapsed)
        self._start_window()

    def _judge(self, rate: float) -> None:
        level = self.limit
        self.rates[level] = rate
        if not self.climbing:
            self.settled_windows += 1
            if self.settled_windows >= REPROBE_EVERY and level < self.ceiling:
                self._move(level + 1, climbing=True)
            return
        below = self.rates.get(level - 1)
        if below is not None and rate < below * GAIN:
            self._move(level - 1, climbing=False)
        elif level < self.ceiling:
            self._move(level + 1, climbing=True)
        else:
            self._move(level, climbing=False)

    def _move(self, level: int, climbing: bool) -> None:
        if level != self.limit:
            log.debug("metric requests in flight: %d -> %d (points/s by limit: %s)", self.limit, level, self.rates)
        self.limit, self.climbing, self.settled_windows = level, climbing, 0

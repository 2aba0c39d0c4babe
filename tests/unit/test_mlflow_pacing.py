"""The load's in-flight limit of metric requests climbs while the server carries more points per second, and no
further."""

from __future__ import annotations

import threading
import time

import pytest

from neptune_exporter.loaders.mlflow.pacing import FLOOR, REPROBE_EVERY, AdaptiveLimit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def drive(pacing: AdaptiveLimit, clock: Clock, points_per_s, requests: int, busy: bool = True) -> list[int]:
    """A server whose throughput at k requests in flight is points_per_s(k): the writers keep every place of the limit
    taken (`busy`), or only one; a request of 1,000 points ends every 1000 / throughput seconds. The limit after each."""
    held, limits = [], []
    for _ in range(requests):
        while len(held) < (pacing.limit if busy else 1):
            place = pacing.slot(1000)
            place.__enter__()
            held.append(place)
        clock.now += 1000 / points_per_s(len(held))
        held.pop(0).__exit__(None, None, None)
        limits.append(pacing.limit)
    return limits


def test_a_server_fastest_at_two_requests_keeps_two_after_one_probe_of_three():
    clock = Clock()
    pacing = AdaptiveLimit(ceiling=8, clock=clock)
    rates = {2: 12_000, 3: 11_000, 4: 10_000}
    limits = drive(pacing, clock, lambda k: rates.get(k, 9_000), requests=200)
    assert limits[0] == FLOOR and max(limits) == 3 and limits[-1] == 2
    assert pacing.rates[2] == pytest.approx(12_000) and pacing.rates[3] == pytest.approx(11_000)


def test_a_server_that_scales_to_six_gets_six_and_never_more_than_the_ceiling():
    clock = Clock()
    pacing = AdaptiveLimit(ceiling=8, clock=clock)
    limits = drive(pacing, clock, lambda k: 5_000 * min(k, 6), requests=400)
    assert limits[-1] == 6 and max(limits) == 7
    capped = AdaptiveLimit(ceiling=4, clock=(clock := Clock()))
    assert max(drive(capped, clock, lambda k: 5_000 * k, requests=400)) == 4 and capped.limit == 4


def test_a_settled_limit_tries_one_more_again_and_follows_a_server_that_got_faster():
    clock = Clock()
    pacing = AdaptiveLimit(ceiling=8, clock=clock)
    faster = {"yes": False}

    def rate(k: int) -> float:
        return 5_000 * min(k, 5) if faster["yes"] else {2: 10_000}.get(k, 9_000)

    drive(pacing, clock, rate, requests=60)
    assert pacing.limit == 2 and not pacing.climbing
    faster["yes"] = True
    drive(pacing, clock, rate, requests=REPROBE_EVERY * 12 + 300)
    assert pacing.limit == 5


def test_windows_where_the_writers_cannot_keep_the_limit_busy_change_nothing():
    clock = Clock()
    pacing = AdaptiveLimit(ceiling=8, clock=clock)
    assert set(drive(pacing, clock, lambda k: 5_000 * k, requests=300, busy=False)) == {FLOOR}
    assert pacing.rates == {}


def test_threads_never_hold_more_places_than_the_limit():
    pacing = AdaptiveLimit(ceiling=3)
    inside, most, guard = [0], [0], threading.Lock()

    def request() -> None:
        for _ in range(20):
            with pacing.slot(1000):
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.001)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= most[0] <= 3 and pacing.in_flight == 0

"""Fault injection of the fake Neptune server: latency, bandwidth cap, 429/5xx shares, resets, short-lived tokens."""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass, field, fields


@dataclass
class FaultConfig:
    """Faults applied to API requests. Mutable while the server runs (read per request).

    latency_ms / latency_jitter_ms: every request waits latency_ms + uniform(0, jitter) ms.
    bandwidth_bytes_per_s: response bodies are written no faster than this (0 = unlimited).
    rate_limit_share: share of requests answered 429 with `Retry-After: retry_after_s`.
    error_share: share answered with one of `error_statuses` (chosen at random).
    reset_share: share whose connection is reset after half the response body was sent.
    token_ttl_s: lifetime of issued access tokens (JWT `exp`); expired tokens get 401.
    signed_url_ttl_s: lifetime of file download URLs; expired ones get 400 (clients re-sign).
    endpoints: regex; when set, faults hit only endpoints whose name matches (auth is never faulted
      unless `fault_auth`).
    scripted: faults for the next faultable requests, consumed in order before any dice: a status
      (429, 500, 503, ...) or "reset". Deterministic whatever the client's threading.
    seed: seeds the fault dice (None = random).
    failing_runs: sys id → status; a request reading data of only such runs is answered with that status
      (run listings — endpoints named `*search*` — are exempt, so a run is found, then fails to export).
    table_omits: regex; attributes the 2.x runs table leaves out of its rows (a column it returns nothing for),
      though the run lists them and reads them one by one.
    """

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    bandwidth_bytes_per_s: int = 0
    rate_limit_share: float = 0.0
    retry_after_s: int = 1
    error_share: float = 0.0
    error_statuses: tuple[int, ...] = (500, 503)
    reset_share: float = 0.0
    token_ttl_s: float = 3600.0
    signed_url_ttl_s: float = 3600.0
    endpoints: str | None = None
    fault_auth: bool = False
    scripted: list[int | str] = field(default_factory=list)
    seed: int | None = None
    failing_runs: dict[str, int] = field(default_factory=dict)
    table_omits: str | None = None

    def run_fault(self, endpoint: str, runs: set[str]) -> int | None:
        """The status answering a request that read `runs`, when every one of them is set to fail."""
        if not runs or "search" in endpoint or not runs <= set(self.failing_runs):
            return None
        return self.failing_runs[min(runs)]

    def update(self, **changes: object) -> None:
        """Change several faults at once (unknown names raise)."""
        names = {f.name for f in fields(self)}
        for name, value in changes.items():
            if name not in names:
                raise AttributeError(f"unknown fault {name!r}; known: {sorted(names)}")
            setattr(self, name, value)

    def clear(self) -> None:
        """Switch every fault off (keeps token_ttl_s and seed)."""
        self.update(
            latency_ms=0.0,
            latency_jitter_ms=0.0,
            bandwidth_bytes_per_s=0,
            rate_limit_share=0.0,
            error_share=0.0,
            reset_share=0.0,
            endpoints=None,
        )


@dataclass
class FaultDecision:
    """What the injector decided for one request."""

    delay_s: float = 0.0
    status: int | None = None  # 429 / 5xx answered instead of the handler's response
    reset: bool = False


@dataclass
class FaultInjector:
    """Rolls the dice for each request according to a (live) FaultConfig."""

    config: FaultConfig
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _seed_used: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.config.seed)
        self._seed_used = self.config.seed

    def decide(self, endpoint: str, is_auth: bool) -> FaultDecision:
        cfg = self.config
        if is_auth and not cfg.fault_auth:
            return FaultDecision()
        if cfg.endpoints and not re.search(cfg.endpoints, endpoint):
            return FaultDecision()
        with self._lock:
            if cfg.scripted:
                return _scripted(cfg.scripted.pop(0), cfg)
            if cfg.seed != self._seed_used:
                self._rng, self._seed_used = random.Random(cfg.seed), cfg.seed
            jitter = self._rng.uniform(0, cfg.latency_jitter_ms) if cfg.latency_jitter_ms else 0.0
            dice = self._rng.random()
            status_pick = self._rng.choice(cfg.error_statuses) if cfg.error_statuses else 500
        decision = FaultDecision(delay_s=(cfg.latency_ms + jitter) / 1000.0)
        if dice < cfg.rate_limit_share:
            decision.status = 429
        elif dice < cfg.rate_limit_share + cfg.error_share:
            decision.status = status_pick
        elif dice < cfg.rate_limit_share + cfg.error_share + cfg.reset_share:
            decision.reset = True
        return decision


def _scripted(fault: int | str, cfg: FaultConfig) -> FaultDecision:
    delay = cfg.latency_ms / 1000.0
    if fault == "reset":
        return FaultDecision(delay_s=delay, reset=True)
    return FaultDecision(delay_s=delay, status=int(fault))


def throttled_write(write, data: bytes, bytes_per_s: int, chunk: int = 64 * 1024) -> None:
    """Write `data` through `write` no faster than bytes_per_s (0 = at once)."""
    if not bytes_per_s:
        write(data)
        return
    view = memoryview(data)
    for start in range(0, len(view), chunk):
        piece = view[start : start + chunk]
        write(piece)
        time.sleep(len(piece) / bytes_per_s)

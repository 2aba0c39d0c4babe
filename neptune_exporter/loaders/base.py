"""The verbs every target implements, target capabilities as data, and the exact step and key mappings they share."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Iterable, Protocol

import numpy as np

from neptune_exporter.errors import InvalidOptionError
from neptune_exporter.model import STEP_SCALE

# ----------------------------------------------------------------------------- capabilities


@dataclass(frozen=True)
class TargetCapabilities:
    """What a target accepts; loaders read limits from here instead of hard-coding them."""

    name: str
    integer_steps: bool
    increasing_steps_only: bool  # W&B drops lower steps
    max_key_length: int
    key_pattern: str  # regex of one allowed character
    max_param_length: int | None
    metrics_per_batch: int | None
    params_per_batch: int | None
    tags_per_batch: int | None


MLFLOW = TargetCapabilities(
    name="mlflow",
    integer_steps=True,
    increasing_steps_only=False,
    max_key_length=250,
    key_pattern=r"[/\w.\- :]",
    max_param_length=6000,
    metrics_per_batch=1000,
    params_per_batch=100,
    tags_per_batch=100,
)

WANDB = TargetCapabilities(
    name="wandb",
    integer_steps=True,
    increasing_steps_only=True,
    max_key_length=250,
    key_pattern=r"[/\w.\- ]",
    max_param_length=None,
    metrics_per_batch=None,
    params_per_batch=None,
    tags_per_batch=None,
)

# ----------------------------------------------------------------------------- steps


def step_multiplier_for(unscaled_steps: Iterable[np.ndarray]) -> int:
    """Smallest power of ten making every step (int64 millionths) an exact integer: 1, 10, ..., 10**6."""
    needed = 0
    for chunk in unscaled_steps:
        chunk = np.asarray(chunk, dtype=np.int64)
        while needed < STEP_SCALE and chunk.size and np.any(chunk % 10 ** (STEP_SCALE - needed)):
            needed += 1
        if needed == STEP_SCALE:
            break
    return 10**needed


def integer_steps(unscaled_steps: np.ndarray, multiplier: int) -> np.ndarray:
    """Exact integer steps = step * multiplier; raises InvalidOptionError when a step would not be whole."""
    unscaled = np.asarray(unscaled_steps, dtype=np.int64)
    # step * multiplier = unscaled * multiplier / 10**6, exact in integers
    numerator = unscaled * multiplier
    divisor = 10**STEP_SCALE
    if np.any(numerator % divisor):
        bad = unscaled[(numerator % divisor) != 0][0] / divisor
        raise InvalidOptionError(
            f"step {bad} times the step multiplier {multiplier} is not a whole number",
            "drop --step-multiplier to let the loader pick the smallest exact power of ten, or pass a larger one",
        )
    return numerator // divisor


# ----------------------------------------------------------------------------- keys


def map_key(key: str, capabilities: TargetCapabilities) -> str:
    """Deterministic key valid for the target; a changed key gets a short hash of the original so no two collide."""
    allowed = re.compile(capabilities.key_pattern)
    cleaned = "".join(c if allowed.fullmatch(c) else "_" for c in key)
    cleaned = re.sub(r"/{2,}", "/", cleaned).replace("..", "__").strip("/") or "_"
    if cleaned == key and len(key) <= capabilities.max_key_length:
        return key
    suffix = "~" + hashlib.blake2b(key.encode("utf-8"), digest_size=4).hexdigest()
    if not allowed.fullmatch("~"):
        suffix = "_" + suffix[1:]
    return cleaned[: capabilities.max_key_length - len(suffix)].rstrip("/") + suffix


@dataclass
class KeyMap:
    """Original → target keys of one run; guarantees no two originals share a target key."""

    capabilities: TargetCapabilities
    renamed: dict[str, str] = field(default_factory=dict)
    _taken: dict[str, str] = field(default_factory=dict)

    def __call__(self, key: str) -> str:
        mapped = map_key(key, self.capabilities)
        owner = self._taken.setdefault(mapped, key)
        if owner != key:  # a different original already maps here (only possible if it was itself valid)
            mapped = map_key(key + "\x00", self.capabilities)
            self._taken[mapped] = key
        if mapped != key:
            self.renamed[key] = mapped
        return mapped


# ----------------------------------------------------------------------------- verbs


@dataclass
class LoadResult:
    """Outcome of loading one run."""

    project_id: str
    run_id: str
    status: str  # "loaded" | "skipped" | "failed"
    target_run_id: str | None = None
    points: int = 0
    files: int = 0
    error: dict | None = None


class Loader(Protocol):
    """A destination: same verbs for MLflow and W&B."""

    capabilities: TargetCapabilities

    def check_target(self) -> None:
        """Fail fast (TerminalError with remedy) when the target is unreachable or unwritable."""

    def load_run(self, data_root, files_root, project_id: str, run_id: str) -> LoadResult:
        """Load one exported run idempotently (skip complete, redo partial, reload changed)."""

    def validate_run(self, data_root, files_root, project_id: str, run_id: str) -> list[dict]:
        """Differences between the export and the target run ([] when identical)."""

"""Validation's own mapping rules shared by both targets: run keys, exact step scaling, step text, key renames.

Written apart from the loaders on purpose (README "How validation maps an export"): a loader bug in one of
these rules loads data that these rules then report as different."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

from neptune_exporter.errors import InvalidOptionError
from neptune_exporter.model import STEP_SCALE
from neptune_exporter.validation.compare import Difference

MILLIONTHS = 10**STEP_SCALE
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def run_key(project_id: str, run_id: str) -> str:
    """The run's lookup key every target records: blake2b-128 hex of `project NUL run`."""
    return hashlib.blake2b(f"{project_id}\x00{run_id}".encode(), digest_size=16).hexdigest()


def decimals_needed(unscaled: np.ndarray) -> int:
    """Fraction digits (0..6) the steps (int64 millionths) need to be written exactly."""
    fractions = np.unique(np.abs(np.asarray(unscaled, dtype=np.int64)) % MILLIONTHS)
    return max((STEP_SCALE - len(str(f)) + len(str(f).rstrip("0")) for f in fractions.tolist() if f), default=0)


def expected_multiplier(step_chunks: Iterable[np.ndarray], requested: int | None) -> int:
    """The user's --step-multiplier, else 10 ** (most fraction digits of any series step)."""
    if requested is not None:
        return requested
    return 10 ** max((decimals_needed(chunk) for chunk in step_chunks), default=0)


def scaled(unscaled: np.ndarray, multiplier: int) -> np.ndarray:
    """Integer target steps: step × multiplier, exactly, the whole and the fraction part scaled apart so nothing
    overflows int64 (InvalidOptionError when a step does not become whole or its product is beyond int64)."""
    unscaled = np.asarray(unscaled, dtype=np.int64)
    whole, fraction = np.divmod(unscaled, MILLIONTHS)
    if unscaled.size and any(step_product(s, multiplier) is None for s in (unscaled.min(), unscaled.max())):
        raise InvalidOptionError(
            f"a step times the step multiplier {multiplier} is beyond int64",
            "validate with the multiplier the load used",
        )
    fraction_product = fraction * multiplier
    if np.any(fraction_product % MILLIONTHS):
        raise InvalidOptionError(
            f"a step times the step multiplier {multiplier} is not whole", "validate with the multiplier the load used"
        )
    return whole * multiplier + fraction_product // MILLIONTHS


def step_product(unscaled: int, multiplier: int) -> int | None:
    """step × multiplier as an exact integer, None when it is beyond int64 (what MLflow and W&B store)."""
    product = int(unscaled) * multiplier // MILLIONTHS
    return product if INT64_MIN <= product <= INT64_MAX else None


def step_text(unscaled: int) -> str:
    """A step as exact decimal text without trailing zeros: 2_500_000 → "2.5", 100_000_000 → "100"."""
    return format((Decimal(int(unscaled)) / MILLIONTHS).normalize(), "f")


@dataclass(frozen=True)
class KeyRule:
    """Which keys a target stores as they are: allowed characters, length, no empty or climbing path parts."""

    allowed: str  # regex class of one allowed character
    max_length: int
    reserved_prefixes: tuple[str, ...] = ()
    rename_reserved: tuple[str, ...] = ()  # prefixes not even a rename may take (W&B's own `_` keys)

    def storable(self, key: str) -> bool:
        """Allowed characters only, not too long, no empty or `..` path parts."""
        parts_ok = key and not key.startswith("/") and not key.endswith("/") and "//" not in key and ".." not in key
        return bool(parts_ok) and len(key) <= self.max_length and re.fullmatch(f"{self.allowed}+", key) is not None

    def valid(self, key: str) -> bool:
        """Stored as it is: storable and not under a reserved prefix."""
        return self.storable(key) and not key.startswith(self.reserved_prefixes)

    def valid_rename(self, key: str) -> bool:
        """A rename the target stores as a key of its own: storable and not under a prefix reserved even for renames."""
        return self.storable(key) and not key.startswith(self.rename_reserved)


@dataclass
class RecordedKeys:
    """Target keys of one run's originals, from the key map the target recorded, with each rename checked.

    A recorded rename is accepted only when the original cannot be stored as it is (not `rule.valid`) or its
    name is taken by another original's rename; the new key must itself be valid. An original stored under its
    own name must be valid. Anything else is a `key` difference, and the original's own name is expected."""

    rule: KeyRule
    recorded: dict[str, str]
    kind: str = "key"
    problems: dict[str, tuple[str, str, str | None]] = field(
        default_factory=dict
    )  # original → (problem, expected, actual)
    targets: dict[str, str] = field(default_factory=dict)

    def __call__(self, original: str) -> str:
        if original not in self.targets:
            self.targets[original] = self._target(original)
        return self.targets[original]

    def _target(self, original: str) -> str:
        renamed = self.recorded.get(original)
        if renamed is None:
            if not self.rule.valid(original):
                self.problems[original] = ("not renamed", "a valid renamed key", original)
            return original
        taken = original in self.recorded.values()
        if not self.rule.valid_rename(renamed):
            self.problems[original] = ("invalid rename", "a valid key", renamed)
        elif self.rule.valid(original) and not taken:
            self.problems[original] = ("renamed", original, renamed)
            return original
        return renamed

    def differences(self, project_id: str, run_id: str) -> list[Difference]:
        """Rename problems, plus two originals stored under one key."""
        found = [
            Difference(project_id, run_id, self.kind, k, p, e, a) for k, (p, e, a) in sorted(self.problems.items())
        ]
        holders: dict[str, list[str]] = {}
        for original, target in self.targets.items():
            holders.setdefault(target, []).append(original)
        shared = {t: sorted(o) for t, o in holders.items() if len(o) > 1}
        return found + [
            Difference(project_id, run_id, self.kind, t, "shared", "one original", o) for t, o in sorted(shared.items())
        ]

"""Where a Neptune run lands in GoodSeed: home folder, project (template), run id, keys, exact REAL steps."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from neptune_exporter.errors import InvalidOptionError, UnsupportedError
from neptune_exporter.loaders.base import run_key
from neptune_exporter.model import STEP_SCALE, format_step

DEFAULT_PROJECT_TEMPLATE = "{project}"
EXTRA_HINT = "pip install 'neptune-exporter[goodseed]'"
RUN_ID_PATTERN = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9_-]*[a-zA-Z0-9])?$")  # goodseed/run.py _RUN_ID_RE
MAX_RUN_ID = 128  # goodseed/run.py _MAX_RUN_ID_LEN
MAX_NAME = 200  # goodseed/run.py _MAX_EXPERIMENT_NAME_LEN
PROJECT_PART = re.compile(r"^[\w.\- ]+$")
# Keys GoodSeed writes itself on every run (goodseed/run.py: _init_new_run, close): a Neptune attribute there moves.
GOODSEED_KEYS = frozenset({"sys/id", "sys/state", "sys/closed_time"})
PROVENANCE_PREFIX = "neptune."  # the provenance configs' namespace, never a Neptune attribute's
RENAMED_PREFIX = "neptune.original/"
NAN_PREFIX = "neptune.nan/"  # float-series points GoodSeed cannot hold (NaN): a string series of "NaN" points
EXACT_FLOAT_INT = 2**53  # integers up to this are exact in REAL (float64)
MILLIONTH = Decimal(1).scaleb(-STEP_SCALE)
EXACT_FRACTION_STEP = 2**33  # below this a float64 step's spacing is < 10**-6: every 6-decimal step is exact


def goodseed_module() -> Any:
    """The installed `goodseed` client; UnsupportedError naming the extra when it is missing."""
    try:
        import goodseed
    except ImportError:
        raise UnsupportedError(
            "the goodseed target needs the GoodSeed client, which is not installed", EXTRA_HINT
        ) from None
    return goodseed


def goodseed_home(option: str | None) -> Path:
    """GoodSeed's home folder as GoodSeed resolves it (the option, else GOODSEED_HOME, else ~/.goodseed), absolute."""
    goodseed_module()
    from goodseed.config import get_home

    return get_home(option).expanduser().absolute()


def project_name(template: str | None, project_id: str) -> str:
    """The GoodSeed project (`workspace/project` locally a folder path) of a Neptune project, by the template
    (placeholders {project}, {workspace}, {name}); InvalidOptionError for a template GoodSeed cannot use."""
    template = template or DEFAULT_PROJECT_TEMPLATE
    workspace, _, name = project_id.rpartition("/")
    try:
        text = template.format(project=project_id, workspace=workspace, name=name)
    except (KeyError, IndexError, ValueError) as error:
        raise InvalidOptionError(
            f"--goodseed-project-template {template!r} is not a valid template ({type(error).__name__}: {error})",
            "use the placeholders {project}, {workspace} and {name}, e.g. '{project}' or 'migrated/{name}'",
        ) from None
    parts = text.split("/")
    if not text or any(p in ("", ".", "..") or not PROJECT_PART.match(p) for p in parts):
        raise InvalidOptionError(
            f"--goodseed-project-template {template!r} gives the GoodSeed project {text!r} for {project_id}",
            "use a template giving '/'-separated names of letters, digits, '_', '-', '.', ' ', e.g. '{project}'",
        )
    return text


def goodseed_run_id(project_id: str, run_id: str) -> str:
    """The GoodSeed run id: the Neptune run id when GoodSeed accepts it, else its cleaned text + 12 hex of the run key."""
    if RUN_ID_PATTERN.match(run_id) and len(run_id) <= MAX_RUN_ID:
        return run_id
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", run_id).strip("_-")[:100]
    return "-".join(filter(None, [cleaned, run_key(project_id, run_id)[:12]]))


def display_name(experiment: str | None) -> str | None:
    """The run's GoodSeed name (its Neptune experiment) when GoodSeed accepts it (200 chars, no control chars)."""
    if not experiment or len(experiment) > MAX_NAME:
        return None
    banned = any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0x202A <= ord(c) <= 0x202E for c in experiment)
    banned = banned or any(
        0x2066 <= ord(c) <= 0x2069 or ord(c) in (0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0xFEFF) for c in experiment
    )
    return None if banned else experiment


def goodseed_key(path: str) -> str:
    """A Neptune attribute's GoodSeed key: its own path, unless GoodSeed writes that key itself or it is in the
    provenance namespace; those move under `neptune.original/` (a prefix no kept key has, so no two collide)."""
    if path in GOODSEED_KEYS or path.startswith(PROVENANCE_PREFIX):
        return RENAMED_PREFIX + path
    return path


# ----------------------------------------------------------------------------- steps


def real_steps(unscaled: np.ndarray, multiplier: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(float64 steps, exact mask) of steps held as int64 millionths: step × multiplier when one is given (already
    whole, checked by the caller), else the decimal step itself; exact = the REAL GoodSeed stores reads back as it."""
    unscaled = np.asarray(unscaled, dtype=np.int64)
    if multiplier is not None:
        steps = unscaled.astype(np.float64)
        exact = np.abs(unscaled) <= EXACT_FLOAT_INT
        for i in np.flatnonzero(~exact).tolist():  # rare: beyond 2**53 some whole steps are still exact
            exact[i] = int(steps[i]) == int(unscaled[i])
        return steps, exact
    steps = unscaled.astype(np.float64) / 10**STEP_SCALE  # correctly rounded while |unscaled| < 2**53
    whole = unscaled % 10**STEP_SCALE == 0
    exact = (np.abs(unscaled) < EXACT_FLOAT_INT) & (whole | (np.abs(steps) < EXACT_FRACTION_STEP))
    for i in np.flatnonzero(~exact).tolist():  # rare: huge steps; decide one by one, exactly
        value = Decimal(int(unscaled[i])).scaleb(-STEP_SCALE)
        steps[i] = float(value)
        exact[i] = Decimal(steps[i]).quantize(MILLIONTH) == value  # the nearest 6-decimal step to the float
    return steps, exact


def inexact_step_message(path: str, unscaled: int, multiplier: int | None) -> str:
    """Why a series cannot go to GoodSeed exactly."""
    scaled = f" × {multiplier}" if multiplier else ""
    return f"step {format_step(unscaled)}{scaled} of {path} has no exact REAL (float64) value in GoodSeed"

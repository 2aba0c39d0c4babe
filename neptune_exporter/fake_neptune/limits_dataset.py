"""The limits project of the awkward workspace: legitimate Neptune data at the edges of the export's and the
targets' ranges (issue 14).

Project `workspace/limits` (key LIM); every value is exact, so tests compare what a target holds with these.

LIM-1 run-large-step  metrics/large steps 0 and 999,999,999,999 (the largest whole step the step column holds);
                      metrics/small steps 0 and 1 (SMALL_STEPS: fit int64 with any multiplier up to 10**18)
LIM-2 run-step-over   metrics/fine steps 0, 1 (fits); metrics/over steps 1 and 1e12+1 (beyond the step column)
LIM-3 run-step-1e15   metrics/over step 1e15 (used to wrap to a negative step)
LIM-4 run-micro-steps metrics/micro steps 0.000001 and 1e7 (steps × 10**6 at load: 1 and 10**13)
LIM-5 run-milli-steps metrics/milli steps 0.001 and 1e10 (steps × 1000 at load: 1 and 10**13)
LIM-6 run-fine-step   metrics/fine step 123456789.123456 (steps × 10**6 at load: 123456789123456)
LIM-7 run-odd-paths   atoms and series at paths the 2.x client rewrites (ODD_PATHS: `a//b`, `trailing/`,
                      `/leading`), next to `a/b`, the path the client makes of `a//b`
LIM-8 run-target-limits values MLflow cannot hold as they are: metrics/pre1970 (points before 1970),
                      metrics/special (±inf, -0.0), string sets with a comma and empty, params ±inf / -0.0
LIM-9 run-shared-steps metrics/early and metrics/late share steps 0..4, each point with its own time (late: +0.5 s)
LIM-10 run-underscore-keys attributes W&B would hold under its reserved leading `_` (UNDERSCORE_ATOMS/_SERIES):
                      `_q`, `_private/loss` start with it, `@p`, `@loss` start with a character cleaned to it
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from neptune_exporter.fake_neptune import store
from neptune_exporter.fake_neptune.datasets import add_project, add_run
from neptune_exporter.fake_neptune.store import Workspace

LIMITS_PROJECT = "workspace/limits"
LIMITS_KEY = "LIM"
START = datetime(2024, 5, 1, tzinfo=UTC)
START_MS = int(START.timestamp() * 1000)

LARGE_STEPS = (0.0, 999_999_999_999.0)
SMALL_STEPS = (0.0, 1.0)
OVER_STEPS = (1.0, 1e12 + 1)
WRAPPING_STEP = 1e15
MICRO_STEPS = (0.000001, 1e7)
MILLI_STEPS = (0.001, 1e10)
FINE_STEP = 123456789.123456
PRE_1970_POINTS = [(0.0, 1.0, -86_400_000), (1.0, 2.0, -1), (2.0, 3.0, 0), (3.0, 4.0, 1_000)]  # (step, value, ms)
SPECIAL_VALUES = [math.inf, -math.inf, -0.0, 0.0, 1.0]
TARGET_LIMIT_ATOMS: dict[str, tuple] = {
    "params/set_with_comma": (store.STRING_SET, {"a,b", "c"}),
    "params/empty_set": (store.STRING_SET, set()),
    "params/inf": (store.FLOAT, math.inf),
    "params/minus_inf": (store.FLOAT, -math.inf),
    "params/minus_zero": (store.FLOAT, -0.0),
}
SHARED_STEPS = [0.0, 1.0, 2.0, 3.0, 4.0]
LATE_MS = 500  # metrics/late logs each step half a second after metrics/early
ODD_PATH_ATOMS: dict[str, tuple] = {
    "a//b": (store.FLOAT, 1.5),
    "a/b": (store.FLOAT, 9.0),
    "trailing/": (store.STRING, "t"),
    "/leading": (store.INT, 3),
}
ODD_PATH_SERIES: dict[str, tuple] = {
    "s//x": (store.FLOAT_SERIES, [0.0, 1.0], [0.5, 0.75]),
    "strail/": (store.STRING_SERIES, [0.0, 2.0], ["first", "second"]),
    "/slead": (store.FLOAT_SERIES, [1.0, 3.0], [-1.0, -2.0]),
}

UNDERSCORE_ATOMS: dict[str, tuple] = {"_q": (store.FLOAT, 1.5), "@p": (store.FLOAT, 0.5)}
UNDERSCORE_SERIES: dict[str, tuple] = {
    "_private/loss": (store.FLOAT_SERIES, [0.0, 1.0], [0.75, 1.5]),
    "@loss": (store.FLOAT_SERIES, [0.0, 1.0], [0.25, 0.5]),
}


def points(steps, values, start_ms: int = START_MS) -> list[tuple]:
    """(step, value, timestamp ms) points one second apart."""
    return [(float(s), v, start_ms + 1000 * i) for i, (s, v) in enumerate(zip(steps, values, strict=True))]


def add_limits_project(ws: Workspace) -> None:
    """Add `workspace/limits` with the runs listed in the module docstring (the awkward workspace holds it too)."""
    project = add_project(ws, "limits", LIMITS_KEY)
    runs: dict[str, dict[str, tuple]] = {
        "run-large-step": {
            "metrics/large": (store.FLOAT_SERIES, points(LARGE_STEPS, [1.5, 2.5])),
            "metrics/small": (store.FLOAT_SERIES, points(SMALL_STEPS, [0.5, 0.75])),
        },
        "run-step-over": {
            "metrics/fine": (store.FLOAT_SERIES, points([0.0, 1.0], [0.25, 0.5])),
            "metrics/over": (store.FLOAT_SERIES, points(OVER_STEPS, [3.0, 4.0])),
        },
        "run-step-1e15": {"metrics/over": (store.FLOAT_SERIES, points([WRAPPING_STEP], [5.0]))},
        "run-micro-steps": {"metrics/micro": (store.FLOAT_SERIES, points(MICRO_STEPS, [0.125, 0.25]))},
        "run-milli-steps": {"metrics/milli": (store.FLOAT_SERIES, points(MILLI_STEPS, [0.375, 0.5]))},
        "run-fine-step": {"metrics/fine": (store.FLOAT_SERIES, points([FINE_STEP], [0.625]))},
        "run-odd-paths": {
            **ODD_PATH_ATOMS,
            **{path: (kind, points(steps, values)) for path, (kind, steps, values) in ODD_PATH_SERIES.items()},
        },
        "run-target-limits": {
            **TARGET_LIMIT_ATOMS,
            "metrics/pre1970": (store.FLOAT_SERIES, PRE_1970_POINTS),
            "metrics/special": (store.FLOAT_SERIES, points(range(len(SPECIAL_VALUES)), SPECIAL_VALUES)),
        },
        "run-shared-steps": {
            "metrics/early": (store.FLOAT_SERIES, points(SHARED_STEPS, [0.1, 0.2, 0.3, 0.4, 0.5])),
            "metrics/late": (store.FLOAT_SERIES, points(SHARED_STEPS, [1.1, 1.2, 1.3, 1.4, 1.5], START_MS + LATE_MS)),
        },
        "run-underscore-keys": {
            **UNDERSCORE_ATOMS,
            **{path: (kind, points(steps, values)) for path, (kind, steps, values) in UNDERSCORE_SERIES.items()},
        },
    }
    for i, (run_id, attributes) in enumerate(runs.items()):
        add_run(
            ws,
            project.identifier,
            custom_run_id=run_id,
            created=START + timedelta(minutes=i),
            attributes={"params/case": (store.STRING, run_id), **attributes},
        )

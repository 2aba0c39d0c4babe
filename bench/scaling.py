"""Benchmark 5: export time per run for 10, 100 and 1,000 runs of the same shape (it must stay flat: linear growth)."""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    Shape,
    bench_arguments,
    cannot_run,
    emit,
    export_in_child,
    fake_neptune,
    median,
    note,
    parse_bench_args,
    safe_ratio,
)

NAME = "scaling"
TARGET = "<= 1.2 (flat: linear growth)"
RUN_SHAPE = Shape(runs=1, metrics=5, points=2_000, params=20, string_series=1, histograms=0, files=0)
FULL_SIZES = (10, 100, 1_000)
QUICK_SIZES = (5, 25, 125)


def seconds_for(runs: int, latency_ms: float, workers: int, repeats: int) -> float:
    """Median in-process export seconds (imports excluded) of `runs` runs, each repeat into an empty folder."""
    shape = replace(RUN_SHAPE, runs=runs, experiments=max(1, runs // 10))
    measured = []
    with fake_neptune(shape, latency_ms) as fake:
        for _ in range(repeats):
            with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
                facts = export_in_child(fake.api_token, shape.project_id, Path(tmp), workers).json()
            if facts["runs"] != runs:
                raise RuntimeError(f"exported {facts['runs']} runs, expected {runs}")
            measured.append(facts["seconds"])
    return median(measured)


def main(argv: list[str] | None = None) -> int:
    quick_help = f"{', '.join(map(str, QUICK_SIZES))} runs"
    args = parse_bench_args(bench_arguments(__doc__, quick_help, repeats=1), argv)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    note(
        f"{NAME}: runs of {RUN_SHAPE.metrics} metrics x {RUN_SHAPE.points:,} points, {RUN_SHAPE.params} params, "
        f"{RUN_SHAPE.string_series} string series; {args.latency_ms:g} ms latency; {args.workers} workers"
    )
    try:
        per_run = {runs: seconds_for(runs, args.latency_ms, args.workers, args.repeats) / runs for runs in sizes}
    except (ImportError, RuntimeError, OSError) as error:
        return cannot_run(NAME, str(error))
    for runs, seconds in per_run.items():
        emit(f"{NAME}.seconds_per_run_at_{runs}", seconds, "s/run")
    smallest, largest = per_run[sizes[0]], per_run[sizes[-1]]
    emit(f"{NAME}.per_run_{sizes[-1]}_vs_{sizes[0]}", safe_ratio(largest, smallest), "x", TARGET)
    return 0


if __name__ == "__main__":
    sys.exit(main())

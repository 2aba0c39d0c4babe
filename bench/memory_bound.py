"""Benchmark 2: peak RSS of exporting one run of 2M points, one of 20M points and one of 10,000 attributes."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    ChildResult,
    Shape,
    cannot_run,
    emit,
    export_in_child,
    fake_neptune,
    note,
    run_child,
    safe_ratio,
)

NAME = "memory_bound"
LIMIT_BYTES = 1.5 * 1024**3
RATIO_TARGET = "<= 1.3"
MB = 1024 * 1024
# (label, shape); the first two differ only in points per series, so their ratio shows growth with run size.
FULL = (
    ("small", Shape(runs=1, metrics=20, points=100_000, params=20, experiments=1)),
    ("large", Shape(runs=1, metrics=20, points=1_000_000, params=20, experiments=1)),
    ("wide", Shape(runs=1, metrics=5_000, points=100, params=5_000, experiments=1)),
)
QUICK = (
    ("small", Shape(runs=1, metrics=20, points=10_000, params=20, experiments=1)),
    ("large", Shape(runs=1, metrics=20, points=100_000, params=20, experiments=1)),
    ("wide", Shape(runs=1, metrics=2_000, points=20, params=2_000, experiments=1)),
)
IMPORTS = "import neptune_exporter.export, neptune_exporter.exporters.neptune3, neptune_query, pandas, pyarrow.parquet"


def export_peak(shape: Shape) -> ChildResult:
    """Export the one-run workspace in a fresh child process; fails loudly when the export does."""
    with fake_neptune(shape) as fake, tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        result = export_in_child(fake.api_token, shape.project_id, Path(tmp), workers=1)
        result.json()  # raises with the child's stderr when it failed
        return result


def import_baseline() -> ChildResult:
    """A child that only imports what the export imports: the memory no export can go below."""
    return run_child([sys.executable, "-c", IMPORTS])


def label_of(label: str, shape: Shape) -> str:
    """`20M_points` / `10000_attributes`: what the figure's run holds, in its name."""
    if label == "wide":
        return f"{shape.metrics + shape.params}_attributes"
    return f"{shape.float_points / 1e6:g}M_points"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200k / 2M points and 4,000 attributes")
    args = parser.parse_args(argv)
    cases = QUICK if args.quick else FULL
    try:
        baseline = import_baseline()
        peaks = {label: (shape, export_peak(shape)) for label, shape in cases}
    except (ImportError, RuntimeError, OSError) as error:
        return cannot_run(NAME, str(error))
    emit(f"{NAME}.peak_rss_imports_only", baseline.peak_rss_bytes / MB, "MB")
    for label, (shape, result) in peaks.items():
        target = f"< {LIMIT_BYTES / MB:,.0f} MB" if label == "large" else None
        emit(f"{NAME}.peak_rss_{label_of(label, shape)}", result.peak_rss_bytes / MB, "MB", target)
        facts = result.json()
        note(f"{label}: {shape.describe()}; {facts['points']:,} points in {facts['seconds']:.1f} s")
    large, small = peaks["large"][1], peaks["small"][1]
    emit(f"{NAME}.large_vs_small_peak_rss", safe_ratio(large.peak_rss_bytes, small.peak_rss_bytes), "x", RATIO_TARGET)
    return 0


if __name__ == "__main__":
    sys.exit(main())

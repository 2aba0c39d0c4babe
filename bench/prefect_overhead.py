"""Benchmark 4: the CLI export (Prefect flow, ephemeral server) vs the library loop without Prefect, same runs."""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    CLIENT_ENV,
    ChildResult,
    Shape,
    bench_arguments,
    cannot_run,
    emit,
    export_in_child,
    fake_neptune,
    median,
    note,
    parse_bench_args,
    run_child,
    safe_ratio,
)

NAME = "prefect_overhead"
TARGET = "<= 1.1"
NO_RUN = "^no-such-run$"  # a selection matching nothing: the fixed cost of one command
# The export of benchmark 1 (export_vs_floor): 20 metrics, 50 params, string series, a histogram, files per run.
FULL = Shape(
    runs=200, metrics=20, points=20_000, params=50, string_series=2, histograms=1, files=3, file_size=1024 * 1024
)
QUICK = Shape(
    runs=20, metrics=20, points=1_000, params=50, string_series=2, histograms=1, files=1, file_size=256 * 1024
)
# The worst case for Prefect: runs so small that the per-run bookkeeping is most of the work.
TINY_FULL = Shape(runs=200, metrics=5, points=200, params=20, string_series=1, project="tiny")
TINY_QUICK = Shape(runs=20, metrics=5, points=200, params=20, string_series=1, project="tiny")


def cli_export(
    token: str, project_id: str, root: Path, workers: int, prefect_home: Path, runs_regex: str | None = None
) -> ChildResult:
    """`neptune-exporter export` as a user runs it (Prefect ephemeral server in a private PREFECT_HOME)."""
    command = [
        sys.executable,
        "-m",
        "neptune_exporter.cli",
        "export",
        "-p",
        project_id,
        "-d",
        str(root / "data"),
        "-f",
        str(root / "files"),
        "--workers",
        str(workers),
        "--no-progress",
        *(["--runs", runs_regex] if runs_regex else []),
    ]
    env = {**CLIENT_ENV, "NEPTUNE_API_TOKEN": token, "PREFECT_HOME": str(prefect_home)}
    result = run_child(command, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"the CLI export failed (exit {result.returncode}): {result.stderr[-3000:]}")
    return result


def library_export(token: str, project_id: str, root: Path, workers: int, runs_regex: str | None = None) -> ChildResult:
    result = export_in_child(token, project_id, root, workers, runs_regex)
    result.json()  # raises with the child's stderr when it failed
    return result


def measure(
    shape: Shape, latency_ms: float, workers: int, repeats: int, empty: bool, prefect_home: Path
) -> dict[str, list[float]]:
    """Whole-command wall seconds of both sides, interleaved; with `empty`, also both with a selection of no run.
    The CLI's PREFECT_HOME is created by a first command matching no run, before any clock, unless it exists."""
    walls: dict[str, list[float]] = {}
    with fake_neptune(shape, latency_ms) as fake, tempfile.TemporaryDirectory(prefix="bench-prefect-") as tmp:
        scratch, token, project = Path(tmp), fake.api_token, shape.project_id
        if not prefect_home.exists():
            cli_export(token, project, scratch / "warm-up", workers, prefect_home, NO_RUN)  # creates its database
        sides = {
            "cli": lambda root: cli_export(token, project, root, workers, prefect_home),
            "library": lambda root: library_export(token, project, root, workers),
        }
        if empty:
            sides["cli_empty"] = lambda root: cli_export(token, project, root, workers, prefect_home, NO_RUN)
            sides["library_empty"] = lambda root: library_export(token, project, root, workers, NO_RUN)
        for repeat in range(repeats):
            order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
            for name in order:
                root = scratch / f"{name}-{repeat}"
                walls.setdefault(name, []).append(sides[name](root).wall_s)
                shutil.rmtree(root, ignore_errors=True)
    return walls


def report(walls: dict[str, list[float]], tiny: dict[str, list[float]], shape: Shape, tiny_shape: Shape) -> None:
    """Ratios at the benchmark-1 shape and for tiny runs, the fixed cost per command, the cost per run of each."""
    fixed_cli, fixed_library = median(walls["cli_empty"]), median(walls["library_empty"])
    emit(
        f"{NAME}.ratio_{shape.runs}_runs",
        safe_ratio(median(walls["cli"]), median(walls["library"])),
        "x CLI flow/library time",
        TARGET,
    )
    emit(
        f"{NAME}.tiny_ratio_{tiny_shape.runs}_runs",
        safe_ratio(median(tiny["cli"]), median(tiny["library"])),
        "x CLI flow/library time, tiny runs (worst case)",
    )
    emit(f"{NAME}.fixed_cost", fixed_cli - fixed_library, "s per command (Prefect import + server + flow)")
    for label, figures, runs in (("per_run_cost", walls, shape.runs), ("tiny_per_run_cost", tiny, tiny_shape.runs)):
        extra = (median(figures["cli"]) - fixed_cli) - (median(figures["library"]) - fixed_library)
        emit(f"{NAME}.{label}", extra / runs * 1000, "ms per run (CLI minus library, fixed cost removed)")
    for label, figures in (("", walls), ("tiny runs: ", tiny)):
        note(
            f"{label}medians CLI {median(figures['cli']):.1f} s, library {median(figures['library']):.1f} s "
            f"({len(figures['cli'])} repeats)"
        )
    note(f"empty selection: CLI {fixed_cli:.1f} s, library {fixed_library:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = bench_arguments(
        __doc__,
        f"{QUICK.runs} runs of {QUICK.points:,} points per series instead of {FULL.runs} of {FULL.points:,}",
        quick_repeats=1,
    )
    parser.add_argument("--runs", type=int, default=None, help="runs of both shapes (default: the size's)")
    args = parse_bench_args(parser, argv)
    shape, tiny_shape = (QUICK, TINY_QUICK) if args.quick else (FULL, TINY_FULL)
    if args.runs:
        shape, tiny_shape = replace(shape, runs=args.runs), replace(tiny_shape, runs=args.runs)
    note(
        f"{NAME}: {shape.describe()}; tiny: {tiny_shape.describe()}; {args.latency_ms:g} ms latency; "
        f"{args.workers} workers; {args.repeats} repeats"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="bench-prefect-home-") as home:
            prefect_home = Path(home) / "prefect-home"  # one for both shapes, as a user's
            walls = measure(shape, args.latency_ms, args.workers, args.repeats, True, prefect_home)
            tiny = measure(tiny_shape, args.latency_ms, args.workers, args.repeats, False, prefect_home)
    except (ImportError, RuntimeError, OSError) as error:
        return cannot_run(NAME, str(error))
    report(walls, tiny, shape, tiny_shape)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark 4: the CLI export (Prefect flow, ephemeral server) vs the library loop without Prefect, same runs."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    bench_arguments,
    CLIENT_ENV,
    ChildResult,
    Shape,
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
FULL = Shape(runs=200, metrics=5, points=2_000, params=20, string_series=1)
QUICK = Shape(runs=20, metrics=5, points=2_000, params=20, string_series=1)


def cli_export(token: str, project_id: str, root: Path, workers: int, prefect_home: Path,
               runs_regex: str | None = None) -> ChildResult:
    """`neptune-exporter export` as a user runs it (Prefect ephemeral server in a private PREFECT_HOME)."""
    command = [sys.executable, "-m", "neptune_exporter.cli", "export", "-p", project_id, "-d", str(root / "data"),
               "-f", str(root / "files"), "--workers", str(workers), "--no-progress",
               *(["--runs", runs_regex] if runs_regex else [])]
    env = {**CLIENT_ENV, "NEPTUNE_API_TOKEN": token, "PREFECT_HOME": str(prefect_home)}
    result = run_child(command, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"the CLI export failed (exit {result.returncode}): {result.stderr[-3000:]}")
    return result


def library_export(token: str, project_id: str, root: Path, workers: int, runs_regex: str | None = None) -> ChildResult:
    result = export_in_child(token, project_id, root, workers, runs_regex)
    result.json()  # raises with the child's stderr when it failed
    return result


def measure(shape: Shape, latency_ms: float, workers: int, repeats: int) -> dict[str, list[float]]:
    """Whole-command wall seconds of both sides, for all runs and for none, interleaved."""
    walls: dict[str, list[float]] = {"cli": [], "library": [], "cli_empty": [], "library_empty": []}
    with fake_neptune(shape, latency_ms) as fake, tempfile.TemporaryDirectory(prefix="bench-prefect-") as tmp:
        scratch, token, project = Path(tmp), fake.api_token, shape.project_id
        prefect_home = scratch / "prefect-home"
        cli_export(token, project, scratch / "warm-up", workers, prefect_home, NO_RUN)  # creates Prefect's database
        for repeat in range(repeats):
            sides = {
                "cli": lambda root: cli_export(token, project, root, workers, prefect_home),
                "library": lambda root: library_export(token, project, root, workers),
                "cli_empty": lambda root: cli_export(token, project, root, workers, prefect_home, NO_RUN),
                "library_empty": lambda root: library_export(token, project, root, workers, NO_RUN),
            }
            order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
            for name in order:
                root = scratch / f"{name}-{repeat}"
                walls[name].append(sides[name](root).wall_s)
                shutil.rmtree(root, ignore_errors=True)
    return walls


def report(walls: dict[str, list[float]], runs: int) -> None:
    cli, library = median(walls["cli"]), median(walls["library"])
    fixed = median(walls["cli_empty"]) - median(walls["library_empty"])
    per_run = ((cli - median(walls["cli_empty"])) - (library - median(walls["library_empty"]))) / runs
    emit(f"{NAME}.ratio_{runs}_runs", safe_ratio(cli, library), "x CLI flow/library time", TARGET)
    emit(f"{NAME}.fixed_cost", fixed, "s per command (Prefect import + ephemeral server + flow)")
    emit(f"{NAME}.per_run_cost", per_run * 1000, "ms per run")
    note(f"medians: CLI {cli:.1f} s, library {library:.1f} s; empty selection: CLI {median(walls['cli_empty']):.1f} s, "
         f"library {median(walls['library_empty']):.1f} s; {len(walls['cli'])} repeats")


def main(argv: list[str] | None = None) -> int:
    parser = bench_arguments(__doc__, f"{QUICK.runs} runs instead of {FULL.runs}", quick_repeats=1)
    args = parse_bench_args(parser, argv)
    shape = QUICK if args.quick else FULL
    note(f"{NAME}: {shape.describe()}; {args.latency_ms:g} ms latency; {args.workers} workers; {args.repeats} repeats")
    try:
        walls = measure(shape, args.latency_ms, args.workers, args.repeats)
    except (ImportError, RuntimeError, OSError) as error:
        return cannot_run(NAME, str(error))
    report(walls, shape.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

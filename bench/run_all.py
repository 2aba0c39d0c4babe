"""Run every benchmark one after another (never in parallel: they measure the machine) and repeat their figures."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, machine_description  # noqa: E402

BENCHMARKS = ("export_vs_floor", "memory_bound", "load_vs_floor", "prefect_overhead", "scaling", "startup", "vs_peer")


FIGURE = re.compile(r"^[A-Za-z_][\w.]*: \S")  # `name: value unit (target ...)`; client chatter never matches


def figure_lines(output: str) -> list[str]:
    """The summary lines of a benchmark's output (a dotted name, a colon, the value)."""
    return [line for line in output.splitlines() if FIGURE.match(line)]


def run_one(name: str, quick: bool) -> tuple[int, list[str], float]:
    """Run bench/<name>.py, echoing its output; (exit status, summary lines, seconds)."""
    command = [sys.executable, str(REPO / "bench" / f"{name}.py"), *(["--quick"] if quick else [])]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    captured = []
    for line in process.stdout:
        print(line, end="", flush=True)
        captured.append(line)
    process.wait()
    return process.returncode, figure_lines("".join(captured)), time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (under five minutes in total)")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    chosen = [n.strip() for n in args.only.split(",")] if args.only else list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    print(f"machine: {machine_description()}", flush=True)
    failed, figures = [], []
    for name in chosen:
        print(f"== {name}", flush=True)
        status, lines, seconds = run_one(name, args.quick)
        figures += lines
        print(f"   ({seconds:.0f} s)", flush=True)
        if status != 0:
            failed.append(name)
    print("== summary", flush=True)
    for line in figures:
        print(line)
    if failed:
        print(f"could not run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

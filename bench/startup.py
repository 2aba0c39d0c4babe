"""Benchmark: the fixed cost of one `neptune-exporter export`: command start to its first Neptune request, to its first
request for a run's data, and to its end, for one small run (its own local Prefect server, private PREFECT_HOME)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    CLIENT_ENV,
    bench_arguments,
    emit,
    median,
    note,
    parse_bench_args,
    run_child,
)

NAME = "startup"
TARGET = "<= 3 s on an idle machine"


def one_command(fake, root: Path, prefect_home: Path) -> dict[str, float]:
    """Seconds from the command's start to its first request, its first request reading a run, and its end."""
    fake.requests.clear()
    command = [
        str(Path(sys.executable).with_name("neptune-exporter")),
        "export",
        "-p",
        fake.default_project(),
        "-d",
        str(root / "data"),
        "-f",
        str(root / "files"),
        "--no-progress",
    ]
    env = {**CLIENT_ENV, "NEPTUNE_API_TOKEN": fake.api_token, "PREFECT_HOME": str(prefect_home)}
    started = time.monotonic()  # CLOCK_MONOTONIC: the same clock as the fake's request times (this machine)
    result = run_child(command, env=env)
    ended = time.monotonic()
    if result.returncode != 0:
        raise RuntimeError(f"the export failed (exit {result.returncode}): {result.stderr[-2000:]}")
    records = sorted(fake.requests.records(), key=lambda r: r.at - r.duration_s)
    first = records[0].at - records[0].duration_s
    first_run = min(r.at - r.duration_s for r in records if r.runs)
    return {"first_request": first - started, "first_run_request": first_run - started, "whole": ended - started}


def main(argv: list[str] | None = None) -> int:
    parser = bench_arguments(__doc__, "3 commands instead of 5", repeats=5, quick_repeats=3, latency_ms=None)
    args = parse_bench_args(parser, argv)
    from neptune_exporter.fake_neptune import FakeNeptune
    from neptune_exporter.fake_neptune.datasets import generate_workspace

    figures: dict[str, list[float]] = {"first_request": [], "first_run_request": [], "whole": []}
    with FakeNeptune(generate_workspace(runs=1, metrics=2, points=100, params=5)) as fake:
        with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
            prefect_home = Path(tmp) / "prefect-home"
            one_command(fake, Path(tmp) / "warm-up", prefect_home)  # Prefect's database exists (a returning user)
            for repeat in range(args.repeats):
                for name, seconds in one_command(fake, Path(tmp) / f"run-{repeat}", prefect_home).items():
                    figures[name].append(seconds)
    emit(f"{NAME}.to_first_neptune_request", median(figures["first_request"]), "s", TARGET)
    emit(f"{NAME}.to_first_run_data_request", median(figures["first_run_request"]), "s")
    emit(f"{NAME}.whole_command_one_small_run", median(figures["whole"]), "s")
    note(
        f"each figure the median of {args.repeats} commands: "
        + "; ".join(f"{name} {[round(s, 2) for s in values]}" for name, values in figures.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

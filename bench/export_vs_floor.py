"""Benchmark 1: export to Parquet + files vs the neptune-query fetch floor, same data, same concurrency, 20 ms latency
(`--processes N`: our export in N worker processes, the floor's runs fetched in N processes too; 0: this process)."""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    CLIENT_ENV,
    Shape,
    alternate,
    bench_arguments,
    cannot_run,
    emit,
    export_options,
    fake_neptune,
    median,
    note,
    parse_bench_args,
    per_second,
    safe_ratio,
)

NAME = "export_vs_floor"
TARGET = "<= 1.3"
STRING_POINTS, HISTOGRAM_POINTS = 100, 10  # generate_workspace defaults per string / histogram series
FULL = Shape(
    runs=200, metrics=20, points=20_000, params=50, string_series=2, histograms=1, files=3, file_size=1024 * 1024
)
QUICK = Shape(
    runs=12, metrics=10, points=5_000, params=50, string_series=2, histograms=1, files=2, file_size=1024 * 1024
)


def series_points(shape: Shape) -> int:
    """Every series point of the workspace (float, string, histogram)."""
    per_run = shape.metrics * shape.points + shape.string_series * STRING_POINTS + shape.histograms * HISTOGRAM_POINTS
    return shape.runs * per_run


def run_ids(shape: Shape) -> list[str]:
    """Custom run ids of a generated workspace (run-00000 ...)."""
    return [f"run-{i:05d}" for i in range(shape.runs)]


def fetch_run(project: str, run_id: str, staging: Path) -> int:
    """The floor for one run: every attribute with plain neptune-query calls, into memory, then dropped."""
    from neptune_query import runs as nq

    nq.fetch_runs_table(project=project, runs=[run_id], attributes=r"^params/")
    metrics = nq.fetch_metrics(
        project=project, runs=[run_id], attributes=r"^metrics/", include_time="absolute", lineage_to_the_root=False
    )
    series = nq.fetch_series(
        project=project,
        runs=[run_id],
        attributes=r"^(logs|histograms)/",
        include_time="absolute",
        lineage_to_the_root=False,
    )
    files = nq.fetch_runs_table(project=project, runs=[run_id], attributes=r"^files/")
    if not files.empty:
        folder = staging / run_id
        nq.download_files(files=files, destination=folder)
        shutil.rmtree(folder, ignore_errors=True)
    return int(metrics.xs("value", axis=1, level=1).count().sum()) + int(
        series.xs("value", axis=1, level=1).count().sum()
    )


def fetch_floor(token: str, shape: Shape, workers: int, processes: int, staging: Path) -> int:
    """All runs fetched `workers` at a time (the export's run concurrency), in this process or shared out over
    `processes` processes as the export shares them (each `workers / processes` at a time); the points received."""
    ids = run_ids(shape)
    if processes <= 0:
        return fetch_share(token, shape.project_id, ids, workers, staging)
    threads = max(1, math.ceil(workers / processes))
    shares = [ids[index::processes] for index in range(processes)]
    spawn = multiprocessing.get_context("spawn")  # as the export starts its workers
    with ProcessPoolExecutor(max_workers=processes, mp_context=spawn) as pool:
        futures = [pool.submit(fetch_share, token, shape.project_id, share, threads, staging) for share in shares]
        return sum(future.result() for future in futures)


def fetch_share(token: str, project: str, ids: list[str], threads: int, staging: Path) -> int:
    """These runs fetched `threads` at a time with the export's client knobs; the points received."""
    import neptune_query

    from neptune_exporter.exporters.neptune3 import configure_neptune_query
    from neptune_exporter.settings import Settings

    configure_neptune_query(Settings.from_env())
    neptune_query.set_api_token(token)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return sum(pool.map(lambda run_id: fetch_run(project, run_id, staging), ids))


def export_once(token: str, shape: Shape, workers: int, processes: int, root: Path) -> int:
    """Our export (library loop, `processes` worker processes) to a fresh folder; the points written."""
    from neptune_exporter.export_runner import run_export
    from neptune_exporter.settings import Settings

    options = replace(export_options(token, shape.project_id, root, workers), processes=processes)
    results = run_export(options, Settings.from_env())
    failed = [r for r in results if r.status != "complete"]
    if failed:
        raise RuntimeError(f"{len(failed)} runs did not export: {failed[0].errors[:1]}")
    return sum(r.points for r in results)


def measure(shape: Shape, latency_ms: float, workers: int, processes: int, repeats: int) -> dict[str, float]:
    """Median seconds of floor and export, interleaved, each export into an empty folder."""
    from neptune_exporter.exporters.neptune3 import configure_neptune_query
    from neptune_exporter.settings import Settings

    configure_neptune_query(Settings.from_env())  # both sides run with the export's client knobs from the start
    expected = series_points(shape)
    with fake_neptune(shape, latency_ms) as fake, tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        root = Path(tmp)

        def floor(repeat: int) -> None:
            got = fetch_floor(fake.api_token, shape, workers, processes, root / f"floor-{repeat}")
            if got != expected:
                raise RuntimeError(f"the floor fetched {got:,} points, expected {expected:,}")

        def ours(repeat: int) -> None:
            target = root / f"export-{repeat}"
            export_once(fake.api_token, shape, workers, processes, target)
            shutil.rmtree(target, ignore_errors=True)

        seconds = alternate({"floor": floor, "export": ours}, repeats)
    return {
        "floor": median(seconds["floor"]),
        "export": median(seconds["export"]),
        "points": expected,
        "spread": max(seconds["export"]) / min(seconds["export"]),
    }


def report(figures: dict[str, float]) -> None:
    floor_rate = per_second(figures["points"], figures["floor"])
    export_rate = per_second(figures["points"], figures["export"])
    emit(f"{NAME}.floor_rate", floor_rate, "points/s")
    emit(f"{NAME}.export_rate", export_rate, "points/s")
    emit(f"{NAME}.ratio", safe_ratio(figures["export"], figures["floor"]), "x export/floor time", TARGET)
    note(
        f"medians: floor {figures['floor']:.1f} s, export {figures['export']:.1f} s; "
        f"export max/min over repeats {figures['spread']:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = bench_arguments(__doc__, "small workspace (about a minute)")
    parser.add_argument("--runs", type=int, default=None, help="this many runs of the chosen shape")
    parser.add_argument(
        "--processes", type=int, default=0, help="worker processes of both sides (default 0: this process)"
    )
    args = parse_bench_args(parser, argv)
    shape = QUICK if args.quick else FULL
    shape = replace(shape, runs=args.runs) if args.runs else shape
    os.environ.update(CLIENT_ENV)
    note(
        f"{NAME}: {shape.describe()}; {args.latency_ms:g} ms latency; {args.workers} workers; "
        f"{args.processes} processes; {args.repeats} repeats"
    )
    try:
        figures = measure(shape, args.latency_ms, args.workers, args.processes, args.repeats)
    except (ImportError, RuntimeError, OSError) as error:
        return cannot_run(NAME, str(error))
    report(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())

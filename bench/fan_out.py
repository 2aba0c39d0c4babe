"""Benchmark: `export --distribute` on this machine with 1, 2 and 4 `prefect worker start` processes of a process work
pool (one chunk at a time each), against a real `prefect server start` on SQLite and on PostgreSQL, and the fake
Neptune server (20 ms latency): wall time, flow runs and task runs created, and the CPU seconds the Prefect server
spent."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    CLIENT_ENV,
    REPO,
    Shape,
    bench_arguments,
    cannot_run,
    emit,
    fake_neptune,
    note,
    parse_bench_args,
    postgresql_database,
)

NAME = "fan_out"
POOL = "neptune-exporter"  # the work pool deployments/prefect.yaml names (the benchmark has its own server)
FULL = {"runs": 2_000, "chunk_runs": 100, "workers": (1, 2, 4)}
QUICK = {"runs": 80, "chunk_runs": 20, "workers": (1, 2)}
RUN_SHAPE = Shape(runs=1, metrics=3, points=200, params=5, string_series=0, histograms=0, files=0, experiments=10)
TICKS = 100  # /proc CPU times are in clock ticks (USER_HZ)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime + cutime + cstime) / TICKS


def prefect(args: list[str], env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *args], env=env, cwd=cwd, capture_output=True
    )
    if done.returncode:
        raise RuntimeError(f"prefect {' '.join(args)} failed: {done.stdout[-1000:]!r} {done.stderr[-1000:]!r}")


def start_workers(count: int, env: dict[str, str], root: Path) -> list[subprocess.Popen]:
    workers = []
    for number in range(count):
        with open(root / f"worker-{count}-{number}.log", "ab") as log:
            command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--limit", "1"]
            workers.append(
                subprocess.Popen(
                    [*command, "--name", f"w{count}-{number}"],
                    env=env,
                    cwd=root,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    return workers


def runs_created(api_url: str, data: Path) -> tuple[int, int]:
    """(chunk flow runs, their task runs) of the export into `data`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        chunks = [
            run
            for run in client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["export-chunk"])), limit=200
            )
            if run.parameters["options"]["data_path"] == str(data)
        ]
        ids = FlowRunFilter(id=FlowRunFilterId(any_=[run.id for run in chunks]))
        task_runs, page = 0, 200
        while batch := client.read_task_runs(flow_run_filter=ids, limit=page, offset=task_runs):
            task_runs += len(batch)
        return len(chunks), task_runs


def export_with(workers: int, settings: dict, fake, server, root: Path) -> dict:
    """One distributed export with `workers` workers: its figures."""
    from deployments.server import stop_process

    data = root / f"data-{workers}"
    client_env = server.client_env({"PYTHONWARNINGS": "ignore", **CLIENT_ENV})
    worker_env = {**client_env, **fake.env(RUN_SHAPE.project_id), "PREFECT_WORKER_QUERY_SECONDS": "2"}
    pool = start_workers(workers, worker_env, root)
    try:
        command = [sys.executable, "-m", "neptune_exporter.cli", "export", "-p", RUN_SHAPE.project_id, "--no-progress"]
        command += ["-d", str(data), "-f", str(root / f"files-{workers}"), "--distribute", "--work-pool", POOL]
        command += ["--chunk-runs", str(settings["chunk_runs"]), "--max-parallel", str(workers)]
        env = {**worker_env, "PREFECT_HOME": str(root / "cli-home"), "PYTHONPATH": str(REPO)}
        cpu_before, started = process_cpu_seconds(server.process.pid), time.monotonic()
        done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=7200)
        seconds, cpu = time.monotonic() - started, process_cpu_seconds(server.process.pid) - cpu_before
    finally:
        for worker in pool:
            stop_process(worker)
    if done.returncode != 0:
        raise RuntimeError(f"the export with {workers} worker(s) failed: {done.stdout[-1500:]} {done.stderr[-1500:]}")
    summary = json.loads((next(data.glob("*/export_summary.json"))).read_text())
    if summary["runs_complete"] != settings["runs"]:
        raise RuntimeError(f"{summary['runs_complete']} of {settings['runs']} runs exported with {workers} worker(s)")
    (flow_runs, task_runs), lag = caught_up(server.api_url, data, settings["runs"])
    return {"seconds": seconds, "server_cpu": cpu, "flow_runs": flow_runs, "task_runs": task_runs, "lag": lag}


def caught_up(api_url: str, data: Path, runs: int, patience: float = 600.0) -> tuple[tuple[int, int], float]:
    """(chunk flow runs, task runs) once the server holds a task run per run (or `patience` ran out), and the seconds
    it took after the export ended: the server records task runs from their events, so it may lag behind."""
    started = time.monotonic()
    while (created := runs_created(api_url, data))[1] < runs and time.monotonic() - started < patience:
        time.sleep(1.0)
    return created, time.monotonic() - started


def database(kind: str):
    """A context giving the Prefect server's database URL: None for SQLite (in its home), else a PostgreSQL one."""
    return postgresql_database() if kind == "postgresql" else nullcontext(None)


def measure(kind: str, settings: dict, fake, root: Path) -> dict[int, dict]:
    """{workers: figures} of the distributed exports against a fresh Prefect server on this database."""
    from deployments.server import PrefectServer

    root.mkdir()
    with database(kind) as url, PrefectServer(root / "prefect", database_url=url) as server:
        env = server.client_env({"PYTHONWARNINGS": "ignore"})
        prefect(["work-pool", "create", POOL, "--type", "process"], env, root)
        prefect(["deploy", "--all", "--prefect-file", str(REPO / "deployments" / "prefect.yaml")], env, root)
        figures = {}
        for workers in settings["workers"]:
            figures[workers] = export_with(workers, settings, fake, server, root)
            report_one(kind, workers, figures[workers])
        return figures


def report_one(kind: str, count: int, facts: dict) -> None:
    """One measurement's figures, printed as soon as it is taken (a long run that is stopped keeps what it printed)."""
    emit(f"{NAME}.{kind}.seconds_with_{count}_workers", facts["seconds"], "s")
    emit(f"{NAME}.{kind}.prefect_server_cpu_with_{count}_workers", facts["server_cpu"], "s")
    emit(f"{NAME}.{kind}.task_runs_recorded_after_export_with_{count}_workers", facts["lag"], "s")
    note(f"{kind}, {count} worker(s): {facts['flow_runs']} chunk flow runs, {facts['task_runs']} task runs")


def report_ratios(figures: dict[str, dict[int, dict]], workers: tuple[int, ...]) -> None:
    for kind, by_workers in figures.items():
        one, most = by_workers[workers[0]], by_workers[workers[-1]]
        emit(f"{NAME}.{kind}.speedup_{workers[-1]}_vs_{workers[0]}", one["seconds"] / most["seconds"], "x")
    if len(figures) == 2:
        for count in workers:
            ratio = figures["postgresql"][count]["seconds"] / figures["sqlite"][count]["seconds"]
            emit(f"{NAME}.postgresql_vs_sqlite_seconds_with_{count}_workers", ratio, "x")


def main(argv: list[str] | None = None) -> int:
    parser = bench_arguments(__doc__, f"{QUICK['runs']} runs, 1 and 2 workers, SQLite only", repeats=1)
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), help="default: both (--quick: sqlite)")
    parser.add_argument(
        "--runs", type=int, help=f"runs in the project (default {FULL['runs']}, --quick {QUICK['runs']})"
    )
    args = parse_bench_args(parser, argv)
    settings = {**(QUICK if args.quick else FULL), **({"runs": args.runs} if args.runs else {})}
    chosen = args.database or ("sqlite" if args.quick else "both")
    kinds = ("sqlite", "postgresql") if chosen == "both" else (chosen,)
    shape = Shape(**{**RUN_SHAPE.__dict__, "runs": settings["runs"]})
    note(f"{NAME}: {shape.describe()}; {args.latency_ms:g} ms latency; chunks of {settings['chunk_runs']} runs")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped benchmark still stops its servers
    try:
        with tempfile.TemporaryDirectory(prefix="bench-fan-out-") as tmp, fake_neptune(shape, args.latency_ms) as fake:
            figures = {kind: measure(kind, settings, fake, Path(tmp) / kind) for kind in kinds}
    except (ImportError, RuntimeError, OSError) as error:
        return cannot_run(NAME, str(error))
    report_ratios(figures, settings["workers"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

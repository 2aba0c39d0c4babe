"""Shared benchmark helpers: fake Neptune / MLflow servers, child processes with peak RSS, medians, summary lines."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # scripts run as `python bench/x.py` see bench/ first, not the repo
    sys.path.insert(0, str(REPO))

EXIT_CANNOT_RUN = 2
# neptune-query knobs fixed for every measured side, so floor and export use the same client concurrency.
CLIENT_ENV = {"NEPTUNE_QUERY_MAX_WORKERS": "8", "NEPTUNE_ENABLE_COLORS": "false", "OAUTHLIB_INSECURE_TRANSPORT": "1"}


# ----------------------------------------------------------------------------- figures and statistics


def format_value(value: float) -> str:
    """Readable number: thousands separators for large values, 3 significant digits for small ones."""
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value else "0"


def summary_line(name: str, value: float, unit: str, target: str | None = None) -> str:
    """`name: value unit (target ...)` — the one line per figure every benchmark prints."""
    text = f"{name}: {format_value(value)} {unit}".rstrip()
    return f"{text} (target {target})" if target else text


def emit(name: str, value: float, unit: str, target: str | None = None) -> str:
    line = summary_line(name, value, unit, target)
    print(line, flush=True)
    return line


def note(text: str) -> None:
    """A detail line under the figures (indented so summary lines stay greppable)."""
    print(f"  {text}", flush=True)


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def safe_ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def timed(action: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of one call, on the monotonic high-resolution clock."""
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def alternate(sides: dict[str, Callable[[int], object]], repeats: int) -> dict[str, list[float]]:
    """Time every side once per repeat, interleaved (a, b, b, a, a, b ...) so drifting machine load hits both alike.

    A side that returns a float reports its own seconds (a child process timing only the work); otherwise the
    call's wall time counts."""
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for repeat in range(repeats):
        order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
        for name in order:
            elapsed, reported = timed(partial(sides[name], repeat))
            seconds[name].append(reported if isinstance(reported, float) else elapsed)
    return seconds


def per_second(amount: float, seconds: float) -> float:
    return safe_ratio(amount, seconds)


def machine_description() -> str:
    """Cores, CPU model, memory, Python, load average: the context every recorded figure needs."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        model = names[0] if names else model
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kb = int(meminfo.read_text().split()[1])
        memory = f", {total_kb / 1024 / 1024:.0f} GB RAM"
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return f"{os.cpu_count()} cores ({model}){memory}, Python {platform.python_version()}, load average {load[0]:.1f}"


def bench_arguments(
    doc: str | None,
    quick_help: str,
    repeats: int = 3,
    quick_repeats: int | None = None,
    latency_ms: float | None = 20.0,
) -> argparse.ArgumentParser:
    """The options every benchmark shares: --quick, --repeats, --workers and (when it serves Neptune) --latency-ms."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"measurements per side, the median is used (default {repeats}, --quick {quick_repeats or repeats})",
    )
    parser.add_argument("--workers", type=int, default=4, help="runs processed at the same time (both sides)")
    if latency_ms is not None:
        parser.add_argument("--latency-ms", type=float, default=latency_ms, help="latency the fake adds per request")
    parser.set_defaults(full_repeats=repeats, quick_repeats=quick_repeats or repeats)
    return parser


def parse_bench_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parsed options; --repeats defaults to the quick or full count."""
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = args.quick_repeats if args.quick else args.full_repeats
    return args


def cannot_run(benchmark: str, reason: str) -> int:
    print(f"{benchmark}: cannot run: {reason}", file=sys.stderr, flush=True)
    return EXIT_CANNOT_RUN


# ----------------------------------------------------------------------------- child processes


@dataclass
class ChildResult:
    """A finished child process: exit status, wall time, its peak resident memory and output."""

    returncode: int
    wall_s: float
    peak_rss_bytes: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        """The last stdout line as JSON (children report their figures that way)."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        if self.returncode != 0 or not lines:
            raise RuntimeError(f"child failed (exit {self.returncode}): {self.stderr[-3000:] or self.stdout[-3000:]}")
        return json.loads(lines[-1])


def rusage_peak_bytes(ru_maxrss: int) -> int:
    """ru_maxrss in bytes: kilobytes on Linux, bytes on macOS."""
    return ru_maxrss if sys.platform == "darwin" else ru_maxrss * 1024


def run_child(argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path = REPO) -> ChildResult:
    """Run a command to completion; peak RSS comes from wait4's rusage of that very child (not a sample)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(list(argv), cwd=cwd, env={**os.environ, **(env or {})}, stdout=out, stderr=err)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildResult(process.returncode, wall, rusage_peak_bytes(usage.ru_maxrss), out.read(), err.read())


def python_child(module: str, *args: str, env: dict[str, str] | None = None) -> ChildResult:
    """`python -m module args...` from the repo root with the benchmark client settings."""
    return run_child([sys.executable, "-m", module, *args], env={**CLIENT_ENV, **(env or {})})


# ----------------------------------------------------------------------------- the fake Neptune server


@dataclass(frozen=True)
class Shape:
    """A generated workspace: every run has the same attributes (see fake_neptune.datasets.generate_workspace)."""

    runs: int = 10
    metrics: int = 5
    points: int = 1000
    params: int = 10
    string_series: int = 0
    histograms: int = 0
    files: int = 0
    file_size: int = 1024
    experiments: int = 2
    project: str = "bench"

    @property
    def float_points(self) -> int:
        return self.runs * self.metrics * self.points

    @property
    def project_id(self) -> str:
        return f"workspace/{self.project}"

    def serve_args(self) -> list[str]:
        return [
            "--generate",
            "--runs",
            str(self.runs),
            "--experiments",
            str(self.experiments),
            "--params",
            str(self.params),
            "--metrics",
            str(self.metrics),
            "--points",
            str(self.points),
            "--string-series",
            str(self.string_series),
            "--histograms",
            str(self.histograms),
            "--files",
            str(self.files),
            "--file-size",
            str(self.file_size),
            "--project",
            self.project,
        ]

    def describe(self) -> str:
        return (
            f"{self.runs} runs x {self.metrics} metrics x {self.points:,} points, {self.params} params, "
            f"{self.string_series} string series, {self.histograms} histograms, "
            f"{self.files} files of {self.file_size:,} B"
        )


@contextmanager
def fake_neptune(shape: Shape, latency_ms: float = 0.0) -> Iterator[object]:
    """The fake server in its own process (its CPU never competes with the measured client's GIL)."""
    from neptune_exporter.fake_neptune import FakeNeptuneProcess

    args = shape.serve_args() + (["--latency-ms", str(latency_ms)] if latency_ms else [])
    with FakeNeptuneProcess(args, workdir=str(REPO), startup_timeout_s=120) as process:
        yield process


# ----------------------------------------------------------------------------- a throwaway PostgreSQL cluster


def postgresql_bin() -> Path:
    """The folder of Debian's PostgreSQL programs (the newest installed); RuntimeError saying how to get them."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql")
    return found[-1].parent


def _as_postgres(command: list[str], check: bool = True) -> None:
    """Run a PostgreSQL program; as the `postgres` user when we are root (PostgreSQL refuses to run as root)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    done = subprocess.run([*prefix, *command], capture_output=True, text=True)
    if check and done.returncode:
        raise RuntimeError(f"{Path(command[0]).name} failed: {done.stdout[-800:]} {done.stderr[-800:]}")


@contextmanager
def postgresql_database() -> Iterator[str]:
    """A PostgreSQL cluster of its own on 127.0.0.1 (trust auth, removed afterwards): the asyncpg URL of its
    `prefect` database."""
    programs, folder, port = postgresql_bin(), Path(tempfile.mkdtemp(prefix="bench-postgresql-")), free_port()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data = folder / "data"
    _as_postgres([str(programs / "initdb"), "-D", str(data), "-U", "prefect", "--auth=trust", "-E", "UTF8"])
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=300"
    _as_postgres(
        [str(programs / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-o", options, "-w", "start"]
    )
    try:
        _as_postgres([str(programs / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "prefect", "prefect"])
        yield f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect"
    finally:
        _as_postgres([str(programs / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], check=False)
        shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------- a lean MLflow server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MlflowServer:
    """`mlflow server` with SQLite and proxied artifacts on 127.0.0.1, `workers` uvicorn workers, no job execution."""

    folder: Path
    workers: int = 1
    startup_timeout_s: float = 180.0
    url: str = ""
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> MlflowServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        command = [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--workers",
            str(self.workers),
            "--backend-store-uri",
            f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        log = open(self.folder / "server.log", "wb")
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        log.close()
        self.url = f"http://127.0.0.1:{port}"
        self._await_health()
        return self

    def _await_health(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not become healthy: {(self.folder / 'server.log').read_text()[-2000:]}")

    def stop(self) -> None:
        """Stop the server's process group (its gunicorn/uvicorn workers too)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------- export in a child process


def export_options(token: str, project_id: str, root: Path, workers: int, runs_regex: str | None = None):
    """ExportOptions writing under `root` (data/, files/)."""
    from neptune_exporter.export import ExportOptions
    from neptune_exporter.exporters.base import RunSelection

    return ExportOptions(
        source="neptune3",
        projects=(project_id,),
        data_path=str(root / "data"),
        files_path=str(root / "files"),
        api_token=token,
        workers=workers,
        runs=RunSelection(runs_regex=runs_regex),
    )


def export_in_child(
    token: str, project_id: str, root: Path, workers: int, runs_regex: str | None = None
) -> ChildResult:
    """`run_export` (library loop, no Prefect) in a fresh process; its JSON reports seconds and points."""
    args = ["export", "--project", project_id, "--root", str(root), "--workers", str(workers)]
    return python_child(
        "bench.common", *args, *(["--runs", runs_regex] if runs_regex else []), env={"NEPTUNE_API_TOKEN": token}
    )  # the environment, not argv: `ps` never shows it


def _child_export(args: argparse.Namespace) -> None:
    from neptune_exporter.export_runner import run_export
    from neptune_exporter.settings import Settings

    options = export_options(os.environ["NEPTUNE_API_TOKEN"], args.project, Path(args.root), args.workers, args.runs)
    seconds, results = timed(lambda: run_export(options, Settings.from_env()))
    failed = [r.run_id for r in results if r.status == "failed"]
    if failed:
        raise SystemExit(f"export failed for runs {failed[:5]}: {results[0].errors[:1]}")
    print(
        json.dumps(
            {
                "seconds": seconds,
                "runs": len(results),
                "points": sum(r.points for r in results),
                "bytes": sum(r.bytes for r in results),
            }
        )
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Child entry point: `NEPTUNE_API_TOKEN=T python -m bench.common export --project P --root DIR --workers N`."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export")
    export.add_argument("--project", required=True)
    export.add_argument("--root", required=True)
    export.add_argument("--workers", type=int, default=4)
    export.add_argument("--runs", default=None)
    args = parser.parse_args(argv)
    _child_export(args)


if __name__ == "__main__":
    main()

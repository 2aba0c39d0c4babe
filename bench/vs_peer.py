"""Benchmark: this tool against the other Neptune migration tool (neptune-ai/neptune-exporter), side by side."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    CLIENT_ENV,
    ChildResult,
    MlflowServer,
    Shape,
    bench_arguments,
    cannot_run,
    emit,
    fake_neptune,
    machine_description,
    median,
    note,
    parse_bench_args,
    run_child,
    safe_ratio,
)

NAME = "vs_peer"
HOW_TO_GET_THE_PEER = """\
vs_peer (nothing measured): give --peer PATH, the other tool's `neptune-exporter` command. To get it (Python >= 3.13):
  git clone https://github.com/neptune-ai/neptune-exporter /tmp/peer-src
  ~/.pyenv/versions/3.13.0/bin/python -m venv /tmp/peer-venv
  /tmp/peer-venv/bin/pip install '/tmp/peer-src[mlflow,wandb]'
  .venv/bin/python bench/vs_peer.py --peer /tmp/peer-venv/bin/neptune-exporter
(or set NEPTUNE_EXPORTER_PEER to that path, which `make bench` passes on)"""

# Issue 17's sizes: 3.x export at 8M points (and 80M with --large), 2.x export, loads of 8 runs x 10 x 10,000 points.
EXPORT3_FULL = Shape(runs=40, metrics=10, points=20_000, params=20, project="export3")
EXPORT3_LARGE = Shape(runs=400, metrics=10, points=20_000, params=20, project="export3")
EXPORT2_FULL = Shape(runs=20, metrics=10, points=10_000, params=20, project="export2")
LOAD_FULL = Shape(runs=8, metrics=10, points=10_000, params=20, project="load")
EXPORT3_QUICK = Shape(runs=8, metrics=5, points=5_000, params=10, project="export3")
EXPORT2_QUICK = Shape(runs=4, metrics=5, points=2_000, params=10, project="export2")
LOAD_QUICK = Shape(runs=4, metrics=5, points=2_000, params=10, project="load")

MLFLOW_SERVER_WORKERS = 4
TARGETS = {
    "export3": "<= 0.5 (8M points), <= 0.4 (80M)",
    "export2": "<= 0.5",
    "mlflow_sqlite": "<= 0.5",
    "mlflow_http": "<= 0.5",
    "wandb_offline": "<= 0.8",
}


@dataclass
class Tools:
    """How to start each tool, and the scratch folder every side writes under."""

    peer: Path
    scratch: Path
    workers: int
    processes: int | None = None  # our export's --processes (None: its default, 0 for the fake on this machine)
    prefect_ready: bool = False  # our PREFECT_HOME's database exists (warm_up_prefect ran)

    def ours(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "neptune_exporter.cli", *args]

    def theirs(self, *args: str) -> list[str]:
        return [str(self.peer), *args]

    def common_env(self, token: str = "") -> dict[str, str]:
        """The same client settings for both tools; ours gets a private PREFECT_HOME (warmed up once)."""
        return {
            **CLIENT_ENV,
            "NEPTUNE_API_TOKEN": token,
            "PREFECT_HOME": str(self.scratch / "prefect-home"),
            "WANDB_SILENT": "true",
            "DO_NOT_TRACK": "1",
        }


@dataclass
class Measured:
    """One side's repeats: wall seconds and peak RSS (bytes, the largest process of the command's tree)."""

    walls: list[float]
    peaks: list[int]

    def add(self, result: ChildResult) -> None:
        self.walls.append(result.wall_s)
        self.peaks.append(result.peak_rss_bytes)


def checked(result: ChildResult, what: str) -> ChildResult:
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}): {(result.stderr or result.stdout)[-3000:]}")
    return result


# Rows one tool writes on purpose and the other does not; counted apart so the row check compares the rest.
OURS_ONLY = {"neptune2": {"sys/state": "the 2.x run state ('Active' / 'Inactive'), which the peer leaves out"}}


def parquet_rows(folder: Path, leave_out: Iterable[str] = ()) -> int:
    """Rows of every Parquet file under `folder` (both tools write one row per value or point), less the rows of the
    attribute paths in `leave_out`."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    left_out, total = list(leave_out), 0
    for path in sorted(folder.rglob("*.parquet")):
        if not left_out:
            total += pq.ParquetFile(path).metadata.num_rows
            continue
        paths = pq.read_table(path, columns=["attribute_path"]).column("attribute_path")
        total += len(paths) - pc.sum(pc.is_in(paths, value_set=pa.array(left_out, type=pa.string()))).as_py()
    return total


# ----------------------------------------------------------------------------- the commands of each side


def export_ours(tools: Tools, token: str, shape: Shape, root: Path, source: str) -> ChildResult:
    args = ["export", "--source", source, "-p", shape.project_id, "-d", str(root / "data"), "-f", str(root / "files")]
    processes = [] if tools.processes is None else ["--processes", str(tools.processes)]
    command = tools.ours(*args, "--workers", str(tools.workers), *processes, "--no-progress")
    return checked(run_child(command, env=tools.common_env(token)), f"our {source} export")


def export_theirs(tools: Tools, token: str, shape: Shape, root: Path, source: str) -> ChildResult:
    args = ["export", "--exporter", source, "-p", shape.project_id, "-d", str(root / "data"), "-f", str(root / "files")]
    command = tools.theirs(*args, "--no-progress", "--log-file", str(root / "peer.log"))
    return checked(run_child(command, env=tools.common_env(token), cwd=root.parent), f"the peer's {source} export")


def load_ours(tools: Tools, export: Path, target: list[str], env: dict[str, str], cwd: Path) -> ChildResult:
    """Our load without its validation (the peer does not validate), run from `cwd` (MLflow's ./mlruns go there)."""
    args = ["load", "-d", str(export / "data"), "-f", str(export / "files"), *target, "--workers", str(tools.workers)]
    command = tools.ours(*args, "--no-validate", "--no-progress")
    return checked(run_child(command, env={**tools.common_env(), **env}, cwd=cwd), "our load")


def load_theirs(tools: Tools, export: Path, target: list[str], env: dict[str, str], log: Path) -> ChildResult:
    args = ["load", "-d", str(export / "data"), "-f", str(export / "files"), *target]
    command = tools.theirs(*args, "--no-progress", "--log-file", str(log))
    return checked(run_child(command, env={**tools.common_env(), **env}, cwd=log.parent), "the peer's load")


# ----------------------------------------------------------------------------- the scenarios


def alternate_sides(sides: dict[str, Callable[[int], ChildResult]], repeats: int) -> dict[str, Measured]:
    """Every side once per repeat, interleaved (ours, theirs, theirs, ours, ...)."""
    measured = {name: Measured([], []) for name in sides}
    for repeat in range(repeats):
        for name in list(sides) if repeat % 2 == 0 else list(reversed(sides)):
            measured[name].add(sides[name](repeat))
    return measured


def measure_export(tools: Tools, shape: Shape, source: str, latency_ms: float, repeats: int) -> dict[str, Measured]:
    """Both tools export the same served project; their Parquet row counts must agree."""
    rows: dict[str, set[int]] = {"ours": set(), "theirs": set()}
    with fake_neptune(shape, latency_ms) as fake:
        token = fake.api_token
        warm_up_prefect(tools, token, shape, source)

        def side(name: str, run: Callable[..., ChildResult]) -> Callable[[int], ChildResult]:
            def once(repeat: int) -> ChildResult:
                root = tools.scratch / f"{source}-{name}-{repeat}"
                root.mkdir(parents=True)
                result = run(tools, token, shape, root, source)
                rows[name].add(parquet_rows(root / "data", OURS_ONLY.get(source, {}) if name == "ours" else ()))
                shutil.rmtree(root, ignore_errors=True)
                return result

            return once

        measured = alternate_sides(
            {"ours": side("ours", export_ours), "theirs": side("theirs", export_theirs)}, repeats
        )
    if len(rows["ours"] | rows["theirs"]) != 1:
        raise RuntimeError(
            f"{source}: the tools exported different numbers of rows: ours {rows['ours']}, theirs {rows['theirs']}"
        )
    note(f"{source}: both exported {rows['ours'].pop():,} rows ({shape.describe()})")
    for path, why in OURS_ONLY.get(source, {}).items():
        note(f"{source}: besides, ours has one `{path}` row per run: {why}")
    return measured


def warm_up_prefect(tools: Tools, token: str, shape: Shape, source: str) -> None:
    """One export matching no run, so Prefect's database exists before the clock runs (as for a returning user); once
    per PREFECT_HOME, which every scenario shares."""
    if tools.prefect_ready:
        return
    root = tools.scratch / "warm-up"
    command = tools.ours(
        "export",
        "--source",
        source,
        "-p",
        shape.project_id,
        "-d",
        str(root / "data"),
        "-f",
        str(root / "files"),
        "--runs",
        "^no-such-run$",
        "--no-progress",
    )
    checked(run_child(command, env=tools.common_env(token)), "our warm-up export (matching no run)")
    shutil.rmtree(root, ignore_errors=True)
    tools.prefect_ready = True


def prepare_load_export(tools: Tools, shape: Shape, latency_ms: float) -> Path:
    """One export (by the peer: the format both tools read) that every load side reads; our Prefect database is
    warmed up as for the exports (when only loads are measured, the first of ours would create it)."""
    root = tools.scratch / "load-export"
    root.mkdir(parents=True)
    with fake_neptune(shape, latency_ms) as fake:
        export_theirs(tools, fake.api_token, shape, root, "neptune3")
        warm_up_prefect(tools, fake.api_token, shape, "neptune3")
    return root


def measure_mlflow_sqlite(tools: Tools, export: Path, repeats: int) -> dict[str, Measured]:
    return measure_mlflow(tools, export, repeats, "mlflow-sqlite", sqlite_store)


def measure_mlflow_http(tools: Tools, export: Path, repeats: int) -> dict[str, Measured]:
    return measure_mlflow(tools, export, repeats, "mlflow-http", server_store)


@contextmanager
def sqlite_store(folder: Path) -> Iterator[str]:
    """A fresh `sqlite:///` file in `folder`."""
    yield f"sqlite:///{folder / 'mlflow.db'}"


@contextmanager
def server_store(folder: Path) -> Iterator[str]:
    """A fresh `mlflow server` with 4 workers (issue 17's server) over its own SQLite file in `folder`.

    Fresh for each load, not one server for all: every repeat loads the same points (same keys, timestamps and steps),
    and MLflow's metrics primary key orders by key, timestamp, step, so each copy's rows land between all earlier
    copies' rows and each load costs the server more than the one before, whichever tool makes it. A migration loads
    each point once; a fresh server gives every measurement the same store.
    """
    with MlflowServer(folder / "server", workers=MLFLOW_SERVER_WORKERS) as server:
        yield server.url


def measure_mlflow(
    tools: Tools, export: Path, repeats: int, label: str, store: Callable[[Path], AbstractContextManager[str]]
) -> dict[str, Measured]:
    """Both tools load the export into MLflow, each load into a fresh tracking store made by `store`."""

    def side(name: str) -> Callable[[int], ChildResult]:
        def once(repeat: int) -> ChildResult:
            folder = tools.scratch / f"{label}-{name}-{repeat}"
            folder.mkdir(parents=True)
            with store(folder) as uri:
                target = ["--mlflow-tracking-uri", uri]
                if name == "ours":
                    result = load_ours(tools, export, ["--target", "mlflow", *target], {}, folder)
                else:
                    result = load_theirs(tools, export, ["--loader", "mlflow", *target], {}, folder / "peer.log")
            shutil.rmtree(folder, ignore_errors=True)
            return result

        return once

    return alternate_sides({"ours": side("ours"), "theirs": side("theirs")}, repeats)


def measure_wandb_offline(tools: Tools, export: Path, repeats: int) -> dict[str, Measured]:
    def side(name: str) -> Callable[[int], ChildResult]:
        def once(repeat: int) -> ChildResult:
            folder = tools.scratch / f"wandb-{name}-{repeat}"
            folder.mkdir(parents=True)
            env = {"WANDB_MODE": "offline", "WANDB_DIR": str(folder)}
            if name == "ours":
                result = load_ours(tools, export, ["--target", "wandb", "--wandb-dir", str(folder)], env, folder)
            else:
                target = ["--loader", "wandb", "--wandb-entity", "bench", "--wandb-api-key", "x" * 40]
                result = load_theirs(tools, export, target, env, folder / "peer.log")
            shutil.rmtree(folder, ignore_errors=True)
            return result

        return once

    return alternate_sides({"ours": side("ours"), "theirs": side("theirs")}, repeats)


# ----------------------------------------------------------------------------- figures


def report(scenario: str, measured: dict[str, Measured], target: str) -> None:
    ours, theirs = median(measured["ours"].walls), median(measured["theirs"].walls)
    emit(f"{NAME}.{scenario}.ratio", safe_ratio(ours, theirs), "ours/theirs wall time", target)
    emit(f"{NAME}.{scenario}.ours", ours, "s")
    emit(f"{NAME}.{scenario}.theirs", theirs, "s")
    emit(f"{NAME}.{scenario}.ours_peak_rss", max(measured["ours"].peaks) / 2**30, "GB")
    emit(f"{NAME}.{scenario}.theirs_peak_rss", max(measured["theirs"].peaks) / 2**30, "GB")
    note(
        f"{scenario}: ours {[round(s, 1) for s in measured['ours'].walls]} s, theirs "
        f"{[round(s, 1) for s in measured['theirs'].walls]} s"
    )


def peer_works(peer: Path) -> str | None:
    """None when `peer --help` runs; else why not."""
    if not peer.is_file() or not os.access(peer, os.X_OK):
        return f"{peer} is not an executable file"
    result = run_child([str(peer), "--help"])
    return None if result.returncode == 0 else f"`{peer} --help` failed: {result.stderr[-500:]}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_arguments(__doc__, "small sizes, one repeat (about two minutes)", repeats=3, quick_repeats=1)
    parser.add_argument(
        "--peer",
        type=Path,
        default=os.environ.get("NEPTUNE_EXPORTER_PEER") or None,
        help="the other tool's `neptune-exporter` command (default: $NEPTUNE_EXPORTER_PEER)",
    )
    parser.add_argument("--processes", type=int, default=None, help="our export's --processes (default: its own)")
    parser.add_argument("--large", action="store_true", help="also the 3.x export at 80M points (long)")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(TARGETS)}")
    args = parse_bench_args(parser, argv)
    if args.peer is None:  # nothing measured, and not a failure: `make bench` runs without the other tool
        print(HOW_TO_GET_THE_PEER, flush=True)
        return 0
    if (problem := peer_works(args.peer)) is not None:
        return cannot_run(NAME, problem)
    chosen = [name.strip() for name in args.only.split(",")] if args.only else list(TARGETS)
    print(f"machine: {machine_description()}; {args.repeats} repeat(s), {args.workers} workers", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-vs-peer-") as tmp:
        tools = Tools(args.peer.resolve(), Path(tmp), args.workers, args.processes)
        run_scenarios(tools, chosen, args)
    return 0


def run_scenarios(tools: Tools, chosen: list[str], args) -> None:
    quick, repeats, latency = args.quick, args.repeats, args.latency_ms
    if "export3" in chosen:
        shape = EXPORT3_QUICK if quick else EXPORT3_FULL
        report("export3", measure_export(tools, shape, "neptune3", latency, repeats), TARGETS["export3"])
        if args.large:
            report("export3_80M", measure_export(tools, EXPORT3_LARGE, "neptune3", latency, repeats), "<= 0.4")
    if "export2" in chosen:
        shape = EXPORT2_QUICK if quick else EXPORT2_FULL
        report("export2", measure_export(tools, shape, "neptune2", latency, repeats), TARGETS["export2"])
    loads = [name for name in ("mlflow_sqlite", "mlflow_http", "wandb_offline") if name in chosen]
    if not loads:
        return
    export = prepare_load_export(tools, LOAD_QUICK if quick else LOAD_FULL, latency)
    note(f"loads read one export by the peer: {parquet_rows(export / 'data'):,} rows")
    measures = {
        "mlflow_sqlite": measure_mlflow_sqlite,
        "mlflow_http": measure_mlflow_http,
        "wandb_offline": measure_wandb_offline,
    }
    for name in loads:
        report(name, measures[name](tools, export, repeats), TARGETS[name])


if __name__ == "__main__":
    sys.exit(main())

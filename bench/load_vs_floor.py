"""Benchmark 3: loading an export into MLflow (local server), W&B (offline), GoodSeed (local storage), ZenML (local
store) and Comet (offline archives) vs the plain client writing the same points."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    CLIENT_ENV,
    MlflowServer,
    Shape,
    alternate,
    bench_arguments,
    cannot_run,
    emit,
    export_in_child,
    fake_neptune,
    median,
    note,
    parse_bench_args,
    per_second,
    python_child,
    safe_ratio,
    timed,
)

NAME = "load_vs_floor"
TARGET = "<= 1.2"
MLFLOW_BATCH = 1000  # MLflow's metrics-per-request limit
# Float series dominate: params are few, no files/strings, so both sides write (almost) the same thing.
FULL = Shape(runs=16, metrics=20, points=20_000, params=10)
QUICK = Shape(runs=2, metrics=5, points=2_000, params=10)


@dataclass
class RunPoints:
    """One exported run's float points, wide: steps, timestamps (ms) and one value column per metric."""

    run_id: str
    keys: list[str]
    steps: np.ndarray
    timestamps_ms: np.ndarray
    values: np.ndarray  # (metrics, steps)

    @property
    def points(self) -> int:
        return int(self.values.size)


def read_points(data_root: Path, project_id: str, run_id: str) -> RunPoints:
    """The run's float series from its Parquet parts (generated series share their steps)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from neptune_exporter.storage.parquet import read_run_batches

    columns = ["attribute_path", "attribute_type", "step", "timestamp", "float_value"]
    table = pa.Table.from_batches(list(read_run_batches(data_root, project_id, run_id, columns=columns)))
    table = table.filter(pc.equal(table["attribute_type"], "float_series")).sort_by(
        [("attribute_path", "ascending"), ("step", "ascending")]
    )
    keys = sorted(set(table["attribute_path"].to_pylist()))
    values = table["float_value"].to_numpy().reshape(len(keys), -1)
    per_key = values.shape[1]
    steps = pc.cast(table["step"].slice(0, per_key), pa.int64()).to_numpy()
    stamps = table["timestamp"].slice(0, per_key).cast(pa.int64()).to_numpy()
    return RunPoints(run_id, keys, steps, stamps, values)


# ----------------------------------------------------------------------------- floors


def mlflow_floor(url: str, experiment: str, runs: list[RunPoints], workers: int) -> None:
    """MlflowClient.log_batch, 1,000 points a call, `workers` runs at a time."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    experiment_id = client.create_experiment(experiment)

    def write(run: RunPoints) -> None:
        target = client.create_run(experiment_id, run_name=run.run_id).info.run_id
        pending: list[Metric] = []
        for key, values in zip(run.keys, run.values, strict=True):
            for value, stamp, step in zip(values.tolist(), run.timestamps_ms.tolist(), run.steps.tolist(), strict=True):
                pending.append(Metric(key, value, stamp, step))
                if len(pending) == MLFLOW_BATCH:
                    client.log_batch(target, metrics=pending, synchronous=True)
                    pending = []
        if pending:
            client.log_batch(target, metrics=pending, synchronous=True)
        client.set_terminated(target)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(write, runs))


def wandb_floor(folder: Path, runs: list[RunPoints], workers: int) -> None:
    """wandb.log of rows as wide as the run (every metric + `_timestamp`), offline, `workers` runs at a time."""
    import wandb

    settings = wandb.Settings(
        mode="offline",
        root_dir=str(folder),
        console="off",
        save_code=False,
        disable_git=True,
        silent=True,
        x_disable_stats=True,
        x_disable_meta=True,
        x_disable_machine_info=True,
    )

    def write(run: RunPoints) -> None:
        target = wandb.init(project="bench-floor", name=run.run_id, reinit="create_new", settings=settings)
        columns = run.values.T.tolist()
        for step, stamp, row_values in zip(run.steps.tolist(), run.timestamps_ms.tolist(), columns, strict=True):
            row = dict(zip(run.keys, row_values, strict=True))
            row["_timestamp"] = stamp / 1000
            target.log(row, step=step)
        target.finish()

    folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(write, runs))


def goodseed_floor(home: Path, runs: list[RunPoints], workers: int) -> None:
    """goodseed.Run (local storage, no monitoring or git) logging one row of every metric per step, `workers` runs at
    a time."""
    import goodseed

    def write(run: RunPoints) -> None:
        target = goodseed.Run(
            project="bench/floor", run_id=run.run_id, goodseed_home=str(home), storage="local", git_ref=False,
            capture_hardware_metrics=False, capture_stdout=False, capture_stderr=False, capture_traceback=False,
        )  # fmt: skip
        for step, row_values in zip(run.steps.tolist(), run.values.T.tolist(), strict=True):
            target.log_metrics(dict(zip(run.keys, row_values, strict=True)), step=step)
        target.close()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(write, runs))


def zenml_floor(folder: Path, runs: list[RunPoints], workers: int) -> None:
    """ZenML's client: one Model Version per run, each metric a Parquet file (step, timestamp, value) registered
    in the local artifact store and linked to the version; client calls take turns (one SQLite writer)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from zenml import log_metadata
    from zenml.artifacts.utils import register_artifact
    from zenml.model.utils import link_artifact_version_to_model_version

    from neptune_exporter.storage.zenml_store import artifact_root, zenml_client

    with zenml_client(folder) as client:
        model = client.create_model(name="bench-floor").id
        root = artifact_root(client) / "floor"

    def write(run: RunPoints) -> None:
        with zenml_client(folder) as client:
            version = client.create_model_version(model, name=run.run_id)
            log_metadata(metadata={"points": run.points}, model_version_id=version.id)
        for index, (key, values) in enumerate(zip(run.keys, run.values, strict=True)):
            where = root / run.run_id / str(index)
            where.mkdir(parents=True)
            table = pa.table({"step": run.steps, "timestamp": run.timestamps_ms, "value": values})
            pq.write_table(table, where / "part-00000.parquet")
            with zenml_client(folder):
                artifact = register_artifact(str(where), name=f"floor/{key}", version=run.run_id)
                link_artifact_version_to_model_version(artifact, version)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(write, runs))


def comet_floor(folder: Path, runs: list[RunPoints], workers: int) -> None:
    """comet_ml OfflineExperiment.log_metric of every point (the same quiet experiment settings as the loader),
    one archive per run, one run at a time (comet_ml keeps one live experiment per process; `workers` unused)."""
    import comet_ml

    from neptune_exporter.loaders.comet.loader import QUIET_EXPERIMENT

    def write(run: RunPoints) -> None:
        experiment = comet_ml.OfflineExperiment(
            project_name="bench-floor", offline_directory=str(folder), **QUIET_EXPERIMENT
        )
        for key, values in zip(run.keys, run.values, strict=True):
            for value, step in zip(values.tolist(), run.steps.tolist(), strict=True):
                experiment.log_metric(key, value, step=step)
        experiment.end()

    folder.mkdir(parents=True, exist_ok=True)
    for run in runs:
        write(run)


# ----------------------------------------------------------------------------- our loader


def load_with_ours(options) -> int:
    from neptune_exporter.load import run_load
    from neptune_exporter.settings import Settings

    results = run_load(options, Settings.from_env())
    bad = [r for r in results if r.status != "loaded"]
    if bad:
        raise RuntimeError(f"{len(bad)} runs did not load: {bad[0].error}")
    return sum(r.points for r in results)


def side_in_child(
    side: str, target: str, export_root: Path, destination: list[str], workers: int, points: int
) -> float:
    """One side's load in a fresh process (its own wandb-core service, nothing left over from the other side);
    the seconds of the load itself, as the child timed them after its imports and client start-up."""
    args = ["side", "--side", side, "--target", target, "--export", str(export_root), "--workers", str(workers)]
    facts = python_child("bench.load_vs_floor", *args, *destination, env={"WANDB_SILENT": "true"}).json()
    if facts["points"] != points:
        raise RuntimeError(f"the {side} side wrote {facts['points']:,} points, expected {points:,}")
    return float(facts["seconds"])


def both_sides(side: Callable[[str, int], float]) -> dict[str, Callable[[int], float]]:
    """`alternate`'s sides: the floor and ours, each called with the repeat number."""
    return {name: partial(side, name) for name in ("floor", "ours")}


def mlflow_sides(url: str, export_root: Path, workers: int, points: int) -> dict:
    """Each repeat writes into experiments of its own on the same server."""

    def side(name: str, repeat: int) -> float:
        destination = ["--mlflow-url", url, "--experiment", f"{name}-{repeat}"]
        return side_in_child(name, "mlflow", export_root, destination, workers, points)

    return both_sides(side)


# targets writing into a local folder
FOLDER_OPTION = {"wandb": "--wandb-dir", "goodseed": "--goodseed-home", "zenml": "--zenml-dir", "comet": "--comet-dir"}


def folder_sides(target: str, scratch: Path, export_root: Path, workers: int, points: int) -> dict:
    """Each repeat writes into an empty folder (W&B offline runs, GoodSeed's home, a ZenML local store created before
    the timed load, Comet's offline archives), removed afterwards."""

    def side(name: str, repeat: int) -> float:
        folder = scratch / f"{name}-{repeat}"
        try:
            return side_in_child(name, target, export_root, [FOLDER_OPTION[target], str(folder)], workers, points)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    return both_sides(side)


def report(target: str, seconds: dict[str, list[float]], points: int) -> None:
    floor, ours = median(seconds["floor"]), median(seconds["ours"])
    emit(f"{NAME}.{target}_floor_rate", per_second(points, floor), "points/s")
    emit(f"{NAME}.{target}_load_rate", per_second(points, ours), "points/s")
    emit(f"{NAME}.{target}_ratio", safe_ratio(ours, floor), "x load/floor time", TARGET)
    note(
        f"{target} medians: floor {floor:.1f} s, load {ours:.1f} s over {len(seconds['ours'])} repeats "
        f"(floor {', '.join(f'{s:.1f}' for s in seconds['floor'])}; load {', '.join(f'{s:.1f}' for s in seconds['ours'])})"
    )


def prepare_export(shape: Shape, root: Path, workers: int) -> list[RunPoints]:
    """Export the generated workspace once (child process); the points each floor writes."""
    with fake_neptune(shape) as fake:
        export_in_child(fake.api_token, shape.project_id, root, workers).json()
    return exported_points(root)


def exported_points(root: Path) -> list[RunPoints]:
    from neptune_exporter.storage.exported_run import list_stored_runs

    return [read_points(root / "data", run.project_id, run.run_id) for run in list_stored_runs(root / "data")]


# ----------------------------------------------------------------------------- one side, in a child process


def start_client(target: str, side: str, zenml_dir: str | None = None) -> None:
    """Imports and client start-up, outside the measured time on both sides (W&B: its wandb-core service; ZenML:
    its local store created and opened)."""
    if side == "ours":
        importlib.import_module("neptune_exporter.load")
        importlib.import_module(f"neptune_exporter.loaders.{target}")
    if target == "wandb":
        import wandb

        wandb.setup()
    elif target == "goodseed":
        import goodseed  # noqa: F401
    elif target == "zenml":
        from neptune_exporter.storage.zenml_store import artifact_root, zenml_client

        with zenml_client(Path(zenml_dir or ".")) as client:
            artifact_root(client).mkdir(parents=True, exist_ok=True)
    elif target == "comet":
        os.environ.setdefault("COMET_LOGGING_CONSOLE", "ERROR")
        import comet_ml  # noqa: F401
    else:
        import mlflow.tracking  # noqa: F401


def ours_load(args: argparse.Namespace) -> int:
    from neptune_exporter.load import LoadOptions

    export_root = Path(args.export)
    common = dict(
        target=args.target,
        data_path=str(export_root / "data"),
        files_path=str(export_root / "files"),
        workers=args.workers,
    )
    if args.target == "mlflow":
        options = LoadOptions(
            **common,
            mlflow_tracking_uri=args.mlflow_url,
            experiment_name_template=f"{args.experiment}/{{project}}/{{experiment}}",
        )
    elif args.target == "goodseed":
        options = LoadOptions(**common, goodseed_home=args.goodseed_home)
    elif args.target == "zenml":
        options = LoadOptions(**common, zenml_dir=args.zenml_dir)
    elif args.target == "comet":
        options = LoadOptions(**common, comet_dir=args.comet_dir)
    else:
        options = LoadOptions(**common, wandb_dir=args.wandb_dir)
    return load_with_ours(options)


def floor_load(args: argparse.Namespace, runs: list[RunPoints]) -> int:
    if args.target == "mlflow":
        mlflow_floor(args.mlflow_url, args.experiment, runs, args.workers)
    elif args.target == "goodseed":
        goodseed_floor(Path(args.goodseed_home), runs, args.workers)
    elif args.target == "zenml":
        zenml_floor(Path(args.zenml_dir), runs, args.workers)
    elif args.target == "comet":
        comet_floor(Path(args.comet_dir), runs, args.workers)
    else:
        wandb_floor(Path(args.wandb_dir), runs, args.workers)
    return sum(run.points for run in runs)


def side_main(argv: list[str]) -> None:
    """Child entry point: `python -m bench.load_vs_floor side --side floor|ours --target mlflow|wandb|goodseed|zenml|comet ...`;
    prints {"seconds", "points"} of the load alone (the floor's points are read from the export before)."""
    parser = argparse.ArgumentParser(description=side_main.__doc__)
    parser.add_argument("--side", choices=("floor", "ours"), required=True)
    parser.add_argument("--target", choices=("mlflow", "wandb", "goodseed", "zenml", "comet"), required=True)
    parser.add_argument("--export", required=True, help="the export's root (data/, files/)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--wandb-dir", help="W&B: the (empty) folder of the offline runs")
    parser.add_argument("--goodseed-home", help="GoodSeed: the (empty) home folder")
    parser.add_argument("--zenml-dir", help="ZenML: the (empty) folder of the local store")
    parser.add_argument("--comet-dir", help="Comet: the (empty) folder of the offline archives")
    parser.add_argument("--mlflow-url", help="MLflow: the tracking server")
    parser.add_argument("--experiment", help="MLflow: the floor's experiment, the prefix of ours")
    args = parser.parse_args(argv)
    runs = exported_points(Path(args.export)) if args.side == "floor" else []
    start_client(args.target, args.side, args.zenml_dir)
    load = (lambda: floor_load(args, runs)) if args.side == "floor" else (lambda: ours_load(args))
    seconds, points = timed(load)
    print(json.dumps({"seconds": seconds, "points": points}))


def main(argv: list[str] | None = None) -> int:
    parser = bench_arguments(__doc__, "small export, one repeat", quick_repeats=1, latency_ms=None)
    parser.add_argument(
        "--targets", default="mlflow,wandb", help="comma-separated: mlflow, wandb, goodseed, zenml, comet"
    )
    parser.add_argument("--runs", type=int, default=None, help="this many runs of the chosen shape")
    args = parse_bench_args(parser, argv)
    shape = QUICK if args.quick else FULL
    shape = replace(shape, runs=args.runs) if args.runs else shape
    os.environ.update(CLIENT_ENV)
    os.environ.setdefault("WANDB_SILENT", "true")
    note(f"{NAME}: {shape.describe()}; {args.workers} workers; {args.repeats} repeats")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    try:
        with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
            scratch = Path(tmp)
            runs = prepare_export(shape, scratch / "export", args.workers)
            points = sum(r.points for r in runs)
            if points != shape.float_points:
                raise RuntimeError(f"the export holds {points:,} float points, expected {shape.float_points:,}")
            if "mlflow" in targets:
                with MlflowServer(scratch / "mlflow") as server:
                    seconds = alternate(
                        mlflow_sides(server.url, scratch / "export", args.workers, points), args.repeats
                    )
                report("mlflow", seconds, points)
            for target in [t for t in ("wandb", "goodseed", "zenml", "comet") if t in targets]:
                sides = folder_sides(target, scratch / target, scratch / "export", args.workers, points)
                report(target, alternate(sides, args.repeats), points)
    except (ImportError, RuntimeError, OSError) as error:
        return cannot_run(NAME, str(error))
    return 0


if __name__ == "__main__":
    sys.exit(side_main(sys.argv[2:]) if sys.argv[1:2] == ["side"] else main())

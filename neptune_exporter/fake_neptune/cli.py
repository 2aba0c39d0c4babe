"""`fake-neptune` CLI: serve a dataset (JSON file, generated or awkward) with faults, or write a generated dataset."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import typer

from neptune_exporter.fake_neptune.datasets import (
    DatasetError,
    awkward_workspace,
    generate_workspace,
    load_dataset,
    save_dataset,
)
from neptune_exporter.fake_neptune.faults import FaultConfig
from neptune_exporter.fake_neptune.server import FakeNeptune
from neptune_exporter.fake_neptune.store import Workspace

app = typer.Typer(
    help="A local Neptune server that the real neptune-query and neptune clients read from.", no_args_is_help=True
)


def _generated(
    runs: int,
    experiments: int,
    params: int,
    metrics: int,
    points: int,
    string_series: int,
    histograms: int,
    files: int,
    file_size: int,
    seed: int,
    project: str,
) -> Workspace:
    return generate_workspace(
        runs=runs,
        experiments=experiments,
        params=params,
        metrics=metrics,
        points=points,
        string_series=string_series,
        histograms=histograms,
        files=files,
        file_size=file_size,
        seed=seed,
        project=project,
    )


@app.command()
def serve(
    dataset: Path | None = typer.Option(
        None, "--dataset", exists=True, dir_okay=False, help="JSON dataset file to serve."
    ),
    generate: bool = typer.Option(False, "--generate", help="Serve a generated dataset (see the size options)."),
    awkward: bool = typer.Option(False, "--awkward", help="Serve the awkward test workspace (every type)."),
    runs: int = typer.Option(10, help="Generated: runs."),
    experiments: int = typer.Option(2, help="Generated: experiments (runs share them round-robin)."),
    params: int = typer.Option(10, help="Generated: parameters per run."),
    metrics: int = typer.Option(5, help="Generated: float series per run."),
    points: int = typer.Option(1000, help="Generated: points per float series (lazy: any size is free)."),
    string_series: int = typer.Option(1, "--string-series", help="Generated: string series per run."),
    histograms: int = typer.Option(1, help="Generated: histogram series per run."),
    files: int = typer.Option(1, help="Generated: file attributes per run."),
    file_size: int = typer.Option(1024, "--file-size", help="Generated: bytes per file (lazy)."),
    seed: int = typer.Option(0, help="Generated: seed."),
    project: str = typer.Option("sandbox", help="Generated: project name (in workspace 'workspace')."),
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(0, help="Port (0 = a free one)."),
    latency_ms: float = typer.Option(0.0, "--latency-ms", help="Fixed latency per request."),
    latency_jitter_ms: float = typer.Option(0.0, "--latency-jitter-ms", help="Extra random latency up to this."),
    bandwidth: int = typer.Option(0, "--bandwidth-bytes-per-s", help="Cap response bandwidth (0 = none)."),
    rate_limit_share: float = typer.Option(0.0, "--rate-limit-share", help="Share of requests answered 429."),
    retry_after_s: int = typer.Option(1, "--retry-after-s", help="Retry-After of injected 429s."),
    error_share: float = typer.Option(0.0, "--error-share", help="Share of requests answered 500/503."),
    reset_share: float = typer.Option(0.0, "--reset-share", help="Share of responses cut mid-body."),
    token_ttl_s: float = typer.Option(3600.0, "--token-ttl-s", help="Lifetime of access tokens."),
    fault_seed: int | None = typer.Option(None, "--fault-seed", help="Seed of the fault dice."),
    api_key: str | None = typer.Option(
        None, "--api-key", help="Fixed key inside the API token (stable token across restarts)."
    ),
    ready_file: Path | None = typer.Option(
        None, "--ready-file", help="Write {base_url, api_token, project} JSON here once serving."
    ),
) -> None:
    """Serve until interrupted; prints the base URL, an API token and the environment to export."""
    chosen = [
        name
        for name, on in (("--dataset", dataset is not None), ("--generate", generate), ("--awkward", awkward))
        if on
    ]
    if len(chosen) != 1:
        raise typer.BadParameter("give exactly one of --dataset FILE, --generate or --awkward")
    if dataset is not None:
        workspace = _load_or_exit(dataset)
    elif awkward:
        workspace = awkward_workspace()
    else:
        workspace = _generated(
            runs, experiments, params, metrics, points, string_series, histograms, files, file_size, seed, project
        )
    faults = FaultConfig(
        latency_ms=latency_ms,
        latency_jitter_ms=latency_jitter_ms,
        bandwidth_bytes_per_s=bandwidth,
        rate_limit_share=rate_limit_share,
        retry_after_s=retry_after_s,
        error_share=error_share,
        reset_share=reset_share,
        token_ttl_s=token_ttl_s,
        seed=fault_seed,
    )
    fake = FakeNeptune(workspace, port=port, faults=faults, host=host, api_key=api_key)
    _announce(fake, ready_file)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        fake.serve_forever()
    except KeyboardInterrupt:
        typer.echo("fake Neptune stopped")


def _load_or_exit(path: Path) -> Workspace:
    try:
        return load_dataset(path)
    except DatasetError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _announce(fake: FakeNeptune, ready_file: Path | None) -> None:
    env = fake.env()
    typer.echo(f"Fake Neptune serving {', '.join(fake.workspace.projects)} at {fake.base_url}")
    typer.echo(f"API token: {fake.api_token}")
    typer.echo("export " + " ".join(f"{k}={v}" for k, v in env.items()))
    sys.stdout.flush()
    if ready_file is not None:
        info = {
            "base_url": fake.base_url,
            "api_token": fake.api_token,
            "project": env["NEPTUNE_PROJECT"],
            "projects": list(fake.workspace.projects),
        }
        tmp = ready_file.with_suffix(ready_file.suffix + ".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(ready_file)


@app.command()
def generate(
    out: Path = typer.Option(..., "--out", help="JSON dataset file to write."),
    runs: int = typer.Option(10),
    experiments: int = typer.Option(2),
    params: int = typer.Option(10),
    metrics: int = typer.Option(5),
    points: int = typer.Option(1000),
    string_series: int = typer.Option(1, "--string-series"),
    histograms: int = typer.Option(1),
    files: int = typer.Option(1),
    file_size: int = typer.Option(1024, "--file-size"),
    seed: int = typer.Option(0),
    project: str = typer.Option("sandbox"),
) -> None:
    """Write a generated dataset as JSON (float series and files stay lazy specs: the file stays small)."""
    workspace = _generated(
        runs, experiments, params, metrics, points, string_series, histograms, files, file_size, seed, project
    )
    save_dataset(workspace, out)
    typer.echo(f"wrote {out} ({runs} runs, {runs * metrics * points:,} float points)")


if __name__ == "__main__":
    app()

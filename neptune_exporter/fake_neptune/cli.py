"""`fake-neptune` CLI: serve a dataset (JSON file, generated or awkward) with faults, or write a generated dataset."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from neptune_exporter.fake_neptune.datasets import (
    DatasetError,
    awkward_workspace,
    generate_workspace,
    load_dataset,
    save_dataset,
    set_archived_paths,
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
    dataset: Annotated[
        Path | None, typer.Option("--dataset", exists=True, dir_okay=False, help="JSON dataset file to serve.")
    ] = None,
    generate: Annotated[
        bool, typer.Option("--generate", help="Serve a generated dataset (see the size options).")
    ] = False,
    awkward: Annotated[bool, typer.Option("--awkward", help="Serve the awkward test workspace (every type).")] = False,
    runs: Annotated[int, typer.Option(help="Generated: runs.")] = 10,
    experiments: Annotated[int, typer.Option(help="Generated: experiments (runs share them round-robin).")] = 2,
    params: Annotated[int, typer.Option(help="Generated: parameters per run.")] = 10,
    metrics: Annotated[int, typer.Option(help="Generated: float series per run.")] = 5,
    points: Annotated[int, typer.Option(help="Generated: points per float series (lazy: any size is free).")] = 1000,
    string_series: Annotated[int, typer.Option("--string-series", help="Generated: string series per run.")] = 1,
    histograms: Annotated[int, typer.Option(help="Generated: histogram series per run.")] = 1,
    files: Annotated[int, typer.Option(help="Generated: file attributes per run.")] = 1,
    file_size: Annotated[int, typer.Option("--file-size", help="Generated: bytes per file (lazy).")] = 1024,
    seed: Annotated[int, typer.Option(help="Generated: seed.")] = 0,
    project: Annotated[str, typer.Option(help="Generated: project name (in workspace 'workspace').")] = "sandbox",
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 = a free one).")] = 0,
    latency_ms: Annotated[float, typer.Option("--latency-ms", help="Fixed latency per request.")] = 0.0,
    latency_jitter_ms: Annotated[
        float, typer.Option("--latency-jitter-ms", help="Extra random latency up to this.")
    ] = 0.0,
    bandwidth: Annotated[int, typer.Option("--bandwidth-bytes-per-s", help="Cap response bandwidth (0 = none).")] = 0,
    rate_limit_share: Annotated[
        float, typer.Option("--rate-limit-share", help="Share of requests answered 429.")
    ] = 0.0,
    retry_after_s: Annotated[int, typer.Option("--retry-after-s", help="Retry-After of injected 429s.")] = 1,
    error_share: Annotated[float, typer.Option("--error-share", help="Share of requests answered 500/503.")] = 0.0,
    reset_share: Annotated[float, typer.Option("--reset-share", help="Share of responses cut mid-body.")] = 0.0,
    token_ttl_s: Annotated[float, typer.Option("--token-ttl-s", help="Lifetime of access tokens.")] = 3600.0,
    fault_seed: Annotated[int | None, typer.Option("--fault-seed", help="Seed of the fault dice.")] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="Fixed key inside the API token (stable token across restarts).")
    ] = None,
    ready_file: Annotated[
        Path | None, typer.Option("--ready-file", help="Write {base_url, api_token, project} JSON here once serving.")
    ] = None,
    archived_paths: Annotated[
        str | None,
        typer.Option("--archived-paths", help="Archive flag(s) 3.x reports: archived, trashed or both (default both)."),
    ] = None,
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
    if archived_paths is not None:
        try:
            set_archived_paths(workspace, archived_paths)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
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
    out: Annotated[Path, typer.Option("--out", help="JSON dataset file to write.")],
    runs: Annotated[int, typer.Option()] = 10,
    experiments: Annotated[int, typer.Option()] = 2,
    params: Annotated[int, typer.Option()] = 10,
    metrics: Annotated[int, typer.Option()] = 5,
    points: Annotated[int, typer.Option()] = 1000,
    string_series: Annotated[int, typer.Option("--string-series")] = 1,
    histograms: Annotated[int, typer.Option()] = 1,
    files: Annotated[int, typer.Option()] = 1,
    file_size: Annotated[int, typer.Option("--file-size")] = 1024,
    seed: Annotated[int, typer.Option()] = 0,
    project: Annotated[str, typer.Option()] = "sandbox",
) -> None:
    """Write a generated dataset as JSON (float series and files stay lazy specs: the file stays small)."""
    workspace = _generated(
        runs, experiments, params, metrics, points, string_series, histograms, files, file_size, seed, project
    )
    save_dataset(workspace, out)
    typer.echo(f"wrote {out} ({runs} runs, {runs * metrics * points:,} float points)")


if __name__ == "__main__":
    app()

"""`fake-wandb` CLI: serve the local W&B stand-in (for demos and `wandb sync` tries) and report what arrived."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from neptune_exporter.fake_wandb.server import FakeWandb

app = typer.Typer(
    help="A local stand-in for the W&B endpoints `wandb sync` and online `wandb.init` use.", no_args_is_help=True
)


@app.callback()
def main() -> None:
    """Local W&B stand-in."""


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: a free one).")] = 0,
    record: Annotated[
        Path | None, typer.Option("--record", help="Write what arrived (runs, rows, artifacts) here as JSON on exit.")
    ] = None,
) -> None:
    """Serve until Ctrl-C / SIGTERM; prints the environment that points wandb at it."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeWandb(port=port) as fake:
        for name, value in fake.env().items():
            typer.echo(f"export {name}={value}")
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        summary = fake.summary()
    if record:
        record.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    typer.echo(
        f"{len(summary['runs'])} run(s), {sum(r['rows'] for r in summary['runs'])} history row(s), {len(summary['artifacts'])} artifact(s) received"
    )

"""`neptune-exporter serve`, `demo`, and the fake servers' own CLIs (`fake-neptune`, `fake-wandb`), loaded only when run."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from neptune_exporter.cli.app import app
from neptune_exporter.cli.export_command import run_export_command
from neptune_exporter.cli.load_commands import run_load_summary


@app.command()
def serve(
    home: Annotated[Path, typer.Option(help="PREFECT_HOME of the local server (SQLite database there).")] = Path(
        ".prefect-serve"
    ),
    port: Annotated[int, typer.Option(help="Port of the Prefect server and UI on 127.0.0.1.")] = 4200,
) -> None:
    """Start `prefect server start` (SQLite) and serve the deployments (export/neptune3, export/neptune2, ...)."""
    from deployments.server import PrefectServer, serve_deployments, stop_process

    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # `kill` stops the children too, like Ctrl-C
    server = PrefectServer(home, port)
    typer.echo(f"starting the Prefect server (PREFECT_HOME={home}); log: {server.log_path}")
    with server:
        typer.echo(f"Prefect UI: http://127.0.0.1:{server.port}  ·  export PREFECT_API_URL={server.api_url}")
        runner = serve_deployments(server.client_env())
        try:
            runner.wait()
        except KeyboardInterrupt:
            typer.echo("stopping")
        finally:
            stop_process(runner)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# The fake servers' own CLIs run as sub-commands, imported only when one of them runs: a CLI start never loads them.
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def _run_sub_app(sub_app: typer.Typer, ctx: typer.Context) -> None:
    """Run a sub-command's Typer app with the arguments after its name (`--help` included)."""
    typer.main.get_group(sub_app).main(args=list(ctx.args), prog_name=ctx.command_path)


@app.command("fake-neptune", context_settings=PASS_THROUGH, add_help_option=False)
def fake_neptune(ctx: typer.Context) -> None:
    """A local fake Neptune server (tests, demo, benchmarks); `fake-neptune --help` lists its commands."""
    from neptune_exporter.fake_neptune.cli import app as fake_app

    _run_sub_app(fake_app, ctx)


@app.command("fake-wandb", context_settings=PASS_THROUGH, add_help_option=False)
def fake_wandb(ctx: typer.Context) -> None:
    """A local stand-in for the W&B endpoints (try `wandb sync` offline runs); `fake-wandb --help` lists its commands."""
    from neptune_exporter.fake_wandb.cli import app as fake_wandb_app

    _run_sub_app(fake_wandb_app, ctx)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder of the demo's exports.")] = Path("./demo"),
    runs: Annotated[int, typer.Option(min=1, help="Runs in the generated sample project.")] = 8,
    points: Annotated[int, typer.Option(min=1, help="Points per metric.")] = 500,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh", help="Empty the demo's sub-folders first (default: reuse them; unchanged runs are skipped)."
        ),
    ] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """No credentials needed: fake Neptune with a sample project → export → MLflow (SQLite) + W&B (offline) → validation report."""
    from neptune_exporter.demo import DemoContext, run_demo

    ctx = DemoContext(
        out=out,
        runs=runs,
        points=points,
        fresh=fresh,
        no_progress=no_progress,
        export_command=run_export_command,
        load_command=run_load_summary,
    )
    raise typer.Exit(run_demo(ctx))

"""The `demo` command as a list of steps (CLI layer): fake Neptune server → export → summary; add steps to extend."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import typer

DEMO_WORKSPACE = "workspace"
DEMO_PROJECT = "demo"


@dataclass
class DemoContext:
    """What the steps share: options, the running fake server, paths, and the exit status so far."""

    out: Path = Path("./demo")
    runs: int = 8
    points: int = 500
    no_progress: bool = False
    stack: ExitStack = field(default_factory=ExitStack)
    project: str = f"{DEMO_WORKSPACE}/{DEMO_PROJECT}"
    api_token: str | None = None
    exit_code: int = 0

    @property
    def data_path(self) -> Path:
        return self.out / "data"

    @property
    def files_path(self) -> Path:
        return self.out / "files"


def set_env(ctx: DemoContext, values: dict[str, str]) -> None:
    """Set environment variables until the demo ends (then restore them)."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)

    def restore() -> None:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    ctx.stack.callback(restore)


def start_fake_neptune(ctx: DemoContext) -> None:
    """A local fake Neptune 3.x server on 127.0.0.1 serving a generated sample project."""
    from neptune_exporter.fake_neptune import FakeNeptune
    from neptune_exporter.fake_neptune.datasets import generate_workspace

    workspace = generate_workspace(runs=ctx.runs, experiments=2, params=10, metrics=5, points=ctx.points,
                                   workspace=DEMO_WORKSPACE, project=DEMO_PROJECT)
    fake = ctx.stack.enter_context(FakeNeptune(workspace))
    set_env(ctx, fake.env(ctx.project))
    ctx.api_token = fake.api_token
    typer.echo(f"fake Neptune at {fake.base_url} serving {ctx.project} ({ctx.runs} runs)")


def export_sample(ctx: DemoContext) -> None:
    """Export the sample project with the `export` flow, exactly as `neptune-exporter export` does."""
    from neptune_exporter.cli import run_export_command
    from neptune_exporter.export import ExportOptions

    options = ExportOptions(source="neptune3", projects=(ctx.project,), data_path=str(ctx.data_path),
                            files_path=str(ctx.files_path), api_token=ctx.api_token)
    ctx.exit_code = max(ctx.exit_code, run_export_command(options, no_progress=ctx.no_progress))


def show_summary(ctx: DemoContext) -> None:
    """What is on disk now, and where."""
    from rich.console import Console

    from neptune_exporter.storage.summary import render_summary, summarize

    Console(width=None if sys.stdout.isatty() else 160).print(render_summary(summarize(ctx.data_path)))
    typer.echo(f"Parquet parts and manifests: {ctx.data_path.resolve()}")
    typer.echo(f"downloaded files:            {ctx.files_path.resolve()}")
    typer.echo(f"again any time: neptune-exporter summary -d {ctx.data_path}")


def load_into_mlflow(ctx: DemoContext) -> None:
    """Load the export into a local MLflow (SQLite under the demo folder), validate it, say how to open the UI."""
    from neptune_exporter.cli import run_load_command
    from neptune_exporter.load import LoadOptions

    store = (ctx.out / "mlflow").resolve()
    store.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    options = LoadOptions(target="mlflow", data_path=str(ctx.data_path), files_path=str(ctx.files_path),
                          mlflow_tracking_uri=uri, report_path=str(ctx.out / "reports"))
    ctx.exit_code = max(ctx.exit_code, run_load_command(options, no_progress=ctx.no_progress))
    typer.echo(f"open the MLflow UI: mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"
               "  → http://127.0.0.1:5000")


DemoStep = Callable[[DemoContext], None]

# Steps run in order; later issues append load (MLflow, W&B) and validation steps here.
DEMO_STEPS: list[tuple[str, DemoStep]] = [
    ("start a fake Neptune server with a sample project", start_fake_neptune),
    ("export it to Parquet + files", export_sample),
    ("summary", show_summary),
    ("load into a local MLflow and validate it", load_into_mlflow),
]


def run_demo(ctx: DemoContext, steps: list[tuple[str, DemoStep]] | None = None) -> int:
    """Run the steps in order (resources released at the end); the exit status."""
    steps = steps or DEMO_STEPS
    with ctx.stack:
        for number, (title, step) in enumerate(steps, start=1):
            typer.secho(f"[{number}/{len(steps)}] {title}", bold=True)
            step(ctx)
    return ctx.exit_code

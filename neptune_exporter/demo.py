"""The `demo` command as a list of steps (CLI layer): fake Neptune → export → MLflow + offline W&B → validation report.

The CLI passes its own export and load commands in (`DemoContext.export_command` / `load_command`): the demo runs
exactly what users run, and never imports the CLI. It is the one product module that starts the fake Neptune
server, imported lazily inside `start_fake_neptune` (import-linter allows exactly that edge)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

DEMO_WORKSPACE = "workspace"
DEMO_PROJECT = "demo"


def _command_not_given(*_args: object, **_kwargs: object) -> Any:
    raise RuntimeError("the demo's export and load steps run the CLI's commands: run them via `neptune-exporter demo`")


@dataclass
class DemoContext:
    """What the steps share: options, the running fake server, paths, and the exit status so far."""

    out: Path = Path("./demo")
    runs: int = 8
    points: int = 500
    no_progress: bool = False
    fresh: bool = False
    stack: ExitStack = field(default_factory=ExitStack)
    project: str = f"{DEMO_WORKSPACE}/{DEMO_PROJECT}"
    api_token: str | None = None
    exit_code: int = 0
    validations: dict[str, dict] = field(default_factory=dict)  # target → the load flow's validation summary
    next_steps: list[str] = field(default_factory=list)
    # The CLI's commands, given by `neptune-exporter demo`: export(options, no_progress=) → exit status;
    # load(options, no_progress=) → (exit status, summary with the validation figures).
    export_command: Callable[..., int] = _command_not_given
    load_command: Callable[..., tuple[int, dict]] = _command_not_given

    @property
    def data_path(self) -> Path:
        return self.out / "data"

    @property
    def files_path(self) -> Path:
        return self.out / "files"

    @property
    def reports_path(self) -> Path:
        return self.out / "reports"

    @property
    def wandb_dir(self) -> Path:
        return (self.out / "wandb").resolve()


# Sub-folders a demo writes; `--fresh` removes exactly these (never the rest of --out).
DEMO_FOLDERS = ("data", "files", "mlflow", "wandb", "reports")


def set_env(ctx: DemoContext, values: Mapping[str, str | None]) -> None:
    """Set (None: unset) environment variables until the demo ends (then restore them)."""
    previous = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

    def restore() -> None:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    ctx.stack.callback(restore)


def prepare_folder(ctx: DemoContext) -> None:
    """A rerun reuses the folder (export skips, loads skip, validation runs again); --fresh, or another sample size, empties it."""
    recorded = ctx.out / "demo.json"
    sample = {"runs": ctx.runs, "points": ctx.points}
    previous = json.loads(recorded.read_text(encoding="utf-8")) if recorded.is_file() else None
    if ctx.fresh or (previous is not None and previous != sample):
        for name in DEMO_FOLDERS:
            shutil.rmtree(ctx.out / name, ignore_errors=True)
    reused = ctx.data_path.is_dir()
    ctx.out.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps(sample), encoding="utf-8")
    typer.echo(
        f"demo folder: {ctx.out.resolve()}"
        + (" (reused: unchanged runs are skipped; --fresh starts over)" if reused else "")
    )


def start_fake_neptune(ctx: DemoContext) -> None:
    """A local fake Neptune 3.x server on 127.0.0.1 serving a generated sample project."""
    from neptune_exporter.fake_neptune import FakeNeptune
    from neptune_exporter.fake_neptune.datasets import generate_workspace

    workspace = generate_workspace(
        runs=ctx.runs,
        experiments=2,
        params=10,
        metrics=5,
        points=ctx.points,
        workspace=DEMO_WORKSPACE,
        project=DEMO_PROJECT,
    )
    fake = ctx.stack.enter_context(FakeNeptune(workspace))
    set_env(ctx, fake.env(ctx.project))
    ctx.api_token = fake.api_token
    typer.echo(f"fake Neptune at {fake.base_url} serving {ctx.project} ({ctx.runs} runs)")


def export_sample(ctx: DemoContext) -> None:
    """Export the sample project with the `export` flow, exactly as `neptune-exporter export` does."""
    from neptune_exporter.selection import ExportOptions

    options = ExportOptions(
        source="neptune3",
        projects=(ctx.project,),
        data_path=str(ctx.data_path),
        files_path=str(ctx.files_path),
        api_token=ctx.api_token,
    )
    ctx.exit_code = max(ctx.exit_code, ctx.export_command(options, no_progress=ctx.no_progress))


def show_summary(ctx: DemoContext) -> None:
    """What is on disk now, and where."""
    from rich.console import Console

    from neptune_exporter.storage.summary import render_summary, summarize

    Console(width=None if sys.stdout.isatty() else 160).print(render_summary(summarize(ctx.data_path)))
    typer.echo(f"Parquet parts and manifests: {ctx.data_path.resolve()}")
    typer.echo(f"downloaded files:            {ctx.files_path.resolve()}")
    typer.echo(f"again any time: neptune-exporter summary -d {ctx.data_path}")


def load_into_mlflow(ctx: DemoContext) -> None:
    """Load the export into a local MLflow (SQLite under the demo folder) and validate it."""
    from neptune_exporter.load import LoadOptions

    store = (ctx.out / "mlflow").resolve()
    store.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    load_target(
        ctx,
        LoadOptions(
            target="mlflow",
            data_path=str(ctx.data_path),
            files_path=str(ctx.files_path),
            mlflow_tracking_uri=uri,
            report_path=str(ctx.reports_path),
        ),
    )
    ctx.next_steps.append(
        f"open the MLflow UI: mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000  → http://127.0.0.1:5000"
    )


def load_into_wandb_offline(ctx: DemoContext) -> None:
    """Load the export into W&B OFFLINE (runs and artifact staging under the demo folder, no network) and validate it."""
    from neptune_exporter.load import LoadOptions
    from neptune_exporter.loaders.wandb import WandbTarget

    # offline whatever the user's environment says: no API key, no user-level W&B settings
    set_env(
        ctx, {"WANDB_MODE": "offline", "WANDB_API_KEY": None, "WANDB_CONFIG_DIR": str(ctx.wandb_dir / "wandb-config")}
    )
    load_target(
        ctx,
        LoadOptions(
            target="wandb",
            data_path=str(ctx.data_path),
            files_path=str(ctx.files_path),
            wandb_dir=str(ctx.wandb_dir),
            report_path=str(ctx.reports_path),
        ),
    )
    sync = WandbTarget.from_env(ctx.wandb_dir, None, None).sync_command()
    ctx.next_steps.append(f"upload the W&B runs (with WANDB_API_KEY, and WANDB_BASE_URL for W&B Server): {sync}")


def load_target(ctx: DemoContext, options) -> None:
    """`neptune-exporter load` for one target (load, then validate); its validation summary is kept for the report."""
    code, summary = ctx.load_command(options, no_progress=ctx.no_progress)
    ctx.exit_code = max(ctx.exit_code, code)
    if "validation" in summary:
        ctx.validations[options.target] = summary["validation"]


def report_validation(ctx: DemoContext) -> None:
    """Both targets' verdicts with their JSON + markdown reports; exit 1 unless every target validated clean."""
    for target in ("mlflow", "wandb"):
        figures = ctx.validations.get(target)
        if figures is None:
            typer.secho(f"{target}: not validated", fg="red")
            ctx.exit_code = max(ctx.exit_code, 1)
            continue
        verdict = "no differences" if not figures["differences"] else f"{figures['differences']} difference(s)"
        typer.secho(
            f"{target}: {figures['runs_checked']} run(s) checked, {verdict}",
            fg="green" if not figures["differences"] else "red",
        )
        typer.echo(f"  markdown: {figures['report_markdown']}\n  JSON:     {figures['report_json']}")
        if figures["runs_with_differences"]:
            ctx.exit_code = max(ctx.exit_code, 1)
    for line in ctx.next_steps:
        typer.echo(line)


DemoStep = Callable[[DemoContext], None]

# Steps run in order; append a step here to extend the demo.
DEMO_STEPS: list[tuple[str, DemoStep]] = [
    ("prepare the demo folder", prepare_folder),
    ("start a fake Neptune server with a sample project", start_fake_neptune),
    ("export it to Parquet + files", export_sample),
    ("summary", show_summary),
    ("load into a local MLflow (SQLite) and validate it", load_into_mlflow),
    ("load into W&B offline and validate it", load_into_wandb_offline),
    ("validation report and next steps", report_validation),
]


def run_demo(ctx: DemoContext, steps: list[tuple[str, DemoStep]] | None = None) -> int:
    """Run the steps in order (resources released at the end); the exit status."""
    steps = steps or DEMO_STEPS
    started = time.monotonic()
    with ctx.stack:
        for number, (title, step) in enumerate(steps, start=1):
            typer.secho(f"[{number}/{len(steps)}] {title}  ({time.monotonic() - started:.0f} s)", bold=True)
            step(ctx)
    typer.echo(f"demo finished in {time.monotonic() - started:.0f} s, exit status {ctx.exit_code}")
    return ctx.exit_code

"""`neptune-exporter summary`: what an export holds on disk (ours or the peer tool's)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from neptune_exporter.cli.app import app, fail
from neptune_exporter.cli.options import DataPathOpt, FilesPathOpt, ProjectOpt


@app.command()
def summary(
    data_path: DataPathOpt = Path("./exports/data"),
    files_path: FilesPathOpt = Path("./exports/files"),
    project: ProjectOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """What is on disk: runs, attributes by type, points, files, bytes, failures (also peer-tool exports)."""
    import json

    from rich.console import Console

    from neptune_exporter.storage.summary import add_files_on_disk, render_summary, summarize

    if not data_path.is_dir():
        raise fail(f"--data-path {data_path} does not exist — fix: pass the folder an export wrote (-d/--data-path)")
    figures = add_files_on_disk(summarize(data_path, projects=project or None), files_path)
    if as_json:
        typer.echo(json.dumps(figures, indent=2, default=str))
    else:
        Console(width=None if sys.stdout.isatty() else 160).print(render_summary(figures))

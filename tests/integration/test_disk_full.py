"""A disk that fills up mid-export (a 2 MiB tmpfs): each run that cannot be written fails with one error naming the
folder, its free space and the fix; nothing half-written stays, no traceback is logged, complete runs are kept."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from neptune_exporter.export import ExportOptions
from neptune_exporter.export_runner import run_export
from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.fake_neptune.datasets import generate_workspace
from neptune_exporter.settings import Settings
from neptune_exporter.storage.manifest import manifest_path, read_manifest

pytestmark = pytest.mark.integration

PROJECT = "workspace/sandbox"


@contextmanager
def small_disk(folder: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted on `folder` for the block (root only: skipped, saying so, where mounting is refused)."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"a small disk is needed and mounting a tmpfs is not allowed here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize(
    ("points", "file_size", "what"),
    [(20_000, 1_000, "parts fill the disk"), (100, 700_000, "files fill the disk")],
)
def test_a_full_disk_fails_each_run_with_the_folder_its_free_space_and_the_fix(
    tmp_path, caplog, points, file_size, what
):
    with FakeNeptune(generate_workspace(runs=5, points=points, files=1, file_size=file_size)) as fake:
        with small_disk(tmp_path / "disk") as disk:
            options = ExportOptions(
                projects=(PROJECT,),
                data_path=str(disk / "data"),
                files_path=str(disk / "files"),
                api_token=fake.api_token,
                workers=2,
            )
            with caplog.at_level(logging.WARNING):
                results = run_export(options, Settings.from_env())
            left_behind = sorted(str(path) for path in disk.rglob("*.tmp"))
            manifests = {r.run_id: read_manifest(manifest_path(disk / "data", PROJECT, r.run_id)) for r in results}

    complete = [r for r in results if r.status == "complete"]
    failed = [r for r in results if r.status == "failed"]
    assert complete and failed and len(complete) + len(failed) == 5, what
    for result in failed:
        (error,) = result.errors
        assert error["error_type"] == "DiskFullError", (what, error)
        assert f"--data-path {disk / 'data'} and --files-path {disk / 'files'} ran out of space (" in error["message"]
        assert " MiB free now)" in error["message"]
        assert error["remedy"].startswith("free space on that disk, or pass --data-path / --files-path a folder")
        assert manifests[result.run_id] is None or not manifests[result.run_id].is_complete()
    assert all(manifests[r.run_id].is_complete() for r in complete)
    assert left_behind == [], what
    assert not [record for record in caplog.records if record.exc_info], what  # one error per run, no traceback
    assert not [record for record in caplog.records if "attempt" in record.getMessage()], what  # nothing retried

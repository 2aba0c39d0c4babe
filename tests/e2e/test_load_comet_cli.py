"""`neptune-exporter load --target comet` end to end: the generated workspace exported, loaded into offline archives
under a relative --comet-dir (made absolute), validated, the `comet upload` line printed. (A second load adding
nothing is proven on the library in tests/integration/test_load_comet.py: a CLI run here costs ~40 s.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from neptune_exporter.export import ExportOptions
from neptune_exporter.export_runner import run_export
from neptune_exporter.loaders.comet import experiment_key
from neptune_exporter.settings import Settings
from tests.e2e.conftest import run_cli
from tests.e2e.test_export_cli import PROJECT, env, fake  # noqa: F401

pytestmark = pytest.mark.e2e


def test_load_into_comet_validates_and_prints_the_upload_line(env, fake, tmp_path):  # noqa: F811
    options = ExportOptions(
        projects=(PROJECT,), data_path=str(tmp_path / "out/data"), files_path=str(tmp_path / "out/files"),
        api_token=fake.api_token,
    )  # fmt: skip
    exported = run_export(options, Settings.from_env())
    assert {r.status for r in exported} == {"complete"} and len(exported) == 10
    args = [
        "load",
        "--target",
        "comet",
        "--comet-dir",
        "archives",
        "-d",
        "out/data",
        "-f",
        "out/files",
        "--no-progress",
    ]
    first = run_cli(args, env, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "runs: 10 loaded, 0 already complete, 0 failed → comet" in first.stdout, first.stdout
    assert "validation against comet: 10 run(s) checked, no differences" in first.stdout, first.stdout
    assert f"  comet upload {tmp_path / 'archives'}/*.zip" in first.stdout.splitlines(), first.stdout
    archives = sorted(p.name for p in (tmp_path / "archives").glob("*.zip"))
    assert archives == sorted(f"{experiment_key(PROJECT, r.run_id)}.zip" for r in exported)
    assert not list(Path(tmp_path / "archives" / ".staging").iterdir())

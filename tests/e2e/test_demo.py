"""`neptune-exporter demo` as a subprocess in a temp folder: export → MLflow + offline W&B → clean validation, twice."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.conftest import cli_env, run_cli

pytestmark = pytest.mark.e2e

RUNS = 3
# Online W&B settings that must be ignored: the demo writes offline runs and never opens a connection.
HOSTILE_WANDB = {"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_MODE": "online"}


def report(out: Path, target: str) -> dict:
    return json.loads((out / "reports" / f"validation_{target}.json").read_text(encoding="utf-8"))


def assert_clean_validation(out: Path, stdout: str) -> None:
    for target in ("mlflow", "wandb"):
        figures = report(out, target)
        assert (figures["target"], figures["runs_checked"], figures["differences"]) == (target, RUNS, 0), figures
        assert all(run["ok"] and run["checked"]["points"] > 0 for run in figures["runs"]), figures["runs"]
        assert f"{target}: {RUNS} run(s) checked, no differences" in stdout
        assert f"markdown: {out / 'reports' / f'validation_{target}.md'}" in stdout
        assert f"JSON:     {out / 'reports' / f'validation_{target}.json'}" in stdout


def test_demo_loads_both_targets_with_zero_differences_and_a_rerun_skips_everything(tmp_path):
    env = cli_env(HOSTILE_WANDB, tmp_path / "prefect-home")
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--runs", str(RUNS), "--points", "50", "--no-progress"]

    first = run_cli(args, env, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"runs: {RUNS} exported, 0 unchanged, 0 failed" in first.stdout
    assert f"runs: {RUNS} loaded, 0 already complete, 0 failed → mlflow" in first.stdout
    assert f"runs: {RUNS} loaded, 0 already complete, 0 failed → wandb" in first.stdout
    assert_clean_validation(out, first.stdout)
    wandb_root = out / "wandb"
    assert len(list((wandb_root / "wandb").glob("offline-run-*/run-*.wandb"))) == RUNS
    sync = f"WANDB_DATA_DIR={wandb_root / 'wandb-data'} wandb sync --yes {wandb_root / 'wandb'}/offline-run-*"
    assert sync in first.stdout
    uri = f"sqlite:///{out / 'mlflow' / 'mlflow.db'}"
    assert f"mlflow ui --backend-store-uri {uri}" in first.stdout and (out / "mlflow" / "mlflow.db").is_file()

    second = run_cli(args, env, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "(reused:" in second.stdout
    assert f"runs: 0 exported, {RUNS} unchanged, 0 failed" in second.stdout
    for target in ("mlflow", "wandb"):
        assert f"runs: 0 loaded, {RUNS} already complete, 0 failed → {target}" in second.stdout
    assert_clean_validation(out, second.stdout)
    assert len(list((wandb_root / "wandb").glob("offline-run-*"))) == RUNS
    assert re.search(r"demo finished in \d+ s, exit status 0", second.stdout)

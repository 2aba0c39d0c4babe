"""Validation is independent of the loaders: a mapping bug injected into a loader only (steps scaled 10× too
much, one key renamed differently, a string param truncated) loads wrong data into the real target (a real
`mlflow server`; a real offline `.wandb` log), and validation reports every affected run and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from neptune_exporter.load import LoadOptions, run_load, run_validate
from neptune_exporter.loaders import base as loader_base
from neptune_exporter.loaders.mlflow import mapping as mlflow_mapping
from neptune_exporter.loaders.wandb import export_reader as wandb_export_reader
from neptune_exporter.loaders.wandb import history as wandb_history
from neptune_exporter.model import AttributeType
from neptune_exporter.rows import parameter_rows
from neptune_exporter.settings import Settings
from neptune_exporter.storage.parquet import RunWriter
from neptune_exporter.storage.wandb_log import find_offline_runs, read_run_log, run_log_path
from neptune_exporter.validation.wandb import wandb_run_id
from tests.integration.mlflow_server import mlflow_server  # noqa: F401  (session fixture)
from tests.integration.test_load_wandb import offline_wandb  # noqa: F401  (autouse: W&B never goes online here)
from tests.integration.test_load_wandb import write_export as write_wandb_export
from tests.load_exports import write_export, write_rich_export

pytestmark = pytest.mark.integration
AFFECTED, UNAFFECTED = ("a", "b"), "c"


def rename_one(monkeypatch, original: str, renamed: str) -> None:
    """Bug: the loaders' key mapping sends one valid key elsewhere (and records that in the run's key map)."""
    correct = loader_base.map_key
    monkeypatch.setattr(
        loader_base, "map_key", lambda key, capabilities: renamed if key == original else correct(key, capabilities)
    )


def problems(report) -> set[tuple[str, str, str, str]]:
    return {(d.run_id, d.kind, d.key, d.problem) for d in report.differences}


def for_runs(runs, *differences: tuple[str, str, str]) -> set[tuple[str, str, str, str]]:
    return {(run, *difference) for run in runs for difference in differences}


# ----------------------------------------------------------------------------- MLflow


def load_and_validate_mlflow(root: Path, url: str, project: str):
    for run in AFFECTED:
        write_rich_export(root / "data", root / "files", project, run, points=20)
    write_export(
        root / "data",
        root / "files",
        project,
        UNAFFECTED,
        [parameter_rows(project, UNAFFECTED, [("params/epochs", "int", 3)])],
    )
    options = LoadOptions(
        target="mlflow",
        data_path=str(root / "data"),
        files_path=str(root / "files"),
        mlflow_tracking_uri=url,
        workers=2,
    )
    assert sorted(r.status for r in run_load(options, Settings())) == ["loaded"] * 3
    return run_validate(options, Settings())


def test_mlflow_steps_scaled_ten_times_too_much(mlflow_server, tmp_path, monkeypatch):  # noqa: F811
    correct = mlflow_mapping.integer_steps
    monkeypatch.setattr(
        mlflow_mapping, "integer_steps", lambda unscaled, multiplier: correct(unscaled, multiplier) * 10
    )
    report = load_and_validate_mlflow(tmp_path, mlflow_server, "ws/bug-steps")
    assert problems(report) == for_runs(
        AFFECTED,
        ("metric", "metrics/loss", "points"),
        ("metric", "metrics/frac", "points"),
        ("artifact", "images/pred/step_100/pred_1.png", "missing"),
        ("artifact", "images/pred/step_200/pred_2.png", "missing"),
        ("artifact", "images/pred/step_1000/pred_1.png", "unexpected"),
        ("artifact", "images/pred/step_2000/pred_2.png", "unexpected"),
    )
    frac = next(d for d in report.differences if d.key == "metrics/frac")
    assert [p["step"] for p in frac.expected["missing_in_target"]] == [50, 125, 200]
    assert [p["step"] for p in frac.actual["unexpected_in_target"]] == [500, 1250, 2000]
    assert [r.run_id for r in report.failed_runs] == list(AFFECTED)


def test_mlflow_one_key_renamed_differently(mlflow_server, tmp_path, monkeypatch):  # noqa: F811
    rename_one(monkeypatch, "metrics/frac", "metrics/fraction")
    report = load_and_validate_mlflow(tmp_path, mlflow_server, "ws/bug-rename")
    assert problems(report) == for_runs(
        AFFECTED,
        ("key", "metrics/frac", "renamed"),
        ("metric", "metrics/frac", "missing"),
        ("metric", "metrics/fraction", "unexpected"),
    )
    assert [r.run_id for r in report.failed_runs] == list(AFFECTED)


def test_mlflow_string_param_truncated(mlflow_server, tmp_path, monkeypatch):  # noqa: F811
    correct = mlflow_mapping.param_text
    monkeypatch.setattr(
        mlflow_mapping,
        "param_text",
        lambda kind, value: correct(kind, value)[:6] if kind == "string" else correct(kind, value),
    )
    report = load_and_validate_mlflow(tmp_path, mlflow_server, "ws/bug-truncate")
    assert problems(report) == for_runs(
        AFFECTED,
        ("param", "params/name", "value"),
        ("param", "params/long", "value"),
        ("artifact", "neptune/long_values/params/long.txt", "missing"),
    )
    name = next(d for d in report.differences if d.key == "params/name")
    assert (name.expected, name.actual) == ("résumé ✓", "résumé")
    assert [r.run_id for r in report.failed_runs] == list(AFFECTED)


# ----------------------------------------------------------------------------- W&B (offline `.wandb` logs)

W_PROJECT = "team/vision"
W_AFFECTED, W_UNAFFECTED = ("RUN-A", "RUN-B"), "RUN-C"


def load_and_validate_wandb(root: Path):
    for run in W_AFFECTED:
        data, files = write_wandb_export(root, run_id=run)
    with RunWriter(data, W_PROJECT, W_UNAFFECTED, 10**9) as writer:
        writer.write(parameter_rows(W_PROJECT, W_UNAFFECTED, [("params/epochs", "int", 3)]))
    options = LoadOptions(
        target="wandb", data_path=str(data), files_path=str(files), workers=2, wandb_dir=str(root / "wb")
    )
    assert sorted(r.status for r in run_load(options, Settings())) == ["loaded"] * 3
    return run_validate(options, Settings())


def test_wandb_steps_scaled_ten_times_too_much(tmp_path, monkeypatch):
    correct = wandb_history.integer_steps
    for module in (wandb_export_reader, wandb_history):  # the step offset and the logged steps
        monkeypatch.setattr(module, "integer_steps", lambda unscaled, multiplier: correct(unscaled, multiplier) * 10)
    report = load_and_validate_wandb(tmp_path)
    assert problems(report) == for_runs(
        W_AFFECTED,
        ("metric", "train/loss", "points"),
        ("metric", "train/acc", "points"),
        ("metric", "eval/hist", "points"),
        ("history", "rows", "points"),
    )
    assert [r.run_id for r in report.failed_runs] == list(W_AFFECTED)


def test_wandb_one_key_renamed_differently(tmp_path, monkeypatch):
    rename_one(monkeypatch, "train/acc", "train/accuracy")
    report = load_and_validate_wandb(tmp_path)
    assert problems(report) == for_runs(
        W_AFFECTED,
        ("key", "train/acc", "renamed"),
        ("param", "neptune.key_map", "value"),
        ("metric", "train/acc", "missing"),
        ("metric", "train/accuracy", "unexpected"),
        ("metric-last", "train/acc", "missing"),
        ("metric-last", "train/accuracy", "unexpected"),
    )
    assert [r.run_id for r in report.failed_runs] == list(W_AFFECTED)


def test_wandb_string_param_truncated(tmp_path, monkeypatch):
    correct = wandb_export_reader._native

    def truncating(attribute_type, row):
        value = correct(attribute_type, row)
        return value[:6] if attribute_type is AttributeType.STRING else value

    monkeypatch.setattr(wandb_export_reader, "_native", truncating)
    report = load_and_validate_wandb(tmp_path)
    key_map = read_run_log(
        run_log_path(find_offline_runs(tmp_path / "wb", wandb_run_id(W_PROJECT, "RUN-A"))[0])
    ).config["neptune.key_map"]
    assert problems(report) == for_runs(
        W_AFFECTED,
        ("param", "sys/name", "value"),
        ("param", key_map["params/what is #1?"], "value"),
    )
    name = next(d for d in report.differences if d.key == "sys/name")
    assert (name.expected, name.actual) == ("baseline", "baseli")
    assert [r.run_id for r in report.failed_runs] == list(W_AFFECTED)

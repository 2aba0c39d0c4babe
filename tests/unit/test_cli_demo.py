"""The demo's last step: exit status 1 unless every target validated with no differences; env restored after."""

from __future__ import annotations

import os

from neptune_exporter.demo import DemoContext, report_validation, run_demo, set_env


def figures(target: str, differences: int) -> dict:
    return {
        "target": target,
        "runs_checked": 2,
        "differences": differences,
        "runs_with_differences": min(differences, 1),
        "report_json": f"/r/validation_{target}.json",
        "report_markdown": f"/r/validation_{target}.md",
    }


def test_clean_validation_of_both_targets_keeps_exit_0_and_prints_report_paths(capsys):
    ctx = DemoContext(
        validations={"mlflow": figures("mlflow", 0), "wandb": figures("wandb", 0)}, next_steps=["mlflow ui ..."]
    )
    report_validation(ctx)
    out = capsys.readouterr().out
    assert ctx.exit_code == 0
    assert "mlflow: 2 run(s) checked, no differences" in out and "JSON:     /r/validation_wandb.json" in out
    assert "markdown: /r/validation_mlflow.md" in out and out.rstrip().endswith("mlflow ui ...")


def test_differences_or_a_missing_target_exit_1(capsys):
    differing = DemoContext(validations={"mlflow": figures("mlflow", 0), "wandb": figures("wandb", 3)})
    report_validation(differing)
    assert differing.exit_code == 1 and "wandb: 2 run(s) checked, 3 difference(s)" in capsys.readouterr().out
    missing = DemoContext(validations={"mlflow": figures("mlflow", 0)})
    report_validation(missing)
    assert missing.exit_code == 1 and "wandb: not validated" in capsys.readouterr().out


def test_environment_set_or_unset_by_the_demo_is_restored_when_it_ends(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", "user-key")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    seen = {}

    def step(ctx: DemoContext) -> None:
        set_env(ctx, {"WANDB_API_KEY": None, "WANDB_MODE": "offline"})
        seen.update(key=os.environ.get("WANDB_API_KEY"), mode=os.environ.get("WANDB_MODE"))

    assert run_demo(DemoContext(out=tmp_path), [("offline", step)]) == 0
    assert seen == {"key": None, "mode": "offline"}
    assert os.environ["WANDB_API_KEY"] == "user-key" and "WANDB_MODE" not in os.environ


def test_the_folder_is_reused_unless_fresh_or_another_sample_size(tmp_path, capsys):
    from neptune_exporter.demo import prepare_folder

    def prepare(**options) -> bool:
        ctx = DemoContext(out=tmp_path, **options)
        prepare_folder(ctx)
        ctx.data_path.mkdir(exist_ok=True)
        (ctx.data_path / "marker").write_text("x")
        return "(reused:" in capsys.readouterr().out

    assert not prepare(runs=8, points=500)
    assert prepare(runs=8, points=500)
    assert not prepare(runs=8, points=500, fresh=True)
    assert not prepare(runs=3, points=500)  # another sample: the old export would be stale
    assert (tmp_path / "other").mkdir() is None and prepare(runs=3, points=500) and (tmp_path / "other").is_dir()

"""neptune_exporter/locations.py: projects default to NEPTUNE_PROJECT; flow paths must be absolute."""

from __future__ import annotations

import os

import pytest

from neptune_exporter.errors import InvalidOptionError
from neptune_exporter.locations import (
    CLI_PROJECT_FIX,
    FLOW_PROJECT_FIX,
    absolute_path,
    require_absolute,
    select_projects,
)


def test_relative_path_is_refused_naming_the_absolute_path_it_would_be(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidOptionError) as raised:
        require_absolute("exports/data", "paths.data_path")
    would_be = str(tmp_path / "exports" / "data")
    assert raised.value.message.startswith(
        f"paths.data_path 'exports/data' is relative: this flow run would write to {would_be}"
    )
    assert (
        raised.value.remedy
        == f"pass an absolute path, e.g. paths.data_path={would_be!r} if that is where the export belongs"
    )
    assert require_absolute(str(tmp_path / "a" / ".." / "b"), "x") == str(tmp_path / "b")
    assert require_absolute("~/data", "x") == os.path.expanduser("~/data")
    assert absolute_path("rel") == str(tmp_path / "rel")


def test_projects_default_to_neptune_project_unless_given_or_a_workspace(monkeypatch):
    monkeypatch.setenv("NEPTUNE_PROJECT", "ws/env")
    assert select_projects(None, None, FLOW_PROJECT_FIX) == ("ws/env",)
    assert select_projects(["ws/a"], None, FLOW_PROJECT_FIX) == ("ws/a",)
    assert select_projects(None, "ws", FLOW_PROJECT_FIX) == ()
    monkeypatch.delenv("NEPTUNE_PROJECT")
    with pytest.raises(InvalidOptionError) as raised:
        select_projects([], None, FLOW_PROJECT_FIX)
    assert "set NEPTUNE_PROJECT in the environment of the process that runs the flow" in str(raised.value)
    assert "-p WORKSPACE/PROJECT" not in raised.value.remedy and "-p WORKSPACE/PROJECT" in CLI_PROJECT_FIX


def test_a_distributed_load_reads_and_writes_only_absolute_paths_wandb_offline_runs_included(tmp_path, monkeypatch):
    from flows.validate import distributed_options
    from neptune_exporter.load import LoadOptions

    monkeypatch.chdir(tmp_path)
    data, files = str(tmp_path / "data"), str(tmp_path / "files")
    wandb = LoadOptions(target="wandb", data_path=data, files_path=files, wandb_dir=str(tmp_path / "wb"))
    assert distributed_options(wandb) == wandb
    for relative, shown in (("wb", "wb"), (None, "./wandb-runs")):
        with pytest.raises(InvalidOptionError) as refused:
            distributed_options(LoadOptions(target="wandb", data_path=data, files_path=files, wandb_dir=relative))
        would_be = os.path.abspath(shown)
        assert f"options.wandb_dir {shown!r} is relative: this flow run would write to {would_be}" in str(refused.value)
    mlflow = LoadOptions(target="mlflow", data_path=data, files_path=files)
    assert distributed_options(mlflow) == mlflow  # no W&B folder needed
    with pytest.raises(InvalidOptionError, match="options.files_path 'files' is relative"):
        distributed_options(LoadOptions(target="mlflow", data_path=data, files_path="files"))


def test_a_distributed_goodseed_load_names_one_absolute_home_for_every_worker(tmp_path, monkeypatch):
    from flows.validate import distributed_options
    from neptune_exporter.load import LoadOptions

    monkeypatch.chdir(tmp_path)
    data, files = str(tmp_path / "data"), str(tmp_path / "files")
    monkeypatch.setenv("GOODSEED_HOME", str(tmp_path / "parent-home"))
    unset = distributed_options(LoadOptions(target="goodseed", data_path=data, files_path=files))
    assert unset.goodseed_home == str(tmp_path / "parent-home")  # the parent's, not each worker's own
    monkeypatch.delenv("GOODSEED_HOME")
    assert distributed_options(LoadOptions(target="goodseed", data_path=data, files_path=files)).goodseed_home == (
        os.path.expanduser("~/.goodseed")
    )
    with pytest.raises(InvalidOptionError, match="options.goodseed_home 'gs' is relative"):
        distributed_options(LoadOptions(target="goodseed", data_path=data, files_path=files, goodseed_home="gs"))

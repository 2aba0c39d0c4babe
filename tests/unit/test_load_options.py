"""Load library pieces without a target: options, registry, run selection, fork ordering, per-run retries, reports."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neptune_exporter.errors import (
    InvalidOptionError,
    NoRunsSelectedError,
    OutputPathError,
    TargetError,
    TargetUnavailableError,
)
from neptune_exporter.load import (
    LoadOptions,
    RunToLoad,
    fork_waves,
    load_one,
    make_loader,
    select_runs,
    target_key,
    validate_one,
)
from neptune_exporter.loaders.base import LoadResult
from neptune_exporter.loaders.mlflow import MlflowLoader
from neptune_exporter.model import sanitize_name
from neptune_exporter.retry import RetryPolicy
from neptune_exporter.rows import parameter_rows
from neptune_exporter.settings import Settings
from neptune_exporter.validation.compare import Difference, PointDigest, compare_digests, compare_mappings
from neptune_exporter.validation.report import RunValidation, ValidationReport
from tests.load_exports import write_export


def test_options_round_trip_json_and_read_tracking_uri_from_env(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    options = LoadOptions(projects=["ws/a"], data_path="d", files_path="f", step_multiplier=10)
    assert options.mlflow_tracking_uri == "http://127.0.0.1:5999" and options.projects == ("ws/a",)
    data = json.loads(json.dumps(options.to_json()))
    assert LoadOptions.from_json(data) == options
    with pytest.raises(InvalidOptionError, match="unknown load option"):
        LoadOptions.from_json({**data, "bogus": 1})


def test_registry_builds_mlflow_loader_and_rejects_unknown_targets():
    loader = make_loader(
        LoadOptions(mlflow_tracking_uri="sqlite:////tmp/x.db", experiment_name_template="{project}"), Settings()
    )
    assert type(loader).__name__ == "MlflowLoader" and loader.experiment_name_template == "{project}"
    with pytest.raises(InvalidOptionError, match="unknown target 'nosuch'"):
        make_loader(LoadOptions(target="nosuch"), Settings())
    with pytest.raises(InvalidOptionError, match="MLFLOW_TRACKING_URI"):
        MlflowLoader("")


def test_select_runs_filters_and_fails_on_missing_folder(tmp_path):
    for project, run in (("ws/a", "r1"), ("ws/a", "r2"), ("ws/b", "r1")):
        write_export(
            tmp_path / "data", tmp_path / "files", project, run, [parameter_rows(project, run, [("p", "int", 1)])]
        )
    options = LoadOptions(
        data_path=str(tmp_path / "data"), files_path=str(tmp_path / "files"), projects=("ws/a",), runs_regex="2$"
    )
    assert select_runs(options) == [RunToLoad("ws/a", "r2", None)]
    with pytest.raises(OutputPathError, match="does not exist"):
        select_runs(LoadOptions(data_path=str(tmp_path / "missing")))


def test_nothing_selected_is_an_error_naming_the_folder_and_what_was_expected(tmp_path):
    (tmp_path / "exports" / "data").mkdir(parents=True)
    empty = LoadOptions(data_path=str(tmp_path / "exports" / "data"))
    with pytest.raises(NoRunsSelectedError) as nothing:
        select_runs(empty)
    data = tmp_path / "exports" / "data"
    assert nothing.value.message == f"no exported run in {data}: expected {data}/<project-dir>/*_part_*.parquet"
    assert nothing.value.remedy.startswith("pass the --data-path (-d) an export wrote to")

    write_export(data, tmp_path / "exports" / "files", "ws/a", "r1", [parameter_rows("ws/a", "r1", [("p", "int", 1)])])
    with pytest.raises(NoRunsSelectedError) as at_root:  # -d pointing at the export root instead of its data folder
        select_runs(LoadOptions(data_path=str(tmp_path / "exports")))
    root = tmp_path / "exports"
    assert at_root.value.message == f"no exported run in {root}: expected {root}/<project-dir>/*_part_*.parquet"
    assert at_root.value.remedy == f"pass -d {data} (the export's data folder, inside the folder given)"

    with pytest.raises(NoRunsSelectedError) as other_project:
        select_runs(LoadOptions(data_path=str(data), projects=("ws/b",)))
    expected = data / sanitize_name("ws/b") / "*_part_*.parquet"
    assert other_project.value.message == f"no exported run of ws/b in {data}: expected {expected}"
    assert other_project.value.remedy == "pass -p with an exported project: ws/a"

    with pytest.raises(NoRunsSelectedError) as no_match:
        select_runs(LoadOptions(data_path=str(data), runs_regex="^r9"))
    assert no_match.value.message == f"no exported run in {data} matches --runs '^r9'"


def test_fork_waves_put_parents_first_and_survive_cycles():
    runs = [
        RunToLoad("p", "c2", "c1"),
        RunToLoad("p", "c1", "root"),
        RunToLoad("p", "root"),
        RunToLoad("p", "x", "absent"),
    ]
    assert [[r.run_id for r in wave] for wave in fork_waves(runs)] == [["root", "x"], ["c1"], ["c2"]]
    cyclic = [RunToLoad("p", "a", "b"), RunToLoad("p", "b", "a")]
    assert sorted(r.run_id for wave in fork_waves(cyclic) for r in wave) == ["a", "b"]


def test_point_digest_is_order_free_nan_aware_and_maps_infinity():
    a, b = PointDigest(), PointDigest()
    a.update(
        np.array([1, 2, 3]), np.array([10, 20, 30]), np.array([math.nan, math.inf, -0.0]), infinity_stored_as=1e308
    )
    b.update(np.array([3]), np.array([30]), np.array([0.0]))
    b.update(np.array([2, 1]), np.array([20, 10]), np.array([1e308, float("nan")]))
    assert a == b
    c = PointDigest()
    c.update(np.array([1, 2, 3]), np.array([10, 20, 31]), np.array([math.nan, 1e308, 0.0]))
    diffs = compare_digests("p", "r", "metric", {"m": a, "gone": a}, {"m": c, "new": c})
    assert [(d.key, d.problem) for d in diffs] == [("gone", "missing"), ("m", "points"), ("new", "unexpected")]


def test_report_lists_differences_as_json_and_markdown(tmp_path):
    differences = compare_mappings("ws/p", "r1", "param", {"a": "1", "b": "x" * 300}, {"a": "2", "c": "3"})
    assert [(d.key, d.problem) for d in differences] == [("a", "value"), ("b", "missing"), ("c", "unexpected")]
    report = ValidationReport(
        "mlflow", [RunValidation("ws/p", "r1", "abc", differences, {"params": 2}), RunValidation("ws/p", "r2", "def")]
    )
    assert not report.ok and len(report.failed_runs) == 1
    data = report.to_json()
    assert (
        data["differences"] == 3
        and data["runs"][1]["ok"] is True
        and "(300 chars)" in data["runs"][0]["differences"][1]["expected"]
    )
    json_path, md_path = report.write(tmp_path)
    markdown = md_path.read_text()
    assert "3 difference(s) in 1 run(s)" in markdown and "| ws/p | r1 | param | a | value | 1 | 2 |" in markdown
    assert json.loads(json_path.read_text()) == data
    assert Difference(**data["runs"][0]["differences"][0]).key == "a"


class FlakyLoader:
    """A loader and validator whose first `failures` load/validate calls raise `error` (counts every call)."""

    def __init__(self, error: Exception, failures: int):
        self.error, self.failures, self.calls = error, failures, 0

    def _call(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error

    def load_run(self, data_root, files_root, project_id, run_id):
        self._call()
        return LoadResult(project_id, run_id, "loaded", "target-1", points=3)

    def validate(self, data_root, files_root, project_id, run_id):
        self._call()
        return RunValidation(project_id, run_id, "target-1", [])


def test_load_one_and_validate_one_retry_transient_errors_under_the_policy(tmp_path):
    options, run, policy = (
        LoadOptions(data_path=str(tmp_path)),
        RunToLoad("ws/p", "r"),
        RetryPolicy(attempts=3, backoff_seconds=0.5),
    )
    waits = []
    loader = FlakyLoader(TargetUnavailableError("down", "wait"), 2)
    assert load_one(loader, options, run, policy, sleep=waits.append).status == "loaded" and loader.calls == 3
    assert waits == [0.5, 1.0]
    loader = FlakyLoader(TargetUnavailableError("down", "wait"), 2)
    assert validate_one(loader, options, run, policy, sleep=waits.append).error is None and loader.calls == 3


def test_load_one_reports_a_terminal_or_spent_error_as_a_failed_run(tmp_path):
    options, run, policy = LoadOptions(data_path=str(tmp_path)), RunToLoad("ws/p", "r"), RetryPolicy(attempts=3)
    refused = FlakyLoader(TargetError("no", "fix it"), 9)
    result = load_one(refused, options, run, policy, sleep=pytest.fail)
    assert (result.status, result.error["error_type"], refused.calls) == ("failed", "TargetError", 1)
    down = FlakyLoader(TargetUnavailableError("down", "wait"), 9)
    result = load_one(down, options, run, policy, sleep=lambda seconds: None)
    assert (result.status, result.error["error_type"], result.error["remedy"], down.calls) == (
        "failed",
        "TargetUnavailableError",
        "wait",
        3,
    )
    report = validate_one(
        FlakyLoader(TargetUnavailableError("down", "wait"), 9), options, run, policy, sleep=lambda seconds: None
    )
    assert report.error["error_type"] == "TargetUnavailableError"


def test_report_shows_a_run_that_could_not_be_validated_with_its_error_and_fix(tmp_path):
    error = OutputPathError("the export of r3 is unreadable", "export the run again").to_record()
    report = ValidationReport("mlflow", [RunValidation("ws/p", "r3", None, error=error)])
    expected = "OutputPathError: the export of r3 is unreadable — fix: export the run again"
    assert [row["error"] for row in report.table_rows()] == [expected]
    assert f"| {expected} |" in report.write(tmp_path)[1].read_text()


def test_a_run_another_process_loads_into_the_same_target_waits_for_it_and_is_never_loaded_twice_at_once(tmp_path):
    """A distributed chunk its parent gave up may still load a run while the retry starts: the run's load lock makes
    the retry wait (RunInUseError, retried under the policy) and fail with the holder named if it never ends."""
    options, run = LoadOptions(data_path=str(tmp_path), mlflow_tracking_uri="http://x"), RunToLoad("ws/p", "r")
    (tmp_path / sanitize_name("ws/p")).mkdir()
    lock_path = run_load_lock_path(options, run)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        loader = FlakyLoader(TargetUnavailableError("down", "wait"), 0)
        result = load_one(loader, options, run, RetryPolicy(attempts=2), sleep=lambda seconds: None)
        assert (result.status, result.error["error_type"], loader.calls) == ("failed", "RunInUseError", 0)
        assert f"load of ws/p/r (pid {holder.pid}" in result.error["message"], result.error

        def release(seconds: float) -> None:
            holder.communicate("", timeout=30)

        result = load_one(loader, options, run, RetryPolicy(attempts=2), sleep=release)
        assert (result.status, loader.calls, holder.returncode) == ("loaded", 1, 0)
        assert not lock_path.exists()  # released with the load
    finally:
        holder.kill()
        holder.wait()


HOLD_LOCK = """
import sys
from neptune_exporter.storage import lock
with lock.hold(sys.argv[1], "load of ws/p/r", create_folder=False):
    print("held", flush=True)
    sys.stdin.read()
"""


def run_load_lock_path(options: LoadOptions, run: RunToLoad) -> Path:
    """Where `run_load_lock` keeps the run's lock: next to its manifest, one per target."""
    folder = Path(options.data_path) / sanitize_name(run.project_id)
    return folder / f"{sanitize_name(run.run_id)}.load-{target_key(options)}.lock"

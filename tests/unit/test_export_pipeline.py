"""The Prefect-free export pipeline against an in-memory Source: plan, full/incremental/redo, failures, summaries."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from neptune_exporter import export as ex
from neptune_exporter import export_results, export_runner
from neptune_exporter.errors import (
    InvalidRegexError,
    OutputPathError,
    ProjectNotFoundError,
    RateLimitedError,
    TerminalError,
)
from neptune_exporter.exporters.base import AttributeSelection, ExportedFile, RunContent, RunSelection
from neptune_exporter.model import (
    AttributeKind,
    AttributeType,
    RunRef,
    file_value_path,
    part_file_name,
    project_files_dir,
    sanitize_name,
)
from neptune_exporter.rows import parameter_rows, series_rows
from neptune_exporter.selection import matches_kind
from neptune_exporter.settings import RetryPolicy, Settings
from neptune_exporter.storage import incremental
from neptune_exporter.storage.manifest import FORMAT_VERSION, manifest_path, read_manifest, write_manifest
from neptune_exporter.storage.parquet import read_run_batches, run_part_paths

PROJECT = "ws/proj"
T0 = datetime(2024, 3, 1, tzinfo=UTC)


@dataclass
class FakeRun:
    params: dict  # path -> (type, value)
    series: dict  # path -> (type, steps, values)
    modified: datetime = T0
    files: dict = field(default_factory=dict)  # attribute path -> bytes
    fail: Exception | None = None
    fail_after_batches: int = 0
    failures_left: int = 1_000_000


class FakeSource:
    """In-memory Source honouring watermarks; counts export calls per run."""

    kind, server = "neptune3", "http://fake"

    def __init__(self, runs: dict[str, FakeRun], projects: dict[str, list[str]] | None = None):
        self.runs = runs
        self.projects = projects or {}
        self.calls: dict[str, int] = {}
        self.watermarks_seen: dict[str, dict | None] = {}
        self.lock = threading.Lock()

    def check_access(self, project_id):
        if project_id != PROJECT:
            raise ProjectNotFoundError(f"project {project_id} not found", "check the project name")

    def list_projects(self, workspace):
        return self.projects[workspace]

    def list_runs(self, project_id, selection):
        return [
            RunRef(project_id, rid, f"P-{i}", modification_time=r.modified)
            for i, (rid, r) in enumerate(sorted(self.runs.items()))
        ]

    def export_run(self, run, attributes, files_root, watermarks=None, progress=None):
        fake = self.runs[run.run_id]
        with self.lock:
            self.calls[run.run_id] = self.calls.get(run.run_id, 0) + 1
            self.watermarks_seen[run.run_id] = watermarks
        content = RunContent(batches=iter(()))
        content.batches = self._batches(run, fake, attributes, watermarks or {}, files_root, content, progress)
        content.source_facts = {"fork_parent": "parent-run", "fork_step": 2.0}
        return content

    def _batches(self, run, fake, attributes, watermarks, files_root, content, progress):
        produced = 0
        wanted = lambda kind: matches_kind(AttributeType(kind), attributes)  # noqa: E731
        items = [(p, t, v) for p, (t, v) in sorted(fake.params.items()) if wanted(t)]
        for path, data in sorted(fake.files.items()) if wanted("file") else ():
            target = project_files_dir(files_root, run.project_id) / run.run_id / path
            relative = file_value_path(files_root, run.project_id, target)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            content.files.append(ExportedFile(path, relative, len(data), hashlib.sha256(data).hexdigest()))
            items.append((path, "file", relative))
        batches = [parameter_rows(run.project_id, run.run_id, items)]
        for path, (kind, steps, values) in sorted(fake.series.items()):
            if not wanted(kind):
                continue
            mark = watermarks.get(path)
            keep = [i for i, s in enumerate(steps) if mark is None or mark.last_step is None or s > mark.last_step]
            for chunk in (keep[i : i + 50] for i in range(0, len(keep), 50)):  # bounded batches, like real sources
                batches.append(
                    series_rows(
                        run.project_id,
                        run.run_id,
                        path,
                        kind,
                        [steps[i] for i in chunk],
                        [values[i] for i in chunk],
                        [1000 + i for i in chunk],
                    )
                )
        for batch in batches:
            if fake.fail is not None and produced >= fake.fail_after_batches and fake.failures_left > 0:
                fake.failures_left -= 1
                raise fake.fail
            produced += 1
            if progress:
                progress(batch.num_rows, batch.nbytes)
            yield batch


def make_run(n: int = 300, lr: float = 0.1) -> FakeRun:
    steps = [i * 0.1 for i in range(n)]
    return FakeRun(
        params={"params/lr": ("float", lr), "sys/name": ("string", "exp-a"), "sys/tags": ("string_set", {"x"})},
        series={
            "metrics/loss": ("float_series", steps, [float(i) for i in range(n)]),
            "logs/out": ("string_series", list(range(n // 10)), [f"line {i}" for i in range(n // 10)]),
        },
        files={"model/ckpt": b"\x00weights"},
    )


def options_for(tmp_path: Path, **kw) -> ex.ExportOptions:
    return ex.ExportOptions(
        projects=(PROJECT,), data_path=str(tmp_path / "data"), files_path=str(tmp_path / "files"), **kw
    )


SETTINGS = Settings(
    part_target_bytes=3_000, retry=RetryPolicy(attempts=3, backoff_seconds=0.0, backoff_max_seconds=0.0)
)


def pipeline(source, options, settings=SETTINGS):
    """run_export's steps with our fake source (make_source would import the real clients)."""
    plans = ex.plan_export(source, options, settings)
    results = [ex.export_one(source, plan, options, settings, sleep=lambda s: None) for plan in plans]
    export_results.write_export_summary(Path(options.data_path), results, options)
    return plans, results


def sorted_rows(data_root, run_id) -> list[tuple]:
    rows = []
    for batch in read_run_batches(data_root, PROJECT, run_id):
        rows.extend(tuple(str(v) for v in row.values()) for row in batch.to_pylist())
    return sorted(rows)


# ----------------------------------------------------------------------------- options


def test_options_round_trip_json_and_never_expose_the_token(tmp_path):
    options = options_for(
        tmp_path,
        api_token="secret-token",
        workspace="ws",
        include_projects="^p",
        runs=RunSelection(runs_regex="r.*", modified_after=T0, include_archived=True, run_ids=("a",)),
        attributes=AttributeSelection(regex="^m", names=("x",), exclude_kinds=frozenset({AttributeKind.FILES})),
        workers=2,
    )
    data = options.to_json()
    text = json.dumps(data)
    assert "secret-token" not in text and "secret-token" not in repr(options)
    back = ex.ExportOptions.from_json(json.loads(text))
    assert back == options and back.api_token is None
    assert back.fingerprint() == options.fingerprint()
    assert replace(options, runs=RunSelection()).fingerprint() == options.fingerprint()
    assert replace(options, attributes=AttributeSelection()).fingerprint() != options.fingerprint()


def test_plan_and_result_round_trip_json():
    plan = ex.RunPlan(RunRef(PROJECT, "r", "P-1", modification_time=T0, experiment_name="e"), "incremental", "modified")
    assert ex.RunPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
    result = export_results.RunExportResult(
        PROJECT, "r", "complete", "/x", rows=3, errors=[{"message": "m"}], action="full"
    )
    assert export_results.RunExportResult.from_json(json.loads(json.dumps(result.to_json()))) == result


# ----------------------------------------------------------------------------- preflight


def test_preflight_rejects_bad_regex_unwritable_paths_and_unknown_projects(tmp_path):
    source = FakeSource({})
    with pytest.raises(InvalidRegexError, match="--runs"):
        ex.preflight(options_for(tmp_path, runs=RunSelection(runs_regex="(")), source)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OutputPathError, match="--data-path") as info:
        ex.preflight(replace(options_for(tmp_path), data_path=str(blocker)), source)
    assert "folder you can write to" in info.value.remedy
    with pytest.raises(OutputPathError, match="--files-path"):
        ex.preflight(replace(options_for(tmp_path), files_path=str(blocker / "sub")), source)
    with pytest.raises(ProjectNotFoundError):
        ex.preflight(replace(options_for(tmp_path), projects=("ws/nope",)), source)
    with pytest.raises(TerminalError, match="no project selected"):
        ex.preflight(replace(options_for(tmp_path), projects=()), source)


def test_run_export_stops_on_bad_input_before_making_any_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(export_runner, "make_source", lambda options, settings: FakeSource({}))
    options = replace(options_for(tmp_path / "out"), projects=("ws/nope",))
    with pytest.raises(ProjectNotFoundError, match="ws/nope"):
        export_runner.run_export(options, SETTINGS)
    assert not (tmp_path / "out").exists()  # neither the data path nor its lock file was made


def test_preflight_resolves_workspace_projects_with_include_exclude(tmp_path):
    source = FakeSource({}, projects={"ws": ["ws/proj", "ws/proj-old", "ws/other"]})
    options = replace(
        options_for(tmp_path), projects=(), workspace="ws", include_projects="proj", exclude_projects="old$"
    )
    assert ex.preflight(options, source) == [PROJECT]


# ----------------------------------------------------------------------------- exporting


def test_full_export_then_skip_when_unchanged(tmp_path):
    source = FakeSource({"run-a": make_run(), "run-b": make_run(50)})
    options = options_for(tmp_path)
    plans, results = pipeline(source, options)
    assert [p.action for p in plans] == ["full", "full"]
    assert [r.status for r in results] == ["complete", "complete"]
    data = Path(options.data_path)
    manifest = read_manifest(manifest_path(data, PROJECT, "run-a"))
    assert manifest.is_complete() and len(manifest.parts) > 1
    assert manifest.attributes["metrics/loss"] == {"type": "float_series", "count": 300, "last_step": 29.9}
    assert manifest.attributes["params/lr"]["count"] == 1
    assert manifest.files[0]["sha256"] == hashlib.sha256(b"\x00weights").hexdigest()
    assert (manifest.source["fork_parent"], manifest.source["modification_time"]) == (
        "parent-run",
        T0.isoformat(timespec="milliseconds"),
    )
    assert results[0].rows == 3 + 1 + 300 + 30 and results[0].points == 330 and results[0].files == 1
    plans, results = pipeline(source, options)
    assert [p.action for p in plans] == ["skip", "skip"] and [r.status for r in results] == ["skipped"] * 2
    assert source.calls == {"run-a": 1, "run-b": 1}  # completed runs are not fetched again


def test_incremental_export_equals_a_fresh_full_export(tmp_path):
    run = make_run(300, lr=0.1)
    source = FakeSource({"run-a": run})
    options = options_for(tmp_path / "inc")
    pipeline(source, options)
    first_checksum = read_manifest(manifest_path(Path(options.data_path), PROJECT, "run-a")).checksum
    # the run goes on: more points, a changed parameter, a new parameter
    run.series["metrics/loss"] = ("float_series", [i * 0.1 for i in range(450)], [float(i) for i in range(450)])
    run.params["params/lr"] = ("float", 0.05)
    run.params["params/new"] = ("int", 7)
    run.modified = T0 + timedelta(hours=1)
    plans, results = pipeline(source, options)
    assert [p.action for p in plans] == ["incremental"]
    assert source.watermarks_seen["run-a"]["metrics/loss"].last_step == 29.9
    assert results[0].points == 150 + 0  # only the new loss points; the string series had nothing new
    fresh = options_for(tmp_path / "fresh")
    pipeline(FakeSource({"run-a": run}), fresh)
    data_inc, data_fresh = Path(options.data_path), Path(fresh.data_path)
    assert sorted_rows(data_inc, "run-a") == sorted_rows(data_fresh, "run-a")
    inc, full = (read_manifest(manifest_path(d, PROJECT, "run-a")) for d in (data_inc, data_fresh))
    assert inc.attributes == full.attributes
    lr_rows = [
        r
        for b in read_run_batches(data_inc, PROJECT, "run-a")
        for r in b.to_pylist()
        if r["attribute_path"] == "params/lr"
    ]
    assert [r["float_value"] for r in lr_rows] == [0.05]
    listed = {p.path for p in inc.parts}
    on_disk = {p.relative_to(data_inc).as_posix() for p in run_part_paths(data_inc, PROJECT, "run-a", include_tmp=True)}
    assert listed == on_disk  # superseded parts removed, nothing stray
    assert any(p.endswith(part_file_name("run-a", 0)) for p in listed)  # the peer's completion marker is kept
    assert inc.checksum != first_checksum  # loaders see that the run changed


def test_crash_before_manifest_is_redone_and_strays_removed(tmp_path):
    source = FakeSource({"run-a": make_run()})
    options = options_for(tmp_path)
    data = Path(options.data_path)
    ex.preflight(options, source)
    plan = ex.plan_runs(ex.discover(source, options, [PROJECT]), options)[0]
    real_write = ex.write_manifest
    ex.write_manifest = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt("killed"))
    try:
        with pytest.raises(KeyboardInterrupt):
            ex.export_run(source, plan, options, SETTINGS)
    finally:
        ex.write_manifest = real_write
    stray = run_part_paths(data, PROJECT, "run-a")
    assert stray and manifest_path(data, PROJECT, "run-a").exists() is False
    tmp_file = stray[0].with_name(part_file_name("run-a", 40) + ".tmp")
    tmp_file.write_bytes(b"half")
    (replan,) = ex.plan_runs(ex.discover(source, options, [PROJECT]), options)
    assert replan.action == "redo" and "without a complete manifest" in replan.reason
    result = ex.export_run(source, replan, options, SETTINGS)
    manifest = read_manifest(manifest_path(data, PROJECT, "run-a"))
    assert result.status == "complete" and not tmp_file.exists()
    assert {p.relative_to(data).as_posix() for p in run_part_paths(data, PROJECT, "run-a", include_tmp=True)} == {
        p.path for p in manifest.parts
    }
    assert sum(p.rows for p in manifest.parts) == 334


def test_terminal_error_fails_one_run_keeps_its_old_data_and_others_complete(tmp_path):
    runs = {"run-a": make_run(), "run-b": make_run(40)}
    source = FakeSource(runs)
    options = options_for(tmp_path)
    pipeline(source, options)
    data = Path(options.data_path)
    before = {p: p.read_bytes() for p in run_part_paths(data, PROJECT, "run-a")}
    runs["run-a"].modified = runs["run-b"].modified = T0 + timedelta(days=1)
    runs["run-a"].fail = TerminalError("attribute is corrupt", "re-log it", attribute="metrics/loss")
    runs["run-a"].fail_after_batches = 1  # the parameter batch is written, then the source fails
    plans, results = pipeline(source, options)
    by_run = {r.run_id: r for r in results}
    assert by_run["run-b"].status == "complete" and by_run["run-a"].status == "failed"
    assert by_run["run-a"].errors == [
        {
            "project": PROJECT,
            "run": "run-a",
            "attribute": "metrics/loss",
            "error_type": "TerminalError",
            "message": "attribute is corrupt",
            "remedy": "re-log it",
        }
    ]
    assert {p: p.read_bytes() for p in run_part_paths(data, PROJECT, "run-a", include_tmp=True)} == before
    failed = read_manifest(manifest_path(data, PROJECT, "run-a"))
    assert failed.status == "failed" and failed.errors == by_run["run-a"].errors
    assert sorted(data / p.path for p in failed.parts) == sorted(before)
    summary = json.loads((data / sanitize_name(PROJECT) / "export_summary.json").read_text())
    assert (summary["runs_complete"], summary["runs_failed"], summary["runs_skipped"]) == (1, 1, 0)
    assert summary["failures"][0]["run_id"] == "run-a"
    lines = (data / sanitize_name(PROJECT) / "errors.jsonl").read_text().splitlines()
    assert [json.loads(line)["attribute"] for line in lines] == ["metrics/loss"]
    runs["run-a"].fail = None
    (plan,) = [p for p in ex.plan_runs(ex.discover(source, options, [PROJECT]), options) if p.run.run_id == "run-a"]
    assert plan.action == "redo"


def test_transient_errors_are_retried_and_leave_no_partial_parts(tmp_path):
    run = make_run()
    run.fail, run.fail_after_batches, run.failures_left = RateLimitedError("429", "slow down"), 2, 2
    source = FakeSource({"run-a": run})
    options = options_for(tmp_path)
    delays = []
    ex.preflight(options, source)
    (plan,) = ex.plan_runs(ex.discover(source, options, [PROJECT]), options)
    result = ex.export_one(source, plan, options, SETTINGS, sleep=delays.append)
    assert result.status == "complete" and source.calls["run-a"] == 3 and len(delays) == 2
    data = Path(options.data_path)
    manifest = read_manifest(manifest_path(data, PROJECT, "run-a"))
    assert sum(p.rows for p in manifest.parts) == 334  # no rows from the aborted attempts
    assert len(run_part_paths(data, PROJECT, "run-a", include_tmp=True)) == len(manifest.parts)


def test_a_run_that_keeps_failing_transiently_is_reported_failed(tmp_path):
    run = make_run(20)
    run.fail = RateLimitedError("429 again", "wait")
    source = FakeSource({"run-a": run, "run-b": make_run(20)})
    options = options_for(tmp_path)
    _, results = pipeline(source, options)
    by_run = {r.run_id: r for r in results}
    assert by_run["run-a"].status == "failed" and by_run["run-a"].errors[0]["error_type"] == "RateLimitedError"
    assert source.calls["run-a"] == SETTINGS.retry.attempts
    assert by_run["run-b"].status == "complete"
    assert run_part_paths(Path(options.data_path), PROJECT, "run-a", include_tmp=True) == []


def test_changed_options_redo_and_replace_old_parts(tmp_path):
    source = FakeSource({"run-a": make_run()})
    options = options_for(tmp_path)
    pipeline(source, options)
    narrowed = replace(options, attributes=AttributeSelection(include_kinds=frozenset({AttributeKind.PARAMETERS})))
    plans, _ = pipeline(source, narrowed)
    assert plans[0].action == "redo" and plans[0].reason == "export options changed"
    data = Path(options.data_path)
    manifest = read_manifest(manifest_path(data, PROJECT, "run-a"))
    assert [Path(p.path).name for p in manifest.parts] == [part_file_name("run-a", 0)]  # renumbered to part 0
    assert set(manifest.attributes) == {"params/lr", "sys/name", "sys/tags"}
    assert {p.relative_to(data).as_posix() for p in run_part_paths(data, PROJECT, "run-a", include_tmp=True)} == {
        p.path for p in manifest.parts
    }


def test_file_paths_are_relative_to_the_project_files_folder(tmp_path):
    source = FakeSource({"run-a": make_run()})
    options = options_for(tmp_path)
    pipeline(source, options)
    manifest = read_manifest(manifest_path(Path(options.data_path), PROJECT, "run-a"))
    (entry,) = manifest.files
    assert entry["path"] == "run-a/model/ckpt"  # the peer's rule: no project folder in the stored path
    local = Path(options.files_path) / sanitize_name(PROJECT) / entry["path"]
    assert local.read_bytes() == b"\x00weights" and manifest.format_version == FORMAT_VERSION == 2
    (row,) = [
        r for b in read_run_batches(Path(options.data_path), PROJECT, "run-a") for r in b.to_pylist() if r["file_value"]
    ]
    assert row["file_value"] == {"path": entry["path"]}


def test_run_exported_in_the_older_file_path_format_is_redone(tmp_path):
    source = FakeSource({"run-a": make_run()})
    options = options_for(tmp_path)
    pipeline(source, options)
    data = Path(options.data_path)
    old = read_manifest(manifest_path(data, PROJECT, "run-a"))
    old.format_version = 1  # file paths were relative to <files>/ then
    write_manifest(data, old)
    plans, results = pipeline(source, options)
    assert (plans[0].action, plans[0].reason) == (
        "redo",
        "exported with file paths relative to the files root (older format)",
    )
    assert results[0].status == "complete" and source.calls == {"run-a": 2}
    assert read_manifest(manifest_path(data, PROJECT, "run-a")).format_version == FORMAT_VERSION


def test_run_export_loop_with_threads_and_progress(tmp_path, monkeypatch):
    source = FakeSource({f"run-{i}": make_run(30) for i in range(6)})
    monkeypatch.setattr(export_runner, "make_source", lambda options, settings: source)

    class Sink:
        def __init__(self):
            self.total, self.points, self.done, self.lock = 0, 0, [], threading.Lock()

        def on_plan(self, total):
            self.total = total

        def on_points(self, points, nbytes):
            with self.lock:
                self.points += points

        def on_run_done(self, result):
            with self.lock:
                self.done.append(result.status)

    sink = Sink()
    results = export_runner.run_export(replace(options_for(tmp_path), workers=3), SETTINGS, sink)
    assert sink.total == 6 and sink.done == ["complete"] * 6 and sink.points == 6 * (4 + 30 + 3)
    assert {r.status for r in results} == {"complete"}
    summary = export_results.export_summary(results, options_for(tmp_path))
    assert (summary["runs_complete"], summary["points"], summary["files"]) == (6, 6 * 33, 6)


def test_empty_run_gets_an_empty_part_zero(tmp_path):
    source = FakeSource({"run-e": FakeRun(params={}, series={})})
    options = options_for(tmp_path)
    _, (result,) = pipeline(source, options)
    manifest = read_manifest(manifest_path(Path(options.data_path), PROJECT, "run-e"))
    assert result.status == "complete" and [p.rows for p in manifest.parts] == [0]
    assert manifest.parts[0].path.endswith(part_file_name("run-e", 0))


def test_make_source_rejects_unknown_source():
    with pytest.raises(TerminalError, match="not supported"):
        ex.make_source(ex.ExportOptions(source="neptune1"), Settings())


def test_watermark_filter_drops_points_a_source_sent_twice():
    batch = series_rows(PROJECT, "r", "m", "float_series", [1, 2, 3], [1.0, 2.0, 3.0], None)
    kept = incremental.watermark_filter(batch, {"m": 2_000_000})
    assert kept.column("float_value").to_pylist() == [3.0]
    assert incremental.watermark_filter(pa.RecordBatch.from_pylist([], schema=batch.schema), {"m": 1}).num_rows == 0


def test_failed_redo_never_loses_the_last_complete_data(tmp_path):
    run = make_run(120)
    source = FakeSource({"run-a": run})
    options = options_for(tmp_path)
    pipeline(source, options)
    data = Path(options.data_path)
    complete_rows = sorted_rows(data, "run-a")
    run.modified, run.fail = T0 + timedelta(days=1), RateLimitedError("503", "later")
    pipeline(source, options)  # retries exhausted: failed manifest, old parts still listed
    run.fail = TerminalError("gone wrong", "fix it")
    plans, results = pipeline(source, options)  # the redo fails too
    assert plans[0].action == "redo" and results[0].status == "failed"
    assert sorted_rows(data, "run-a") == complete_rows
    run.fail = None
    plans, results = pipeline(source, options)
    assert plans[0].action == "redo" and results[0].status == "complete"
    manifest = read_manifest(manifest_path(data, PROJECT, "run-a"))
    assert sorted_rows(data, "run-a") == complete_rows  # same content, now from the fresh parts only
    assert {p.relative_to(data).as_posix() for p in run_part_paths(data, PROJECT, "run-a", include_tmp=True)} == {
        p.path for p in manifest.parts
    }
    assert manifest.parts[0].path.endswith(part_file_name("run-a", 0))


def test_plan_tidies_a_complete_run_left_with_strays(tmp_path):
    source = FakeSource({"run-a": make_run(60)})
    options = options_for(tmp_path)
    pipeline(source, options)
    data = Path(options.data_path)
    manifest = read_manifest(manifest_path(data, PROJECT, "run-a"))
    part0 = data / manifest.parts[0].path
    stray = part0.with_name(part_file_name("run-a", 99))
    stray.write_bytes(part0.read_bytes())  # e.g. killed after a rename but before the manifest
    renamed = part0.with_name(part_file_name("run-a", 50))
    part0.rename(renamed)  # e.g. killed between the part-0 restore steps: manifest lists part 50
    manifest.parts[0] = replace(manifest.parts[0], path=renamed.relative_to(data).as_posix())
    ex.write_manifest(data, manifest)
    (plan,) = ex.plan_runs(ex.discover(source, options, [PROJECT]), options)
    assert plan.action == "skip" and not stray.exists()
    assert part0.exists() and not renamed.exists()
    assert read_manifest(manifest_path(data, PROJECT, "run-a")).parts[0].path.endswith(part_file_name("run-a", 0))


# ----------------------------------------------------------------------------- one process per run


def test_a_run_another_process_exports_is_waited_for_then_planned_again_and_not_fetched_twice(tmp_path):
    """A distributed chunk given up while it still runs: its run's lock makes the retry wait, not write beside it."""
    source = FakeSource({"run-a": make_run(30)})
    options = options_for(tmp_path)
    (plan,) = ex.plan_export(source, options, SETTINGS)
    assert plan.action == "full"
    other = ex.run_lock(Path(options.data_path), plan.run)
    other.__enter__()  # the other process holds the run

    def meanwhile(seconds: float) -> None:  # between two attempts, the other process completes the run and lets go
        if source.calls.get("run-a", 0) == 0:
            ex._export_locked(source, plan, options, SETTINGS, None)
            other.__exit__(None, None, None)

    result = ex.export_one(source, plan, options, SETTINGS, sleep=meanwhile)
    assert result.status == "skipped" and source.calls == {"run-a": 1}  # planned again under the lock: complete
    manifest = read_manifest(manifest_path(Path(options.data_path), PROJECT, "run-a"))
    assert manifest is not None and manifest.is_complete()
    on_disk = [p.name for p in project_dir_files(options)]
    assert sorted(n for n in on_disk if "_part_" in n) == sorted(Path(part.path).name for part in manifest.parts)
    assert not [n for n in on_disk if n.endswith(".lock") or n.endswith(".tmp")], on_disk  # the lock went with it


def test_a_run_held_by_another_process_for_good_fails_alone_saying_so(tmp_path):
    source = FakeSource({"run-a": make_run(30), "run-b": make_run(30)})
    options = options_for(tmp_path)
    plans = ex.plan_export(source, options, SETTINGS)
    with ex.run_lock(Path(options.data_path), plans[0].run):
        results = [ex.export_one(source, plan, options, SETTINGS, sleep=lambda s: None) for plan in plans]
    assert [r.status for r in results] == ["failed", "complete"] and "run-a" not in source.calls
    (error,) = results[0].errors
    assert error["error_type"] == "RunInUseError" and "is in use: export of" in error["message"]
    assert error["remedy"] == "none needed: it is retried, and the next export completes the run"


def project_dir_files(options: ex.ExportOptions) -> list[Path]:
    return [p for p in manifest_path(Path(options.data_path), PROJECT, "x").parent.iterdir() if p.is_file()]

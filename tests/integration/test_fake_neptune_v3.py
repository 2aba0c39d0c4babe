"""The real, unpatched neptune-query 1.14 against the fake server, compared with the dataset value by value."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import neptune_query as nq
import neptune_query.internal.retrieval.retry as nq_retry
import neptune_query.runs as nqr
import numpy as np
import pandas as pd
import pytest
from neptune_query.exceptions import NeptuneProjectInaccessible
from neptune_query.filters import Attribute, AttributeFilter, Filter

from neptune_exporter.fake_neptune import FakeNeptuneProcess, FaultConfig, store
from neptune_exporter.fake_neptune.api_v3 import visible_attributes
from neptune_exporter.fake_neptune.datasets import AWKWARD_PROJECT, generate_workspace

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
P = AWKWARD_PROJECT


@pytest.fixture
def fake(awkward_fake, use_neptune_query):
    use_neptune_query(awkward_fake)
    return awkward_fake


def run_of(fake, custom_or_sys: str) -> store.Run:
    return fake.workspace.project(P).run(custom_or_sys)


def points(run: store.Run, path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    series = run.attributes[path].series
    return series.window(None, None, None, len(series))


def same_floats(actual, expected) -> bool:
    return np.array_equal(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), equal_nan=True)


# ---------------------------------------------------------------------------- listing
def test_list_experiments_and_runs(fake):
    assert nq.list_experiments(project=P) == ["exp-alpha", "exp-beta", "exp-fork", "exp-gamma", "exp-wide"]
    assert nqr.list_runs(project=P) == sorted(
        ["run-basic", "run-empty", "run-wide", "run-parent", "run-child", "AWK-7", "run-gamma"]
    )
    assert nq.list_experiments(experiments="alpha|beta", project=P) == ["exp-alpha", "exp-beta"]


def test_list_attributes_matches_the_3x_view(fake):
    expected = sorted(a.path for a in visible_attributes(run_of(fake, "run-basic")))
    assert nq.list_attributes(experiments="exp-alpha", project=P) == expected
    assert "artifacts/set" not in expected and "sys/state" not in expected  # 2.x-only
    assert nq.list_attributes(experiments="exp-alpha", attributes="^params/", project=P) == sorted(
        p for p in expected if p.startswith("params/")
    )


# ---------------------------------------------------------------------------- tables
def test_experiments_table_values_exact(fake):
    run = run_of(fake, "run-basic")
    table = nq.fetch_experiments_table(
        experiments="exp-alpha", attributes=r"^params/|^unicode/|^a/b|^with space", project=P
    )
    row = table.loc["exp-alpha"]
    for path, attr in run.attributes.items():
        if path in row.index:
            value = row[path]
            if attr.type == store.FLOAT:
                assert same_floats([value], [attr.value]), path
            elif attr.type == store.DATETIME:
                assert pd.Timestamp(value) == pd.Timestamp(attr.value), path
            else:
                assert value == attr.value, path
    assert len(row) == 14


def test_table_with_series_last_values_and_10000_attributes(fake):
    table = nq.fetch_experiments_table(experiments="exp-wide", attributes="^wide/", project=P)
    assert table.shape == (1, 10_000)
    assert [table.loc["exp-wide", f"wide/p{i:05d}"] for i in (0, 1, 9_999)] == [0.0, 0.5, 4_999.5]
    basic = nq.fetch_experiments_table(experiments="exp-alpha", attributes=["metrics/loss", "logs/stdout"], project=P)
    assert basic.loc["exp-alpha", "metrics/loss"] == 1.0 / 100
    assert basic.loc["exp-alpha", "logs/stdout"] == "end"


def test_runs_table_sorted_and_filtered(fake):
    table = nqr.fetch_runs_table(
        runs=Filter.exists("params/lr"), attributes=["params/lr"], sort_by="params/lr", sort_direction="asc", project=P
    )
    assert list(table.index) == ["AWK-7", "run-child", "run-parent"]
    assert list(table["params/lr"]) == [0.01, 0.05, 0.1]
    assert nqr.list_runs(runs=Filter.gt("params/lr", 0.04), project=P) == ["run-child", "run-parent"]
    assert nqr.list_runs(runs=Filter.contains_all("sys/tags", ["t1", "ünï"]), project=P) == ["run-gamma"]
    assert nqr.list_runs(runs=Filter.eq("params/bool", True) & Filter.exists("params/string"), project=P) == [
        "run-basic"
    ]


def test_search_pages_by_offset_with_short_last_page(fake, monkeypatch):
    monkeypatch.setenv("NEPTUNE_QUERY_EXPERIMENT_SYS_ATTRS_BATCH_SIZE", "2")
    fake.requests.clear()
    table = nq.fetch_experiments_table(
        attributes=["params/lr"], sort_by="sys/creation_time", sort_direction="asc", project=P
    )
    assert list(table.index) == ["exp-alpha", "exp-wide", "exp-fork", "exp-beta", "exp-gamma"]
    assert fake.requests.count("v3.search") == 3  # 2 + 2 + 1


# ---------------------------------------------------------------------------- metrics
def test_fetch_metrics_every_point_exact(fake):
    run = run_of(fake, "run-basic")
    df = nq.fetch_metrics(experiments="exp-alpha", attributes="^metrics/", include_time="absolute", project=P)
    for path in ("metrics/loss", "metrics/float_steps", "metrics/nonfinite"):
        steps, values, stamps = points(run, path)
        got = df[path].loc["exp-alpha"].loc[steps]
        assert same_floats(got.index, steps), path
        assert same_floats(got["value"], values), path
        assert [int(t.timestamp() * 1000) for t in got["absolute_time"]] == list(stamps), path
    assert "metrics/empty" not in df.columns.get_level_values(0)


def test_fetch_metrics_step_range_and_tail(fake):
    df = nq.fetch_metrics(experiments="exp-alpha", attributes="metrics/float_steps", step_range=(0.29, 1.0), project=P)
    assert list(df.index.get_level_values("step")) == [0.29, 1.0]
    tail = nq.fetch_metrics(experiments="exp-alpha", attributes="metrics/loss", tail_limit=3, project=P)
    assert list(tail["metrics/loss"]) == [1 / 98, 1 / 99, 1 / 100]


def test_fork_lineage_full_and_none(fake):
    full = nqr.fetch_metrics(runs=["run-child"], attributes=["metrics/loss"], project=P)
    assert list(full["metrics/loss"]) == [10.0, 9.0, 8.0, 7.0, 6.0, 105.0, 106.0, 107.0, 108.0, 109.0]
    own = nqr.fetch_metrics(runs=["run-child"], attributes=["metrics/loss"], lineage_to_the_root=False, project=P)
    assert list(own.index.get_level_values("step")) == [5.0, 6.0, 7.0, 8.0, 9.0]


def test_fork_relation_is_attributes(fake):
    table = nqr.fetch_runs_table(
        runs=["run-child", "run-parent", "AWK-7"],
        project=P,
        attributes=["sys/forking/parent", "sys/forking/step", "sys/forking/depth"],
    )
    assert table.loc["run-child", "sys/forking/parent"] == "run-parent"  # the parent's run id, not its sys id
    assert table.loc["run-child", "sys/forking/step"] == 4.0 and table.loc["run-child", "sys/forking/depth"] == 1
    assert pd.isna(table.loc["run-parent", "sys/forking/parent"]) and table.loc["run-parent", "sys/forking/depth"] == 0
    assert nqr.list_attributes(runs=["run-child"], attributes="^sys/forking/", project=P) == [
        "sys/forking/depth",
        "sys/forking/parent",
        "sys/forking/step",
    ]
    assert nqr.list_attributes(runs=["run-parent"], attributes="^sys/forking/", project=P) == ["sys/forking/depth"]
    assert nqr.list_runs(runs=Filter.eq("sys/forking/parent", "run-parent"), project=P) == ["run-child"]
    assert nqr.list_runs(runs=Filter.ge("sys/forking/step", 4.0), project=P) == ["run-child"]
    assert nqr.list_runs(runs=Filter.exists("sys/forking/parent"), project=P) == ["run-child"]


def test_legacy_only_types_are_invisible(fake):
    legacy = {p for p, a in run_of(fake, "run-basic").attributes.items() if a.type in store.LEGACY_ONLY_TYPES}
    assert legacy == {"source_code/git", "source_code/notebook", "datasets/train"}
    assert not legacy & set(nqr.list_attributes(runs=["run-basic"], project=P))
    assert not legacy & set(
        nqr.fetch_runs_table(runs=["run-basic"], attributes="^(source_code|datasets)/", project=P).columns
    )
    for path in legacy:  # a 3.x search cannot see them either: EXISTS is false, the NOT of it true
        assert nqr.list_runs(runs=Filter.exists(path), project=P) == []
        assert "run-basic" in nqr.list_runs(runs=~Filter.exists(path), project=P)
    assert nqr.list_runs(runs=Filter.eq(Attribute("sys/state", type="string"), "idle"), project=P) == []  # 2.x-only
    # searches see the 3.x view: a run without a custom run id is found by its sys id as sys/custom_run_id
    assert nqr.list_runs(runs=Filter.eq(Attribute("sys/custom_run_id", type="string"), "AWK-7"), project=P) == ["AWK-7"]


def test_long_series_paged_with_after_step(fake_factory, use_neptune_query):
    fake = fake_factory(
        generate_workspace(
            runs=1, experiments=1, params=0, metrics=2, points=600_000, string_series=0, histograms=0, files=0
        )
    )
    use_neptune_query(fake)
    df = nq.fetch_metrics(experiments="exp-0000", attributes="metrics/", project="workspace/sandbox")
    series = fake.workspace.project("workspace/sandbox").runs[0].attributes["metrics/m001"].series
    steps, values, _ = series.window(None, None, None, len(series))
    assert same_floats(df["metrics/m001"], values) and same_floats(df.index.get_level_values("step"), steps)
    assert fake.requests.count("v3.float_series") == 2  # 500,000 a page per series, then afterStep


# ---------------------------------------------------------------------------- other series, buckets, files
def test_fetch_series_string_histogram_file(fake):
    run = run_of(fake, "run-basic")
    df = nq.fetch_series(experiments="exp-alpha", attributes="logs/|hist/|images/", project=P)
    logs = df["logs/stdout"].dropna()
    assert list(logs) == list(points(run, "logs/stdout")[1])
    timed = nq.fetch_series(experiments="exp-alpha", attributes="logs/", include_time="absolute", project=P)
    stamps = [int(t.timestamp() * 1000) for t in timed["logs/stdout"]["absolute_time"]]
    assert stamps == list(points(run, "logs/stdout")[2])
    hists = df["hist/weights"].dropna()
    expected = points(run, "hist/weights")[1]
    assert [(h.type, h.edges, h.values) for h in hists] == [(h["type"], h["edges"], h["values"]) for h in expected]
    images = df["images/samples"].dropna()
    assert [f.path for f in images] == list(points(run, "images/samples")[1])
    assert [f.size_bytes for f in images] == [8, 8, 8] and images.iloc[0].mime_type == "image/png"


def test_string_series_paged_with_search_after(fake_factory, use_neptune_query):
    fake = fake_factory(
        generate_workspace(
            runs=1, experiments=1, params=0, metrics=0, string_series=1, string_points=2_500, histograms=0, files=0
        )
    )
    use_neptune_query(fake)
    df = nq.fetch_series(experiments="exp-0000", attributes="logs/", project="workspace/sandbox")
    assert list(df["logs/s000"]) == [f"run 0 series 0 line {s}" for s in range(2_500)]
    assert fake.requests.count("v3.series") == 3  # pages of 1,000 points
    tail = nq.fetch_series(experiments="exp-0000", attributes="logs/", tail_limit=5, project="workspace/sandbox")
    assert list(tail.index.get_level_values("step")) == [2495.0, 2496.0, 2497.0, 2498.0, 2499.0]


def test_metric_buckets_first_and_last_points(fake):
    df = nq.fetch_metric_buckets(experiments="exp-alpha", y="metrics/loss", limit=5, project=P)
    column = df[("exp-alpha", "metrics/loss")]
    assert len(column) == 5
    assert (column["x"].iloc[0], column["y"].iloc[0]) == (0.0, 1.0)
    assert (column["x"].iloc[-1], column["y"].iloc[-1]) == (99.0, 1 / 100)


def test_download_files_bytes_exact(fake, tmp_path: Path):
    project = fake.workspace.project(P)
    table = nq.fetch_experiments_table(experiments="exp-alpha", attributes="^files/", project=P)
    result = nq.download_files(files=table, destination=tmp_path)
    for path in ("files/model", "files/empty", "files/big"):
        blob = project.files[run_of(fake, "run-basic").attributes[path].value]
        written = Path(result.loc["exp-alpha", path].iloc[0])
        assert hashlib.sha256(written.read_bytes()).digest() == hashlib.sha256(blob.read()).digest(), path
    series = nq.fetch_series(experiments="exp-alpha", attributes="images/samples", project=P)
    downloaded = nq.download_files(files=series, destination=tmp_path / "s")
    assert sorted(Path(p).read_bytes() for p in downloaded["images/samples"]) == [
        b"\x89PNG-000",
        b"\x89PNG-111",
        b"\x89PNG-222",
    ]


def test_runs_variants(fake, tmp_path: Path):
    assert list(nqr.fetch_series(runs=["run-basic"], attributes="logs/stdout", project=P)["logs/stdout"])[:2] == [
        "start",
        "ünïcödé line",
    ]
    assert nqr.list_attributes(runs=["run-parent"], attributes=AttributeFilter(type="float_series"), project=P) == [
        "metrics/loss"
    ]
    buckets = nq.fetch_metric_buckets(experiments="exp-fork", y="metrics/loss", limit=3, project=P)
    column = buckets[("exp-fork", "metrics/loss")]["y"]
    assert (column.iloc[0], column.iloc[-1]) == (10.0, 109.0)  # lineage to the root by default
    table = nqr.fetch_runs_table(runs=["run-basic"], attributes="files/model", project=P)
    out = nqr.download_files(files=table, destination=tmp_path)
    assert Path(out.iloc[0, 0]).read_bytes() == bytes(range(256)) * 4


def test_global_tables(fake):
    from neptune_query.experimental import fetch_experiments_table_global, fetch_runs_table_global

    runs = fetch_runs_table_global(runs=r"^run-(basic|gamma)$", attributes=[])
    assert sorted(runs.index.get_level_values(-1)) == ["run-basic", "run-gamma"]
    experiments = fetch_experiments_table_global(experiments="exp-beta", attributes=[])
    assert list(experiments.index.get_level_values(-1)) == ["exp-beta"]


# ---------------------------------------------------------------------------- errors
def test_unknown_project_is_inaccessible(fake):
    with pytest.raises(NeptuneProjectInaccessible):
        nq.list_experiments(project="workspace/nope")


def test_bad_query_is_a_readable_400(fake):
    with pytest.raises(Exception, match="invalid regex"):
        nq.list_experiments(experiments=Filter.matches("sys/name", "(unclosed"), project=P)


def test_bad_token_rejected(fake_factory, use_neptune_query):
    fake = fake_factory()
    good = fake.api_token
    fake.auth.api_key = "rotated"
    nq.set_api_token(good)
    with pytest.raises(Exception, match="(?i)api.?(key|token)"):
        nq.list_experiments(project=P)


# ---------------------------------------------------------------------------- faults and live changes
def _fetch_loss(fake) -> list[float]:
    return list(nq.fetch_metrics(experiments="exp-alpha", attributes="metrics/loss", project=P)["metrics/loss"])


def test_rate_limits_retried_with_retry_after(fake_factory, use_neptune_query, monkeypatch):
    monkeypatch.setenv("NEPTUNE_QUERY_RETRY_SOFT_TIMEOUT", "30")
    fake = fake_factory(faults=FaultConfig(rate_limit_share=0.6, retry_after_s=0, seed=3))
    use_neptune_query(fake)
    assert _fetch_loss(fake) == [1.0 / (1 + i) for i in range(100)]
    assert fake.requests.count(status=429) > 0
    # Retry-After honoured: the client's retry loop sleeps exactly the header's value after each 429 (a spy on its
    # clock, not a wall-time gap between server log lines, which interleave under load)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    monkeypatch.setattr(nq_retry, "time", SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    limiting = fake_factory(faults=FaultConfig(rate_limit_share=1.0, retry_after_s=1, endpoints="v3.search"))
    use_neptune_query(limiting)
    threading.Timer(1.5, limiting.faults.clear).start()
    assert nq.list_experiments(project=P)[0] == "exp-alpha"
    searches = [
        (r.status, r.retry_after, round(r.at, 3)) for r in limiting.requests.records() if r.endpoint == "v3.search"
    ]
    limited = [s for s in searches if s[0] == 429]
    assert limited and all(retry_after == "1" for _, retry_after, _ in limited), searches
    assert slept == [1.0] * len(limited), (slept, searches)


def test_server_errors_and_resets_retried(fake_factory, use_neptune_query, monkeypatch):
    monkeypatch.setenv("NEPTUNE_QUERY_RETRY_SOFT_TIMEOUT", "60")
    fake = fake_factory(faults=FaultConfig(scripted=[500, "reset", 503]))
    use_neptune_query(fake)
    assert _fetch_loss(fake) == [1.0 / (1 + i) for i in range(100)]
    assert (fake.requests.count(status=500), fake.requests.count(status=503)) == (1, 1)
    assert sum(r.reset for r in fake.requests.records()) == 1
    fake.faults.update(error_share=0.2, reset_share=0.2, seed=11)
    assert _fetch_loss(fake) == [1.0 / (1 + i) for i in range(100)]


def test_short_lived_tokens_are_refreshed(fake_factory, use_neptune_query):
    fake = fake_factory(faults=FaultConfig(token_ttl_s=1))
    use_neptune_query(fake)
    assert _fetch_loss(fake)[-1] == 1.0 / 100
    assert fake.requests.count("auth.refresh") > 0
    assert fake.requests.count(status=401) == 0


def test_live_mutation_visible(fake_factory, use_neptune_query):
    fake = fake_factory()
    use_neptune_query(fake)
    before = run_of(fake, "run-basic").get("sys/modification_time")
    fake.append_points(P, "run-basic", "metrics/loss", [100.0, 101.5], [0.5, 0.25], [1, 2])
    fake.set_attribute(P, "run-basic", "params/float", store.FLOAT, 0.2)
    fake.add_run(P, custom_run_id="run-new", experiment="exp-new", attributes={"params/lr": (store.FLOAT, 1.0)})
    assert _fetch_loss(fake)[-2:] == [0.5, 0.25]
    assert nq.fetch_experiments_table(experiments="exp-alpha", attributes="params/float", project=P).iloc[0, 0] == 0.2
    assert "exp-new" in nq.list_experiments(project=P)
    assert run_of(fake, "run-basic").get("sys/modification_time") > before
    assert fake.requests.count("v3.float_series", run="AWK-1") == 1


def test_bandwidth_cap_and_latency_keep_bytes_exact(fake_factory, use_neptune_query, tmp_path: Path):
    fake = fake_factory(faults=FaultConfig(latency_ms=5, latency_jitter_ms=5, bandwidth_bytes_per_s=30_000_000))
    use_neptune_query(fake)
    table = nq.fetch_experiments_table(experiments="exp-alpha", attributes="files/big", project=P)
    written = Path(nq.download_files(files=table, destination=tmp_path).iloc[0, 0])
    blob = fake.workspace.project(P).files[run_of(fake, "run-basic").get("files/big")]
    assert written.read_bytes() == blob.read()


def test_missing_blob_downloads_as_none_and_expired_url_is_400(fake_factory, use_neptune_query, tmp_path: Path):
    fake = fake_factory()
    use_neptune_query(fake)
    fake.set_attribute(P, "run-basic", "files/dangling", store.FILE, "no/such/blob")
    table = nq.fetch_experiments_table(experiments="exp-alpha", attributes="files/dangling", project=P)
    result = nq.download_files(files=table, destination=tmp_path)
    assert result.isna().all().all()
    assert fake.requests.count("storage.download", status=404) == 1
    fake.faults.update(signed_url_ttl_s=-1)
    signed = _post_json(
        fake,
        "/api/storagebridge/v1/signedUrl",
        {"files": [{"path": "x", "project_identifier": P, "permission": "read"}]},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(signed["files"][0]["url"])
    assert info.value.code == 400


def test_expired_access_token_is_401(fake_factory):
    fake = fake_factory(faults=FaultConfig(token_ttl_s=-1))
    with pytest.raises(urllib.error.HTTPError) as info:
        _post_json(fake, "/api/leaderboard/v1/proto/leaderboard/entries/search/?projectIdentifier=" + P, {})
    assert info.value.code == 401 and b"expired" in info.value.read()


def _post_json(fake, path: str, body: dict) -> dict:
    exchange = urllib.request.Request(
        fake.base_url + "/api/backend/v1/authorization/oauth-token", headers={"X-Neptune-Api-Token": fake.api_token}
    )
    token = json.load(urllib.request.urlopen(exchange))["accessToken"]
    request = urllib.request.Request(
        fake.base_url + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    return json.load(urllib.request.urlopen(request))


def test_subprocess_server_serves_and_dies_on_sigkill(use_neptune_query):
    with FakeNeptuneProcess(["--awkward", "--latency-ms", "1"]) as proc:
        nq.set_api_token(proc.api_token)
        assert "exp-alpha" in nq.list_experiments(project=P)
        assert proc.request_summary()["by_endpoint"]["v3.search"] >= 1
        proc.kill()
        assert proc.process.returncode == -9

"""Settings: every default as documented in the README, and each NEPTUNE_EXPORTER_* override."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from neptune_exporter.settings import ENV_PREFIX, RetryPolicy, Settings, default_projects, neptune_api_token

DEFAULTS = {
    "data_path": Path("./exports/data"),
    "files_path": Path("./exports/files"),
    "workers": 4,
    "series_batch_rows": 200_000,
    "series_points_in_flight": 200_000,
    "part_target_bytes": 50 * 1024 * 1024,
    "attributes_per_request": 500,
    "runs_per_task_batch": 500,
    "chunk_lost_after_s": 120,
    "dead_run_after_s": 0,
    "source_retry_timeout_s": 60,
}
OVERRIDES = {  # env value → parsed value
    "data_path": ("/srv/export/data", Path("/srv/export/data")),
    "files_path": ("rel/files", Path("rel/files")),
    "workers": ("9", 9),
    "series_batch_rows": ("2500", 2500),
    "series_points_in_flight": ("800000", 800_000),
    "part_target_bytes": ("1048576", 1_048_576),
    "attributes_per_request": ("50", 50),
    "runs_per_task_batch": ("20", 20),
    "chunk_lost_after_s": ("30", 30),
    "dead_run_after_s": ("600", 600),
    "source_retry_timeout_s": ("7", 7),
}
RETRY_OVERRIDES = {
    "RETRY_ATTEMPTS": ("attempts", "2", 2),
    "RETRY_BACKOFF_SECONDS": ("backoff_seconds", "0.25", 0.25),
    "RETRY_BACKOFF_MAX_SECONDS": ("backoff_max_seconds", "3.5", 3.5),
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in [ENV_PREFIX + f.name.upper() for f in fields(Settings)] + [ENV_PREFIX + n for n in RETRY_OVERRIDES]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    monkeypatch.delenv("NEPTUNE_PROJECT", raising=False)


def test_every_field_has_a_tested_default_and_an_override():
    assert {f.name for f in fields(Settings)} - {"retry"} == set(DEFAULTS) == set(OVERRIDES)


def test_defaults_without_environment():
    settings = Settings.from_env()
    assert {name: getattr(settings, name) for name in DEFAULTS} == DEFAULTS
    assert settings == Settings()
    assert settings.retry == RetryPolicy(attempts=5, backoff_seconds=1.0, backoff_max_seconds=60.0)


def test_runs_at_once_share_the_points_in_flight():
    """A series request asks for the process's in-flight budget over the runs it reads at once, within bounds."""
    assert Settings().for_runs_at_once(1).series_batch_rows == 200_000  # one run: the whole budget
    assert Settings().for_runs_at_once(4).series_batch_rows == 50_000
    assert Settings().for_runs_at_once(64).series_batch_rows == 10_000  # never below MIN_SERIES_REQUEST_ROWS
    assert Settings(series_batch_rows=7).for_runs_at_once(4).series_batch_rows == 7  # an explicit cap stays
    wide = Settings(series_points_in_flight=800_000).for_runs_at_once(2)
    assert wide.series_batch_rows == 200_000 and wide.series_points_in_flight == 800_000


def test_retry_delays_double_up_to_the_cap():
    assert RetryPolicy().delays() == [1.0, 2.0, 4.0, 8.0]
    assert RetryPolicy(attempts=9, backoff_seconds=10, backoff_max_seconds=60).delays() == [
        10,
        20,
        40,
        60,
        60,
        60,
        60,
        60,
    ]
    assert RetryPolicy(attempts=1).delays() == []


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_each_field_is_overridden_by_its_variable_alone(monkeypatch, name):
    raw, parsed = OVERRIDES[name]
    monkeypatch.setenv(ENV_PREFIX + name.upper(), raw)
    settings = Settings.from_env()
    assert getattr(settings, name) == parsed
    assert {n: getattr(settings, n) for n in DEFAULTS if n != name} == {n: v for n, v in DEFAULTS.items() if n != name}


@pytest.mark.parametrize("variable", sorted(RETRY_OVERRIDES))
def test_each_retry_field_is_overridden_by_its_variable(monkeypatch, variable):
    field_name, raw, parsed = RETRY_OVERRIDES[variable]
    monkeypatch.setenv(ENV_PREFIX + variable, raw)
    retry = Settings.from_env().retry
    assert getattr(retry, field_name) == parsed
    untouched = {f: getattr(RetryPolicy(), f) for f, _, _ in RETRY_OVERRIDES.values() if f != field_name}
    assert {f: getattr(retry, f) for f in untouched} == untouched


def test_an_empty_variable_means_the_default(monkeypatch):
    monkeypatch.setenv(ENV_PREFIX + "WORKERS", "")
    monkeypatch.setenv(ENV_PREFIX + "RETRY_ATTEMPTS", "")
    settings = Settings.from_env()
    assert settings.workers == 4 and settings.retry.attempts == 5


def test_token_and_projects_come_from_the_neptune_variables(monkeypatch):
    assert neptune_api_token() is None and default_projects() == []
    monkeypatch.setenv("NEPTUNE_API_TOKEN", "env-token")
    monkeypatch.setenv("NEPTUNE_PROJECT", "ws/p")
    assert neptune_api_token() == "env-token" and neptune_api_token("explicit") == "explicit"
    assert default_projects() == ["ws/p"]


def test_readme_documents_every_variable_with_its_default():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    table = [line.split("|") for line in readme.splitlines() if line.startswith(f"| `{ENV_PREFIX}")]
    rows = [cells[1:3] for cells in table if len(cells) == 5]  # | variable | default | meaning |
    documented = {name.strip(" `"): default.strip().split()[0].strip("`") for name, default in rows}
    expected = {ENV_PREFIX + name.upper(): str(value) for name, value in DEFAULTS.items()}
    expected["NEPTUNE_EXPORTER_DATA_PATH"], expected["NEPTUNE_EXPORTER_FILES_PATH"] = (
        "./exports/data",
        "./exports/files",
    )
    retry = RetryPolicy()
    expected.update(
        {
            ENV_PREFIX + variable: str(getattr(retry, field_name))
            for variable, (field_name, _, _) in RETRY_OVERRIDES.items()
        }
    )
    assert documented == expected

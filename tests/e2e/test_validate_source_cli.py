"""`neptune-exporter validate --against neptune3|neptune2` through the real CLI, a real Prefect server and the fake
Neptune server: exit 0 and "no differences" on a clean export, exit 1 naming the difference after a changed atom
(with --deep: every point and file re-read), exit 2 in one line on a bad source name."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neptune_exporter.fake_neptune import FakeNeptune
from neptune_exporter.storage.parquet import run_part_paths
from tests.e2e.conftest import cli_env, run_cli
from tests.integration.test_source_audit import PROJECT, RUN, SOURCES, export, last_row_of, workspace

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("source", SOURCES)
def test_validate_against_the_source_through_the_cli(source, prefect_server, tmp_path, monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    with FakeNeptune(workspace(), port=0) as fake:
        export(source, fake, tmp_path / "out")
        env = cli_env({**fake.env(PROJECT), "PREFECT_API_URL": prefect_server.api_url}, tmp_path / "prefect-home")
        args = ["validate", "--against", source, "-p", PROJECT, "-d", "out/data", "-f", "out/files"]
        clean = run_cli(args, env, tmp_path)
        assert clean.returncode == 0, clean.stderr
        assert f"validation against the {source} server: 3 run(s) checked, no differences" in clean.stdout
        for part in run_part_paths(tmp_path / "out" / "data", PROJECT, RUN[source]):
            table = pq.read_table(part)
            values = table["string_value"].to_pylist()
            values[last_row_of(table, "params/p002")] = "edited"
            pq.write_table(
                table.set_column(table.schema.get_field_index("string_value"), "string_value", pa.array(values)), part
            )
        assert (
            "not compared: single files: size only (the server reports no hash); use --deep for content" in clean.stdout
        )
        changed = run_cli([*args, "--deep"], env, tmp_path)  # every point and file re-read: only the atom differs
    assert changed.returncode == 1, changed.stderr
    assert "1 difference(s) in 1 run(s)" in changed.stdout
    report = json.loads((tmp_path / "out" / "reports" / f"validation_source_{source}.json").read_text())
    assert [
        (d["run_id"], d["key"], d["problem"], d["expected"], d["actual"])
        for r in report["runs"]
        for d in r["differences"]
    ] == [(RUN[source], "params/p002", "value", "value-1-2", "edited")]


def test_an_unknown_source_is_refused_in_one_line(prefect_server, tmp_path):
    (tmp_path / "out" / "data").mkdir(parents=True)
    env = cli_env({"PREFECT_API_URL": prefect_server.api_url}, tmp_path / "prefect-home")
    result = run_cli(["validate", "--against", "neptune9", "-p", PROJECT, "-d", "out/data"], env, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: unknown source 'neptune9' — fix: use one of: neptune2, neptune3"

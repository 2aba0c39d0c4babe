"""Pure benchmark helpers: summary lines, statistics, interleaving, child peak RSS, workspace shapes."""

from __future__ import annotations

import sys

import pytest

from bench.common import (
    ChildResult,
    Shape,
    alternate,
    format_value,
    median,
    run_child,
    rusage_peak_bytes,
    safe_ratio,
    summary_line,
)
from bench.run_all import figure_lines


def test_summary_line_has_name_value_unit_and_target():
    assert (
        summary_line("export_vs_floor.ratio", 1.2345, "x", "<= 1.3") == "export_vs_floor.ratio: 1.23 x (target <= 1.3)"
    )
    assert summary_line("load.rate", 151234.6, "points/s") == "load.rate: 151,235 points/s"


@pytest.mark.parametrize(
    "value, text",
    [(0, "0"), (0.01234, "0.0123"), (12.345, "12.3"), (1234.5, "1,234"), (-2.5, "-2.5"), (float("nan"), "n/a")],
)
def test_format_value(value, text):
    assert format_value(value) == text


def test_median_and_ratio():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([1.0, 2.0, 3.0, 10.0]) == 2.5
    assert safe_ratio(3.0, 2.0) == 1.5
    assert safe_ratio(1.0, 0.0) != safe_ratio(1.0, 0.0)  # NaN, never a ZeroDivisionError
    with pytest.raises(ValueError):
        median([])


def test_alternate_interleaves_sides_and_reverses_every_other_repeat():
    calls: list[tuple[str, int]] = []
    seconds = alternate({"a": lambda r: calls.append(("a", r)), "b": lambda r: calls.append(("b", r))}, 3)
    assert calls == [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)]
    assert {name: len(values) for name, values in seconds.items()} == {"a": 3, "b": 3}
    assert all(value >= 0 for values in seconds.values() for value in values)


def test_alternate_takes_the_seconds_a_side_reports_over_its_wall_time():
    seconds = alternate({"child": lambda r: 100.0 + r, "plain": lambda r: None}, 2)
    assert seconds["child"] == [100.0, 101.0]
    assert all(0 <= value < 1 for value in seconds["plain"])


def test_rusage_units_are_bytes():
    expected = 2048 if sys.platform == "darwin" else 2048 * 1024
    assert rusage_peak_bytes(2048) == expected


def test_run_child_reports_the_childs_own_peak_rss_and_output():
    code = "b = bytearray(120 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('{\"ok\": 1}')"
    result = run_child([sys.executable, "-c", code])
    assert result.returncode == 0
    assert result.peak_rss_bytes >= 120 * 1024 * 1024
    assert result.json() == {"ok": 1}
    assert result.wall_s > 0


def test_failed_child_json_raises_with_its_stderr():
    result = run_child([sys.executable, "-c", "import sys; sys.exit('broken on purpose')"])
    assert result.returncode == 1
    with pytest.raises(RuntimeError, match="broken on purpose"):
        result.json()
    assert ChildResult(0, 1.0, 0, 'noise\n{"a": 2}\n', "").json() == {"a": 2}


def test_shape_sizes_and_serve_arguments():
    shape = Shape(runs=3, metrics=4, points=500, params=7, files=2, file_size=10, project="p")
    assert shape.float_points == 6000
    assert shape.project_id == "workspace/p"
    args = shape.serve_args()
    assert args[0] == "--generate"
    pairs = dict(zip(args[1::2], args[2::2], strict=True))
    assert pairs == {
        "--runs": "3",
        "--experiments": "2",
        "--params": "7",
        "--metrics": "4",
        "--points": "500",
        "--string-series": "0",
        "--histograms": "0",
        "--files": "2",
        "--file-size": "10",
        "--project": "p",
    }


def test_run_all_keeps_only_summary_lines():
    output = (
        "  detail: not a figure\nscaling.seconds_per_run_at_10: 0.3 s/run\n\n== x\nplain text\n"
        "\U0001f3c3 View run run-1 at: http://127.0.0.1:5000/#/runs/1\nmachine: 2 cores\n"
    )
    assert figure_lines(output) == ["scaling.seconds_per_run_at_10: 0.3 s/run", "machine: 2 cores"]


def test_repeats_default_to_the_quick_or_full_count_unless_given():
    from bench.common import bench_arguments, parse_bench_args

    parser = bench_arguments("doc", "quick help", repeats=3, quick_repeats=1)
    assert parse_bench_args(parser, []).repeats == 3
    assert parse_bench_args(parser, ["--quick"]).repeats == 1
    assert parse_bench_args(parser, ["--quick", "--repeats", "5"]).repeats == 5
    assert parse_bench_args(parser, []).latency_ms == 20.0
    assert not hasattr(parse_bench_args(bench_arguments("d", "q", latency_ms=None), []), "latency_ms")


def test_vs_peer_without_the_other_tool_says_how_to_get_it_and_measures_nothing(capsys, monkeypatch):
    from bench import vs_peer

    monkeypatch.delenv("NEPTUNE_EXPORTER_PEER", raising=False)
    assert vs_peer.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("vs_peer (nothing measured): give --peer PATH")
    assert "git clone https://github.com/neptune-ai/neptune-exporter" in out
    assert figure_lines(out) == []  # `make bench` lists no figure for it


def test_vs_peer_counts_rows_less_the_paths_only_one_tool_writes(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.vs_peer import parquet_rows

    (tmp_path / "p").mkdir()
    paths = ["sys/state", "params/a", "metrics/m", "metrics/m", "sys/state"]
    pq.write_table(pa.table({"attribute_path": paths}), tmp_path / "p" / "part_0.parquet")
    pq.write_table(pa.table({"attribute_path": ["params/b"]}), tmp_path / "part_0.parquet")
    assert parquet_rows(tmp_path) == 6
    assert parquet_rows(tmp_path, {"sys/state"}) == 4

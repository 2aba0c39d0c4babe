"""W&B comparison helpers: order-free history digests, config value normalisation, artifact digests."""

from __future__ import annotations

import base64
import hashlib

from neptune_exporter.validation.wandb_compare import HistoryDigest, comparable, histogram_number, md5_base64


def _rows():
    return [
        {"_step": 0, "_timestamp": 1.5, "a": 1.0, "h": {"_type": "histogram", "values": [1, 2], "bins": [0, 1, 2]}},
        {"_step": 3, "_timestamp": 2.0, "a": float("nan"), "b": float("inf")},
        {"_step": 7, "a": -0.0},
    ]


def test_history_digest_is_order_free_and_exact():
    forward = HistoryDigest(flush_points=2).add_rows(_rows())
    backward = HistoryDigest().add_rows(reversed(_rows()))
    assert {k: d.to_json() for k, d in forward.series.items()} == {k: d.to_json() for k, d in backward.series.items()}
    assert forward.rows.to_json() == backward.rows.to_json() and forward.rows.count == 3
    changed = _rows()
    changed[1]["_timestamp"] = 2.001
    assert HistoryDigest().add_rows(changed).series["a"].digest != forward.series["a"].digest


def test_logged_rows_and_read_rows_digest_alike():
    class Hist:  # what wandb.Histogram exposes
        histogram, bins = [1, 2], [0.0, 1.0, 2.0]

    logged = HistoryDigest()
    logged.log({"a": 1.0, "h": Hist(), "_timestamp": 1.5}, step=0)
    read = HistoryDigest().add_rows(_rows()[:1])
    logged.flush()
    assert logged.series["h"].digest == read.series["h"].digest and logged.series["a"].digest == read.series["a"].digest


def test_histograms_hash_by_value_not_by_json_spelling():
    assert histogram_number({"values": [1, 2], "bins": [0, 1, 2]}) == histogram_number(
        {"values": [1.0, 2.0], "bins": [0.0, 1.0, 2.0]}
    )
    assert histogram_number({"values": [1, 2], "bins": [0, 1, 2]}) != histogram_number(
        {"values": [2, 1], "bins": [0, 1, 2]}
    )


def test_config_values_compare_with_nan_equal_to_itself():
    assert comparable({"x": float("nan"), "y": [1, float("nan")]}) == comparable(
        {"x": float("nan"), "y": [1, float("nan")]}
    )


def test_md5_base64_matches_wandb_entry_digests(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"hello")
    assert md5_base64(path) == base64.b64encode(hashlib.md5(b"hello").digest()).decode() == "XUFAKrxLKna5cZ2REBfFkg=="

"""Unit tests of the Neptune 2.x source's pure parts: structure flattening, types, NQL, ids, paths, errors."""

from __future__ import annotations

import base64
import json
import os
import zipfile
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import pytest
from neptune import exceptions as ne
from neptune.common import exceptions as ce
from oauthlib.oauth2.rfc6749.errors import InsecureTransportError

from neptune_exporter.errors import (
    InvalidOptionError,
    InvalidQueryError,
    InvalidTokenError,
    ProjectNotFoundError,
    RateLimitedError,
    SourceUnavailableError,
    TerminalError,
    UnsupportedError,
)
from neptune_exporter.exporters import neptune2 as n2
from neptune_exporter.exporters.base import AttributeSelection
from neptune_exporter.model import AttributeKind, AttributeType, RunRef
from neptune_exporter.settings import RetryPolicy, Settings
from neptune_exporter.storage.files import safe_relative, unpack_zip

REPORTED = [  # (path, 2.x type name) as the server reports a run's attributes
    ("params/lr", "float"),
    ("params/bs", "int"),
    ("params/opt/name", "string"),
    ("sys/id", "string"),
    ("sys/tags", "stringSet"),
    ("sys/state", "experimentState"),
    ("sys/creation_time", "datetime"),
    ("source_code/git", "gitRef"),
    ("source_code/files", "fileSet"),
    ("metrics/loss", "floatSeries"),
    ("monitoring/stdout", "stringSeries"),
    ("images", "imageSeries"),
    ("model", "file"),
    ("data", "artifact"),
    ("nb", "notebookRef"),
    ("flag", "bool"),
]


def structure():
    return [(path, type_name, None) for path, type_name in REPORTED]


def test_source_attributes_map_every_2x_type():
    types = {a.path: (a.neptune_type, a.attribute_type) for a in n2.source_attributes(structure())}
    assert types == {
        "params/lr": ("float", AttributeType.FLOAT),
        "params/bs": ("int", AttributeType.INT),
        "params/opt/name": ("string", AttributeType.STRING),
        "sys/id": ("string", AttributeType.STRING),
        "sys/tags": ("stringSet", AttributeType.STRING_SET),
        "sys/state": ("experimentState", AttributeType.STRING),
        "sys/creation_time": ("datetime", AttributeType.DATETIME),
        "source_code/git": ("gitRef", AttributeType.STRING),
        "source_code/files": ("fileSet", AttributeType.FILE_SET),
        "metrics/loss": ("floatSeries", AttributeType.FLOAT_SERIES),
        "monitoring/stdout": ("stringSeries", AttributeType.STRING_SERIES),
        "images": ("imageSeries", AttributeType.FILE_SERIES),
        "model": ("file", AttributeType.FILE),
        "data": ("artifact", AttributeType.ARTIFACT),
        "nb": ("notebookRef", AttributeType.STRING),
        "flag": ("bool", AttributeType.BOOL),
    }


def test_unknown_attribute_types_are_left_out():
    found = n2.source_attributes([("odd", "complexSeries", None), ("x", "float", None)])
    assert [a.path for a in found] == ["x"]


def test_select_attributes_by_kind_and_regex():
    found = n2.source_attributes(structure())
    metrics_only = AttributeSelection(include_kinds=frozenset({AttributeKind.METRICS}))
    assert [a.path for a in n2.select_attributes(found, metrics_only)] == ["metrics/loss"]
    no_files = AttributeSelection(regex="^params/", exclude_kinds=frozenset({AttributeKind.FILES}))
    assert [a.path for a in n2.select_attributes(found, no_files)] == ["params/lr", "params/bs", "params/opt/name"]
    named = AttributeSelection(names=("model", "flag"))
    assert [a.path for a in n2.select_attributes(found, named)] == ["model", "flag"]


def test_combine_nql_ands_parenthesised_clauses():
    assert n2.combine_nql(None, "", "  ") is None
    assert n2.combine_nql("a", None) == "a"
    assert n2.combine_nql("a OR b", "c") == "(a OR b) AND (c)"


def test_nql_datetime_is_utc_milliseconds():
    aware = datetime(2024, 3, 4, 5, 6, 7, 891234, tzinfo=UTC)
    assert n2.nql_datetime(aware) == "2024-03-04T05:06:07.891Z"
    assert n2.nql_datetime(datetime(2024, 3, 4, 5, 6, 7)) == "2024-03-04T05:06:07.000Z"
    assert n2.modified_after_nql(aware) == '`sys/modification_time`:datetime > "2024-03-04T05:06:07.891Z"'
    assert n2.modified_after_nql(None) is None


def test_where_is_translated_by_the_shared_language():
    nql = n2.where_nql('params/lr > 0.05 and sys/tags contains "best"')
    assert "params/lr" in nql and "sys/tags" in nql and "AND" in nql.upper()
    assert n2.where_nql(None) is None


def test_where_syntax_errors_are_invalid_query_errors():
    with pytest.raises(InvalidQueryError):
        n2.where_nql("params/lr >")


def ref(sys_id, custom=None):
    return RunRef(project_id="ws/p", run_id=sys_id, sys_id=sys_id, custom_run_id=custom, source_kind="neptune2")


def test_run_matches_regex_on_sys_id_and_custom_id():
    import re

    assert n2.run_matches(ref("P-1", "alpha"), re.compile("^alp"), ())
    assert n2.run_matches(ref("P-12"), re.compile("P-1"), ())
    assert not n2.run_matches(ref("P-2", "beta"), re.compile("alpha"), ())
    assert n2.run_matches(ref("P-3", "c"), None, ("c",))
    assert not n2.run_matches(ref("P-3", "c"), None, ("P-4",))


def test_token_server_reads_api_address():
    token = base64.b64encode(json.dumps({"api_address": "http://h:1", "api_key": "k"}).encode()).decode()
    assert n2.token_server(token) == "http://h:1"
    assert n2.token_server("not-a-token!") == ""
    assert n2.token_server(None) == ""


def test_safe_relative_keeps_paths_inside():
    assert safe_relative("a/b/c.txt").as_posix() == "a/b/c.txt"
    assert ".." not in safe_relative("../../etc/passwd").parts
    assert safe_relative("a//b").as_posix() == "a/_/b"


def test_unpack_zip_lists_every_file_and_refuses_escapes(tmp_path):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("a.txt", b"A")
        zipped.writestr("sub/b.bin", b"\x00\x01")
        zipped.writestr("sub/", b"")
    written = unpack_zip(archive, tmp_path / "out")
    assert [p.relative_to((tmp_path / "out").resolve()).as_posix() for p in written] == ["a.txt", "sub/b.bin"]
    assert (tmp_path / "out" / "sub" / "b.bin").read_bytes() == b"\x00\x01"
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zipped:
        zipped.writestr("../escape.txt", b"x")
    with pytest.raises(TerminalError):
        unpack_zip(evil, tmp_path / "out2")
    assert not (tmp_path / "escape.txt").exists()


def test_points_to_arrays_keeps_exact_values_and_fills_missing_steps():
    points = [
        SimpleNamespace(step=0.5, value=1.25, timestampMillis=1000),
        SimpleNamespace(step=None, value=2.5, timestampMillis=2000),
    ]
    steps, values, timestamps = n2.points_to_arrays(points, first_index=7)
    assert steps.tolist() == [0.5, 8.0]
    assert values == [1.25, 2.5]
    assert timestamps.dtype == np.int64 and timestamps.tolist() == [1000, 2000]


def test_client_retry_timeout_comes_from_settings():
    n2.configure_client(Settings(source_retry_timeout_s=14))
    import neptune.common.backends.utils as client_retries

    assert client_retries.retries_timeout == 14 and os.environ["NEPTUNE_RETRIES_TIMEOUT"] == "14"


def test_retrying_retries_transient_errors_only():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ce.NeptuneConnectionLostException(ConnectionError("down"))
        return "ok"

    settings = Settings(retry=RetryPolicy(attempts=3, backoff_seconds=0.01))
    assert n2.retrying(flaky, settings) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(ProjectNotFoundError):
        n2.retrying(lambda: calls.append(1) or (_ for _ in ()).throw(ne.ProjectNotFound("ws/p")), settings)
    assert len(calls) == 1


@pytest.mark.parametrize(
    "error, expected",
    [
        (ce.NeptuneInvalidApiTokenException(), InvalidTokenError),
        (ce.Unauthorized(), InvalidTokenError),
        (ne.ProjectNotFound("ws/p"), ProjectNotFoundError),
        (ce.Forbidden(), ProjectNotFoundError),
        (ne.NeptuneInvalidQueryException("bad"), InvalidQueryError),
        (ce.NeptuneConnectionLostException(ConnectionError("x")), SourceUnavailableError),
        (ConnectionResetError("reset"), SourceUnavailableError),
        (ne.FetchAttributeNotFoundException("a/b"), TerminalError),
        (InsecureTransportError(), InvalidOptionError),
        (ne.NeptuneLegacyProjectException("ws/p"), UnsupportedError),
    ],
)
def test_client_errors_become_typed_errors_with_run_and_attribute(error, expected):
    mapped = n2.typed_error(error, run="P-1", attribute="a/b", project="ws/p")
    assert type(mapped) is expected
    assert mapped.run == "P-1" and mapped.attribute == "a/b" and mapped.remedy


def test_rate_limit_exhaustion_is_a_rate_limited_error():
    from bravado.exception import HTTPTooManyRequests

    cause = HTTPTooManyRequests(SimpleNamespace(status_code=429, text="", reason="", headers={}))
    lost = ce.NeptuneConnectionLostException(cause)
    lost.__cause__ = cause
    mapped = n2.typed_error(lost)
    assert isinstance(mapped, RateLimitedError) and mapped.transient


def test_exact_page_fills_pages_the_server_caps():
    data = [SimpleNamespace(step=float(i), value=i, timestampMillis=i) for i in range(2_500)]
    calls = []

    def capped_fetch(offset, limit):
        calls.append((offset, limit))
        return SimpleNamespace(values=data[offset : offset + min(limit, 300)], totalItemCount=len(data))

    read = n2.client_pages(SimpleNamespace(_fetch_values_from_backend=capped_fetch))
    page = n2.exact_page(read, 1_000, 1_000)
    assert page.steps.tolist() == [float(i) for i in range(1_000, 2_000)] and page.values == list(range(1_000, 2_000))
    assert page.timestamps.tolist() == list(range(1_000, 2_000)) and page.total == 2_500
    assert calls[:2] == [(1_000, 1_000), (1_300, 700)]
    assert n2.exact_page(read, 2_400, 1_000).steps.tolist() == [float(i) for i in range(2_400, 2_500)]
    assert len(n2.exact_page(read, 2_500, 1_000)) == 0


def test_a_float_page_read_from_the_json_answer_equals_the_clients_points():
    """The export's float pages skip the client's point objects: the same steps, values and timestamps (a missing
    step is the point's index, a missing value NaN, NaN / ±inf whether numbers or strings)."""
    body = {
        "totalItemCount": 9,
        "values": [
            {"step": 0.1, "value": 1.5, "timestampMillis": 1_000},
            {"step": None, "value": float("nan"), "timestampMillis": 1_001},
            {"value": "Infinity", "timestampMillis": 1_002},
            {"step": 0.29, "value": "-Infinity", "timestampMillis": 1_003},
            {"step": 3.0, "value": None, "timestampMillis": 1_004},
            {"step": 4.0, "value": 2**53 + 1, "timestampMillis": 2**42},
        ],
    }
    page = n2.float_page_of(body, offset=40)
    points = [
        SimpleNamespace(step=p.get("step"), value=p.get("value"), timestampMillis=p["timestampMillis"])
        for p in body["values"]
    ]
    steps, values, timestamps = n2.points_to_arrays(points, first_index=40)
    assert page.total == 9 and page.steps.tolist() == steps.tolist() == [0.1, 41.0, 42.0, 0.29, 3.0, 4.0]
    assert page.timestamps.tolist() == timestamps.tolist() and page.timestamps.dtype == np.int64
    assert page.values.dtype == np.float64
    np.testing.assert_array_equal(page.values, np.asarray(values, dtype=np.float64))
    assert len(n2.float_page_of({"totalItemCount": 0, "values": []}, 0)) == 0


def test_the_clients_connection_pool_is_sized_to_the_workers():
    from neptune.internal.backends.hosted_client import create_http_client

    from neptune_exporter.exporters.neptune2 import configure_client, connection_pool_size

    settings = Settings(workers=3)
    configure_client(settings, runs_at_once=4)
    session = create_http_client(ssl_verify=True, proxies={}).session
    sizes = {
        prefix: session.get_adapter(prefix + "server").poolmanager.connection_pool_kw["maxsize"]
        for prefix in ("http://", "https://")
    }
    assert connection_pool_size(settings, 4) == 4 * 2 * 3 + 2
    assert sizes == {"http://": 26, "https://": 26}


def test_client_messages_lose_their_terminal_colour_codes():
    error = n2.typed_error(ne.FetchAttributeNotFoundException("a//b"), run="R-1", attribute="a//b")
    assert error.message == "the attribute could not be read: The field a//b was not found."
    coloured = TerminalError("x \x1b[95mred\x1b[0m \x1b]8;;http://x\x07link\x1b]8;;\x07", "fix \x1b[1mit\x1b[0m")
    assert (coloured.message, coloured.remedy) == ("x red link", "fix it")

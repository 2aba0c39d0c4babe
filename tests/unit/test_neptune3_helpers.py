"""Neptune3Source helpers: token checks, error mapping, frame → arrays, run listing rows, file naming."""

import base64
import json
import os
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from neptune_query import exceptions as nqe
from neptune_query.internal import identifiers
from neptune_query.internal.output_format import create_metrics_dataframe, create_series_dataframe
from neptune_query.internal.retrieval.series import SeriesValue

from neptune_exporter.errors import (
    InvalidQueryError,
    InvalidRegexError,
    InvalidTokenError,
    ProjectNotFoundError,
    RateLimitedError,
    SourceUnavailableError,
    UnsupportedError,
)
from neptune_exporter.exporters.base import RunSelection
from neptune_exporter.exporters.neptune3 import (
    Neptune3Source,
    build_run_filter,
    collision_free_groups,
    neptune_errors,
    run_selected,
    runs_from_table,
    server_of_token,
    split_series_frame,
    translate_error,
)
from neptune_exporter.settings import Settings
from neptune_exporter.storage.files import disk_part, file_leaf

PROJECT = identifiers.ProjectIdentifier("ws/p")
RUN = identifiers.RunIdentifier(project_identifier=PROJECT, sys_id=identifiers.SysId("P-1"))


def token(payload: dict) -> str:
    return base64.b64encode(json.dumps(payload).encode()).decode()


def definition(name: str, type_name: str):
    return identifiers.RunAttributeDefinition(
        run_identifier=RUN, attribute_definition=identifiers.AttributeDefinition(name=name, type=type_name)
    )


def test_token_server_and_malformed_tokens():
    assert server_of_token(token({"api_url": "http://127.0.0.1:5/", "api_key": "k"})) == "http://127.0.0.1:5"
    for bad in (None, "", "not-base64!", token({"api_key": "x"})):
        with pytest.raises(InvalidTokenError) as info:
            server_of_token(bad)
        assert info.value.remedy


def test_source_repr_hides_the_token(monkeypatch):
    secret = token({"api_url": "http://127.0.0.1:9", "api_key": "very-secret"})
    source = Neptune3Source(secret, Settings())
    assert "very-secret" not in repr(source) and secret not in repr(source)
    assert source.server == "http://127.0.0.1:9"


def test_list_projects_is_unsupported_with_a_remedy():
    with pytest.raises(UnsupportedError) as info:
        Neptune3Source(token({"api_url": "http://x"}), Settings()).list_projects("ws")
    assert "-p" in info.value.remedy


def test_neptune_query_retry_timeouts_come_from_settings(monkeypatch):
    from neptune_query.internal import env

    from neptune_exporter.exporters.neptune3 import configure_neptune_query

    monkeypatch.delenv("NEPTUNE_QUERY_RETRY_SOFT_TIMEOUT", raising=False)
    Neptune3Source(None, Settings(source_retry_timeout_s=7))
    assert "NEPTUNE_QUERY_RETRY_SOFT_TIMEOUT" not in os.environ  # a constructor configures nothing process-wide
    configure_neptune_query(Settings(source_retry_timeout_s=7))  # what the source runs before each client call
    assert env.NEPTUNE_QUERY_RETRY_SOFT_TIMEOUT.get() == 7
    assert env.NEPTUNE_QUERY_RETRY_HARD_TIMEOUT.get() == 14


@pytest.mark.parametrize(
    "exc, expected",
    [
        (nqe.NeptuneInvalidCredentialsError(), InvalidTokenError),
        (nqe.NeptuneApiTokenNotProvided(), InvalidTokenError),
        (nqe.NeptuneProjectInaccessible(), ProjectNotFoundError),
        (nqe.NeptuneRetryError(3, 1.0, 503, b"busy"), SourceUnavailableError),
        (nqe.NeptuneRetryError(3, 1.0, 429, b"slow"), RateLimitedError),
        (nqe.NeptuneUnexpectedResponseError(404, b"{}"), ProjectNotFoundError),
        (nqe.NeptuneUnexpectedResponseError(400, b"bad query"), InvalidQueryError),
        (nqe.AttributeTypeInferenceError(["a"]), InvalidQueryError),
        (ConnectionResetError("reset"), SourceUnavailableError),
    ],
)
def test_errors_are_typed_with_remedies(exc, expected):
    error = translate_error(exc, project="ws/p", query=True)
    assert isinstance(error, expected)
    assert error.remedy and "\x1b" not in error.message


def test_error_context_attaches_run_and_attribute():
    with pytest.raises(SourceUnavailableError) as info:
        with neptune_errors(project="ws/p", run="r-1", attribute="m/loss"):
            raise nqe.NeptuneRetryError(2, 1.0, 500, b"")
    assert (info.value.run, info.value.attribute) == ("r-1", "m/loss")
    assert info.value.transient


def test_float_series_frame_to_arrays_keeps_nan_inf_and_float_steps():
    data = {
        definition("m/a", "float_series"): [
            (1000, 0.1, 1.0, False, 1.0),
            (2000, 0.29, np.nan, False, 1.0),
            (3000, 1.0, np.inf, False, 1.0),
        ],
        definition("m/b", "float_series"): [(1500, 0.29, -np.inf, False, 1.0)],
    }
    frame = create_metrics_dataframe(
        data,
        {RUN.sys_id: "r"},
        type_suffix_in_column_names=False,
        include_point_previews=False,
        index_column_name="run",
        timestamp_column_name="absolute_time",
    )
    chunks = split_series_frame(frame)
    a, b = chunks["m/a"], chunks["m/b"]
    assert a.steps.tolist() == [0.1, 0.29, 1.0] and a.timestamps_ms.tolist() == [1000, 2000, 3000]
    assert a.values[0] == 1.0 and np.isnan(a.values[1]) and a.values[2] == np.inf
    assert b.steps.tolist() == [0.29] and b.values.tolist() == [-np.inf] and b.timestamps_ms.tolist() == [1500]


def test_string_series_frame_to_arrays():
    data = {definition("log", "string_series"): [SeriesValue(1.0, "żółw", 10), SeriesValue(2.5, "", 20)]}
    frame = create_series_dataframe(
        data, "ws/p", {RUN.sys_id: "r"}, index_column_name="run", timestamp_column_name="absolute_time"
    )
    chunk = split_series_frame(frame)["log"]
    assert (
        chunk.steps.tolist() == [1.0, 2.5]
        and list(chunk.values) == ["żółw", ""]
        and chunk.timestamps_ms.tolist() == [10, 20]
    )


def test_empty_frames_give_nothing():
    assert split_series_frame(pd.DataFrame()) == {}


def listing_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame.index = pd.Index([r.get("sys/custom_run_id:string", "") for r in rows], name="run")
    return frame


def test_runs_from_table_uses_custom_id_or_sys_id():
    created = pd.Timestamp("2024-01-01T00:00:00Z")
    frame = listing_frame(
        [
            {
                "sys/id:string": "P-1",
                "sys/custom_run_id:string": "run-a",
                "sys/name:string": "exp",
                "sys/creation_time:datetime": created,
                "sys/modification_time:datetime": created,
                "sys/trashed:bool": False,
            },
            {
                "sys/id:string": "P-2",
                "sys/custom_run_id:string": "",
                "sys/name:string": "",
                "sys/creation_time:datetime": created,
                "sys/modification_time:datetime": created,
                "sys/trashed:bool": True,
            },
        ]
    )
    first, second = runs_from_table("ws/p", frame)
    assert (first.run_id, first.custom_run_id, first.experiment_name, first.archived) == (
        "run-a",
        "run-a",
        "exp",
        False,
    )
    assert (second.run_id, second.custom_run_id, second.experiment_name, second.archived) == ("P-2", None, None, True)
    assert first.modification_time == datetime(2024, 1, 1, tzinfo=UTC)


def test_local_selection_checks():
    frame = listing_frame(
        [
            {
                "sys/id:string": "P-1",
                "sys/custom_run_id:string": "alpha",
                "sys/name:string": "exp-a",
                "sys/trashed:bool": False,
            },
            {"sys/id:string": "P-2", "sys/custom_run_id:string": "", "sys/name:string": "b", "sys/trashed:bool": True},
        ]
    )
    refs = list(runs_from_table("ws/p", frame))
    import re

    def kept(selection, runs=None, experiments=None):
        return [
            r.run_id
            for r in refs
            if run_selected(r, selection, runs and re.compile(runs), experiments and re.compile(experiments))
        ]

    assert kept(RunSelection()) == ["alpha"]
    assert kept(RunSelection(include_archived=True)) == ["alpha", "P-2"]
    assert kept(RunSelection(include_archived=True), runs="^P-") == ["alpha", "P-2"]  # sys ids match too
    assert kept(RunSelection(include_archived=True), runs="^al|-2$") == ["alpha", "P-2"]
    assert kept(RunSelection(include_archived=True), runs="^alp") == ["alpha"]
    assert kept(RunSelection(include_archived=True), experiments="^exp") == ["alpha"]
    assert kept(RunSelection(include_archived=True, run_ids=("P-2",))) == ["P-2"]


def test_server_filter_pushes_where_time_and_ids():
    query = str(
        build_run_filter(
            RunSelection(where="params/lr > 0.5", modified_after=datetime(2024, 1, 1, tzinfo=UTC), run_ids=("a",))
        )
    )
    assert '`params/lr` > "0.5"' in query
    assert "`sys/modification_time`:datetime >" in query
    assert '`sys/custom_run_id`:string == "a"' in query and '`sys/id`:string == "a"' in query
    assert build_run_filter(RunSelection()) is None
    with pytest.raises(InvalidQueryError):
        build_run_filter(RunSelection(where="params/lr >"))


def test_bad_regexes_fail_before_any_request():
    source = Neptune3Source(token({"api_url": "http://127.0.0.1:1"}), Settings())
    with pytest.raises(InvalidRegexError):
        source.list_runs("ws/p", RunSelection(runs_regex="("))
    with pytest.raises(ProjectNotFoundError):
        source.list_runs("no-slash", RunSelection())


def test_disk_names_are_safe_and_collision_free():
    assert disk_part("images") == "images"
    assert disk_part("a.b") != disk_part("a_b") and "/" not in disk_part("x/y")
    assert disk_part("ż" * 300).encode() and len(disk_part("ż" * 300).encode()) <= 200
    assert file_leaf("ws/p/run/files/model.bin") == "model.bin"
    assert file_leaf("x/..hidden") == "hidden"
    assert file_leaf("x/") == "x"


def test_download_groups_never_share_a_target():
    files = [
        SimpleNamespace(attribute_path=p, step=s) for p, s in [("a.b", None), ("a_b", None), ("c", 1.0), ("c", 2.0)]
    ]
    groups = list(collision_free_groups(files, 10))
    assert [len(g) for g in groups] == [3, 1]
    assert all(len(g) <= 2 for g in collision_free_groups(files, 2))


def test_the_clients_own_retry_warnings_are_quiet_and_other_warnings_are_not(monkeypatch):
    import warnings

    from neptune_query import warnings as nq_warnings

    from neptune_exporter.exporters.neptune3 import configure_neptune_query

    for name in ("RETRY_SOFT_TIMEOUT", "RETRY_HARD_TIMEOUT", "ATTRIBUTE_VALUES_BATCH_SIZE", "SERIES_BATCH_SIZE"):
        monkeypatch.delenv(f"NEPTUNE_QUERY_{name}", raising=False)  # configure writes them: restored after the test
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        configure_neptune_query(Settings())
        for category in (nq_warnings.Http429Warning, nq_warnings.Http503Warning, nq_warnings.HttpOtherWarning):
            warnings.warn("Neptune API request failed. We will retry automatically", category, stacklevel=1)
        warnings.warn("an attribute was skipped", nq_warnings.AttributeWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["an attribute was skipped"]


def test_a_run_is_archived_when_either_flag_the_server_reports_says_so():
    """Servers report sys/archived, sys/trashed or both; a missing column or cell says nothing."""
    flags = [(None, None, False), (True, None, True), (None, True, True), (False, True, True), (True, False, True)]
    rows = []
    for number, (archived, trashed, _) in enumerate(flags):
        row: dict = {"sys/id:string": f"P-{number}", "sys/custom_run_id:string": f"r{number}"}
        if archived is not None:
            row["sys/archived:bool"] = archived
        if trashed is not None:
            row["sys/trashed:bool"] = trashed
        rows.append(row)
    assert [ref.archived for ref in runs_from_table("ws/p", listing_frame(rows))] == [f[2] for f in flags]
    only_archived = listing_frame([{"sys/id:string": "P-9", "sys/archived:bool": False}])
    assert [ref.archived for ref in runs_from_table("ws/p", only_archived)] == [False]

"""The `log-batch` body written straight from points is the request MLflow's own client sends for them."""

from __future__ import annotations

import json
import math

import pytest
from mlflow.entities import Metric
from mlflow.protos.service_pb2 import LogBatch
from mlflow.utils.proto_json_utils import message_to_json, parse_dict

from neptune_exporter.loaders.mlflow.writers import log_batch_json

POINTS = [
    ("metrics/loss", 0.25, 1_700_000_000_123, 0),
    ("metrics/loss", 1e-310, 1_700_000_000_124, 2**62),
    ("metrics/ścieżka λ", -1.7976931348623157e308, -86_400_000, -5),
    ("m", math.nan, 0, 1),
    ("m", math.inf, 1, 2),
    ("m", -math.inf, 2, 3),
    ("m", 0.1 + 0.2, 3, 4),
    ('m"quote\\slash', -0.0, 4, 5),
]


def mlflows_body(run_id: str, points: list[tuple[str, float, int, int]]) -> str:
    """What `RestStore.log_batch` sends: the protobuf message of MLflow's `Metric` entities, as MLflow's JSON."""
    return message_to_json(LogBatch(run_id=run_id, metrics=[Metric(*point).to_proto() for point in points]))


def as_message(body: str) -> LogBatch:
    message = LogBatch()
    parse_dict(json.loads(body), message)
    return message


@pytest.mark.parametrize("points", [POINTS, POINTS[:1], []])
def test_the_body_parses_to_the_message_mlflows_client_sends(points):
    ours, mlflows = log_batch_json("run-1", points), mlflows_body("run-1", points)
    assert as_message(ours).SerializeToString(deterministic=True) == as_message(mlflows).SerializeToString(
        deterministic=True
    )


def test_non_finite_values_are_protobuf_json_strings_not_bare_tokens():
    metrics = json.loads(log_batch_json("r", POINTS[3:6]))["metrics"]
    assert [m["value"] for m in metrics] == ["NaN", "Infinity", "-Infinity"]
    assert json.loads(log_batch_json("r", POINTS[:1]))["metrics"][0] == {
        "key": "metrics/loss",
        "value": 0.25,
        "timestamp": 1_700_000_000_123,
        "step": 0,
    }

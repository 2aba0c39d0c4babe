"""The deployments: one list in deployments/serve.py, the same in deployments/prefect.yaml, every entrypoint a flow."""

from pathlib import Path

import yaml
from prefect import Flow

from deployments.serve import DEPLOYMENTS

PREFECT_YAML = Path(__file__).resolve().parents[2] / "deployments" / "prefect.yaml"


def test_prefect_yaml_declares_the_served_deployments():
    declared = yaml.safe_load(PREFECT_YAML.read_text())["deployments"]
    as_yaml = [(d["name"], d["entrypoint"], d["parameters"], d["concurrency_limit"]) for d in declared]
    as_served = [(s.name, s.entrypoint, s.parameters, s.concurrency_limit) for s in DEPLOYMENTS]
    assert as_yaml == as_served


def test_export_deployments_exist_and_every_entrypoint_is_a_flow():
    flows = {spec.entrypoint: spec.load_flow() for spec in DEPLOYMENTS}
    assert all(isinstance(flow, Flow) for flow in flows.values())
    names = {f"{spec.load_flow().name}/{spec.name}" for spec in DEPLOYMENTS}
    assert {"export/neptune3", "export/neptune2"} <= names
    limits = {f"{spec.load_flow().name}/{spec.name}": spec.concurrency_limit for spec in DEPLOYMENTS}
    # exports: one run per data path (flows/guard.py), so schedules of other data paths never wait or get cancelled
    assert limits == {
        "export/neptune3": None,
        "export/neptune2": None,
        "export-chunk/neptune3": None,  # the chunks of one distributed export run side by side (flows/fan_out.py)
        "export-chunk/neptune2": None,
        "load/mlflow": 1,
        "validate/mlflow": 1,
        "load/wandb": 1,
        "validate/wandb": 1,
        "load/comet": 1,
        "validate/comet": 1,
        "validate/neptune3": 1,  # the export compared with its live source (issue 15): the validate-source subflow
        "validate/neptune2": 1,
        "load-chunk/mlflow": None,  # the chunks of one distributed load or validation run side by side
        "validate-chunk/mlflow": None,
        "load-chunk/wandb": None,
        "validate-chunk/wandb": None,
        "load/goodseed": 1,
        "validate/goodseed": 1,
        "load-chunk/goodseed": None,
        "validate-chunk/goodseed": None,
        "load/zenml": 1,
        "validate/zenml": 1,
        "load-chunk/zenml": None,
        "validate-chunk/zenml": None,
        "load-chunk/comet": None,
        "validate-chunk/comet": None,
    }


def test_entrypoints_name_modules_of_the_package_and_the_work_pool_deployments_pull_nothing():
    document = yaml.safe_load(PREFECT_YAML.read_text())
    assert document["pull"] == []  # nothing resolved on the deploying machine: the worker imports its own install
    assert {spec.entrypoint for spec in DEPLOYMENTS} == {
        "flows.export.export",
        "flows.export.export_chunk",
        "flows.load.load",
        "flows.load.load_chunk",
        "flows.validate.validate",
        "flows.validate.validate_chunk",
    }

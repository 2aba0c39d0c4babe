"""Serve the project's deployments (`python -m deployments.serve`): export/neptune3, export/neptune2, ..."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any

from neptune_exporter.prefect_env import ANALYTICS_OFF


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: `<flow name>/<name>` runs `entrypoint` with these default parameters."""

    name: str
    entrypoint: str  # "flows.export.export": module path of the flow in the installed package, as in prefect.yaml
    parameters: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    concurrency_limit: int | None = 1  # runs of one deployment never overlap (exports: flows/guard.py instead)

    def load_flow(self):
        module, _, attribute = self.entrypoint.rpartition(".")
        return getattr(importlib.import_module(module), attribute)


# The one list of deployments (keep deployments/prefect.yaml in step). Exports have no deployment concurrency limit:
# schedules with their own parameters share a deployment, and flows/guard.py skips an export while another one
# writes to the same data path (a deployment-wide limit would queue or cancel runs of unrelated data paths).
DEPLOYMENTS: list[DeploymentSpec] = [
    DeploymentSpec(
        "neptune3",
        "flows.export.export",
        {"source": "neptune3"},
        "Export Neptune 3.x runs (neptune-query) to Parquet + files; token from NEPTUNE_API_TOKEN.",
        None,
    ),
    DeploymentSpec(
        "neptune2",
        "flows.export.export",
        {"source": "neptune2"},
        "Export Neptune 2.x runs (neptune client) to Parquet + files; token from NEPTUNE_API_TOKEN.",
        None,
    ),
    DeploymentSpec(
        "neptune3",
        "flows.export.export_chunk",
        {},
        "One chunk of a distributed export (export --distribute) from Neptune 3.x; started by its parent export.",
        None,
    ),
    DeploymentSpec(
        "neptune2",
        "flows.export.export_chunk",
        {},
        "One chunk of a distributed export (export --distribute) from Neptune 2.x; started by its parent export.",
        None,
    ),
    DeploymentSpec(
        "mlflow",
        "flows.load.load",
        {"options": {"target": "mlflow"}},
        "Load exports into MLflow (idempotent), then validate; tracking URI from MLFLOW_TRACKING_URI.",
    ),
    DeploymentSpec(
        "mlflow",
        "flows.validate.validate",
        {"options": {"target": "mlflow"}},
        "Validate loaded runs in MLflow against the export; tracking URI from MLFLOW_TRACKING_URI.",
    ),
    DeploymentSpec(
        "wandb",
        "flows.load.load",
        {"options": {"target": "wandb"}},
        "Load exports into W&B (idempotent), then validate; online with WANDB_API_KEY, else offline runs to sync.",
    ),
    DeploymentSpec(
        "wandb",
        "flows.validate.validate",
        {"options": {"target": "wandb"}},
        "Validate loaded W&B runs (offline .wandb logs, or online via the API) against the export.",
    ),
    DeploymentSpec(
        "comet",
        "flows.load.load",
        {"options": {"target": "comet"}},
        "Load exports into Comet (idempotent), then validate; online with COMET_API_KEY, else offline archives to `comet upload`.",
    ),
    DeploymentSpec(
        "comet",
        "flows.validate.validate",
        {"options": {"target": "comet"}},
        "Validate Comet offline archives (options.comet_dir) against the export.",
    ),
    DeploymentSpec(
        "neptune3",
        "flows.validate.validate",
        {"options": {"against": "neptune3", "deep": False}},
        "Export vs the live Neptune 3.x server (validate-source subflow; options.projects, options.deep; NEPTUNE_API_TOKEN).",
    ),
    DeploymentSpec(
        "neptune2",
        "flows.validate.validate",
        {"options": {"against": "neptune2", "deep": False}},
        "Export vs the live Neptune 2.x server (validate-source subflow; options.projects, options.deep; NEPTUNE_API_TOKEN).",
    ),
    DeploymentSpec(
        "mlflow",
        "flows.load.load_chunk",
        {},
        "One chunk of a distributed load (load --distribute) into MLflow; started by its parent load.",
        None,
    ),
    DeploymentSpec(
        "mlflow",
        "flows.validate.validate_chunk",
        {},
        "One chunk of a distributed validation (validate --distribute) against MLflow; started by its parent.",
        None,
    ),
    DeploymentSpec(
        "wandb",
        "flows.load.load_chunk",
        {},
        "One chunk of a distributed load (load --distribute) into W&B; started by its parent load.",
        None,
    ),
    DeploymentSpec(
        "wandb",
        "flows.validate.validate_chunk",
        {},
        "One chunk of a distributed validation (validate --distribute) against W&B; started by its parent.",
        None,
    ),
    DeploymentSpec(
        "goodseed",
        "flows.load.load",
        {"options": {"target": "goodseed"}},
        "Load exports into GoodSeed's local storage (idempotent), then validate; home from options.goodseed_home, else GOODSEED_HOME.",
    ),
    DeploymentSpec(
        "goodseed",
        "flows.validate.validate",
        {"options": {"target": "goodseed"}},
        "Validate loaded runs in GoodSeed's local storage against the export (read back through GoodSeed's API).",
    ),
    DeploymentSpec(
        "goodseed",
        "flows.load.load_chunk",
        {},
        "One chunk of a distributed load (load --distribute) into GoodSeed; started by its parent load.",
        None,
    ),
    DeploymentSpec(
        "goodseed",
        "flows.validate.validate_chunk",
        {},
        "One chunk of a distributed validation (validate --distribute) against GoodSeed; started by its parent.",
        None,
    ),
    DeploymentSpec(
        "zenml",
        "flows.load.load",
        {"options": {"target": "zenml"}},
        "Load exports into the ZenML local store (options.zenml_dir, absolute) idempotently, then validate.",
    ),
    DeploymentSpec(
        "zenml",
        "flows.validate.validate",
        {"options": {"target": "zenml"}},
        "Validate the runs loaded into the ZenML local store (options.zenml_dir) against the export.",
    ),
    DeploymentSpec(
        "zenml",
        "flows.load.load_chunk",
        {},
        "One chunk of a distributed load (load --distribute) into ZenML; started by its parent load.",
        None,
    ),
    DeploymentSpec(
        "zenml",
        "flows.validate.validate_chunk",
        {},
        "One chunk of a distributed validation (validate --distribute) against ZenML; started by its parent.",
        None,
    ),
    DeploymentSpec(
        "comet",
        "flows.load.load_chunk",
        {},
        "One chunk of a distributed load (load --distribute) into Comet; started by its parent load.",
        None,
    ),
    DeploymentSpec(
        "comet",
        "flows.validate.validate_chunk",
        {},
        "One chunk of a distributed validation (validate --distribute) against Comet; started by its parent.",
        None,
    ),
]


def runner_deployments(specs: list[DeploymentSpec] | None = None) -> list:
    """RunnerDeployments for `prefect.serve` (no schedules given: those `neptune-exporter schedule` added stay)."""
    from prefect.deployments.runner import EntrypointType

    return [
        spec.load_flow().to_deployment(
            name=spec.name,
            parameters=spec.parameters,
            description=spec.description,
            concurrency_limit=spec.concurrency_limit,
            tags=["neptune-exporter"],
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        for spec in specs or DEPLOYMENTS
    ]


def main() -> None:
    """Serve every deployment until interrupted (PREFECT_API_URL names the server); flow logs stay at INFO."""
    for name, value in ANALYTICS_OFF.items():
        os.environ.setdefault(name, value)
    from prefect import serve

    serve(*runner_deployments(), print_starting_message=True)


if __name__ == "__main__":
    main()

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
    entrypoint: str  # "flows/export.py:export" style, as in prefect.yaml
    parameters: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    concurrency_limit: int = 1  # scheduled incremental runs never overlap

    def load_flow(self):
        path, _, attribute = self.entrypoint.partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        return getattr(module, attribute)


# The one list of deployments (keep deployments/prefect.yaml in step). Add load/mlflow, load/wandb, validate/* here.
DEPLOYMENTS: list[DeploymentSpec] = [
    DeploymentSpec("neptune3", "flows/export.py:export", {"source": "neptune3"},
                   "Export Neptune 3.x runs (neptune-query) to Parquet + files; token from NEPTUNE_API_TOKEN."),
    DeploymentSpec("neptune2", "flows/export.py:export", {"source": "neptune2"},
                   "Export Neptune 2.x runs (neptune client) to Parquet + files; token from NEPTUNE_API_TOKEN."),
    DeploymentSpec("mlflow", "flows/load.py:load", {"options": {"target": "mlflow"}},
                   "Load exports into MLflow (idempotent), then validate; tracking URI from MLFLOW_TRACKING_URI."),
    DeploymentSpec("mlflow", "flows/validate.py:validate", {"options": {"target": "mlflow"}},
                   "Validate loaded runs in MLflow against the export; tracking URI from MLFLOW_TRACKING_URI."),
    DeploymentSpec("wandb", "flows/load.py:load", {"options": {"target": "wandb"}},
                   "Load exports into W&B (idempotent), then validate; online with WANDB_API_KEY, else offline runs to sync."),
    DeploymentSpec("wandb", "flows/validate.py:validate", {"options": {"target": "wandb"}},
                   "Validate loaded W&B runs (offline .wandb logs, or online via the API) against the export."),
]


def runner_deployments(specs: list[DeploymentSpec] | None = None) -> list:
    """RunnerDeployments for `prefect.serve`."""
    return [
        spec.load_flow().to_deployment(
            name=spec.name, parameters=spec.parameters, description=spec.description,
            concurrency_limit=spec.concurrency_limit, tags=["neptune-exporter"],
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

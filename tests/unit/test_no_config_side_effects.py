"""Nothing configures a client process-wide at import or in a constructor; the documented functions do, when called."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PRODUCT_MODULES = [
    "neptune_exporter.cli",
    "neptune_exporter.export",
    "neptune_exporter.load",
    "neptune_exporter.exporters.neptune3",
    "neptune_exporter.exporters.neptune2",
    "neptune_exporter.loaders.mlflow",
    "neptune_exporter.loaders.wandb",
    "neptune_exporter.loaders.zenml",
    "neptune_exporter.validation.zenml",
]


def run_python(script: str, **env: str) -> dict:
    """Run `script` in a fresh interpreter (clean module and environment state, plus `env`); the JSON it prints last."""
    # an MLflow import earlier in this test process left its session id in os.environ; a fresh import renews it
    environ = {k: v for k, v in os.environ.items() if k != "_MLFLOW_TELEMETRY_SESSION_ID"} | env
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=environ)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_and_constructing_leave_the_environment_alone():
    result = run_python(
        "import importlib, json, os\n"
        "before = dict(os.environ)\n"
        f"for name in {PRODUCT_MODULES!r}: importlib.import_module(name)\n"
        "from neptune_exporter.settings import Settings\n"
        "from neptune_exporter.exporters.neptune3 import Neptune3Source\n"
        "from neptune_exporter.exporters.neptune2 import Neptune2Source\n"
        "from neptune_exporter.loaders.mlflow import MlflowLoader\n"
        "Neptune3Source(None, Settings()); Neptune2Source(None, Settings()); MlflowLoader('http://127.0.0.1:9')\n"
        "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
        "print(json.dumps(changed))\n",
        # MLflow's own import writes _MLFLOW_TELEMETRY_SESSION_ID unless telemetry is off, as make_loader sets it
        # before the import (next test); with it off, any change left would be ours
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    assert result == []


def test_make_loader_applies_the_mlflow_defaults_before_mlflow_is_imported():
    result = run_python(
        "import json, os, sys\n"
        "for name in ('MLFLOW_DISABLE_TELEMETRY', 'MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR', 'MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT'):\n"
        "    os.environ.pop(name, None)\n"
        "os.environ['MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR'] = 'true'  # the user's own value wins\n"
        "from neptune_exporter.load import LoadOptions, make_loader\n"
        "from neptune_exporter.settings import Settings\n"
        "assert 'mlflow' not in sys.modules\n"
        "make_loader(LoadOptions(target='mlflow', mlflow_tracking_uri='http://127.0.0.1:9'), Settings())\n"
        "from mlflow.telemetry.client import get_telemetry_client\n"
        "print(json.dumps({'telemetry_client': repr(get_telemetry_client()),\n"
        "                  'env': {k: os.environ.get(k) for k in ('MLFLOW_DISABLE_TELEMETRY',\n"
        "                          'MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR', 'MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT')}}))\n"
    )
    assert result["telemetry_client"] == "None"
    assert result["env"] == {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "true",
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    }

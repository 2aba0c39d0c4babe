"""MLflow target: map an exported run to params, tags, metrics and artifacts and load it idempotently.

Modules: `loader` (MlflowLoader, experiment names), `mapping` (an exported run as MLflow entities), `provenance`
(the tags a loaded run carries), `writers` (batched metrics, parallel artifact uploads), `client` (typed errors).
"""

from neptune_exporter.loaders.mlflow.client import TRANSIENT_CODES, mlflow_errors, translate_error
from neptune_exporter.loaders.mlflow.loader import (
    DEFAULT_EXPERIMENT_TEMPLATE,
    MlflowLoader,
    check_experiment_template,
    experiment_name,
)
from neptune_exporter.loaders.mlflow.mapping import (
    KEY_MAP_ARTIFACT_DIR,
    KEY_MAP_FILE,
    LONG_VALUES_DIR,
    METRICS_PER_BATCH,
    PARAMS_PER_BATCH,
    TAGS_ATTRIBUTE,
    TAGS_PER_BATCH,
    ArtifactItem,
    MetricChunk,
    Params,
    RunMapping,
    Tags,
    param_text,
    truncated_param,
)
from neptune_exporter.loaders.mlflow.provenance import (
    LINK_TAGS,
    TAG_CHECKSUM,
    TAG_FORK_PARENT,
    TAG_FORK_PARENT_TARGET,
    TAG_FORK_STEP,
    TAG_LOAD_STATE,
    TAG_PARENT_RUN,
    TAG_PROJECT,
    TAG_RUN_ID,
    TAG_RUN_KEY,
    TAG_STEP_MULTIPLIER,
    provenance_tags,
)
from neptune_exporter.loaders.mlflow.writers import ArtifactUploader, BoundedPool, MetricBatcher, chunks_of

__all__ = [
    "DEFAULT_EXPERIMENT_TEMPLATE",
    "KEY_MAP_ARTIFACT_DIR",
    "KEY_MAP_FILE",
    "LINK_TAGS",
    "LONG_VALUES_DIR",
    "METRICS_PER_BATCH",
    "PARAMS_PER_BATCH",
    "TAGS_ATTRIBUTE",
    "TAGS_PER_BATCH",
    "TAG_CHECKSUM",
    "TAG_FORK_PARENT",
    "TAG_FORK_PARENT_TARGET",
    "TAG_FORK_STEP",
    "TAG_LOAD_STATE",
    "TAG_PARENT_RUN",
    "TAG_PROJECT",
    "TAG_RUN_ID",
    "TAG_RUN_KEY",
    "TAG_STEP_MULTIPLIER",
    "TRANSIENT_CODES",
    "ArtifactItem",
    "ArtifactUploader",
    "BoundedPool",
    "MetricBatcher",
    "MetricChunk",
    "MlflowLoader",
    "Params",
    "RunMapping",
    "Tags",
    "check_experiment_template",
    "chunks_of",
    "experiment_name",
    "mlflow_errors",
    "param_text",
    "provenance_tags",
    "translate_error",
    "truncated_param",
]

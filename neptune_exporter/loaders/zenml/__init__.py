"""ZenML target: exported runs become Model Versions (one Model per Neptune project) of the ZenML local store under
--zenml-dir: single values as metadata, series, files and long values as artifacts, provenance as metadata.

Modules: `loader` (ZenmlLoader), `names` (model, version, key and artifact names), `content` (a run written for
ZenML: metadata values and artifact folders). The store itself (environment, client, errors):
`neptune_exporter.storage.zenml_store`. ZenML is imported lazily, only when a run is loaded.
"""

from neptune_exporter.loaders.zenml.content import ArtifactFolder, RunContent, long_value_pointer, metadata_value
from neptune_exporter.loaders.zenml.loader import EXPERIMENT, KEY_MAP, RUN_KEY, ZenmlLoader, description
from neptune_exporter.loaders.zenml.names import (
    DEFAULT_MODEL_TEMPLATE,
    ZENML,
    ZenmlKeyMap,
    artifact_name,
    model_name,
    version_name,
)

__all__ = [
    "DEFAULT_MODEL_TEMPLATE",
    "EXPERIMENT",
    "KEY_MAP",
    "RUN_KEY",
    "ZENML",
    "ArtifactFolder",
    "RunContent",
    "ZenmlKeyMap",
    "ZenmlLoader",
    "artifact_name",
    "description",
    "long_value_pointer",
    "metadata_value",
    "model_name",
    "version_name",
]

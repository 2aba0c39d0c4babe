"""A run's W&B artifacts: one per file, file series or file set attribute, and one per string series."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neptune_exporter.loaders.wandb.export_reader import RunContent
from neptune_exporter.loaders.wandb.history import HistoryWriter
from neptune_exporter.loaders.wandb.names import artifact_name


@dataclass
class ArtifactSpec:
    """One run-scoped artifact: its unique name, type, metadata and (local file or folder, name inside) entries."""

    name: str
    type: str
    metadata: dict
    entries: list[tuple[Path, str]]

    def files(self) -> Iterator[tuple[Path, str]]:
        """(local file, path inside the artifact) with folders expanded."""
        for local, name in self.entries:
            if local.is_dir():
                for file in sorted(p for p in local.rglob("*") if p.is_file()):
                    yield file, f"{name}/{file.relative_to(local).as_posix()}"
            else:
                yield local, name


def artifact_specs(target_run_id: str, content: RunContent, history: HistoryWriter) -> list[ArtifactSpec]:
    """Artifacts of a run: one per file/file-series/file-set attribute and one per string series."""
    specs = []
    for path, entries in content.files.items():
        kind = content.file_types[path].value
        metadata: dict[str, Any] = {"neptune_attribute": path, "neptune_type": kind}
        specs.append(
            ArtifactSpec(artifact_name(target_run_id, path), f"neptune-{kind.replace('_', '-')}", metadata, entries)
        )
    for key_index, sink in sorted(history.strings.items()):
        original = content.originals[key_index]
        metadata = {"neptune_attribute": original, "neptune_type": "string_series", "count": sink.count}
        files = [(file, file.name) for file in sink.close()]
        specs.append(ArtifactSpec(artifact_name(target_run_id, original), "neptune-string-series", metadata, files))
    return specs

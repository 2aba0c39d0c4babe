"""Test helper: write small exports (our format with manifests, or the peer tool's: parts only) for load tests."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from neptune_exporter.model import file_value_path, project_files_dir, resolve_file_value, sanitize_name
from neptune_exporter.rows import parameter_rows, series_rows
from neptune_exporter.storage.manifest import Manifest, write_manifest
from neptune_exporter.storage.parquet import RunWriter

CREATED = datetime(2024, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
MODIFIED = datetime(2024, 3, 2, 8, 30, 0, 456000, tzinfo=UTC)
T0_MS = int(CREATED.timestamp() * 1000)
LONG_TEXT = "long-value " * 700  # 7,700 characters: over MLflow's 6,000
LONG_KEY = "params/" + "k" * 300
COLLIDING = ("cfg/a#b", "cfg/a%b")  # both sanitise to cfg/a_b


def write_file(files_root: Path, project_id: str, run_id: str, name: str, data: bytes) -> str:
    """A file under <files>/<project-dir>/<run-dir>/; returns its `file_value.path` (relative to the project dir)."""
    local = project_files_dir(files_root, project_id) / sanitize_name(run_id) / name
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(data)
    return file_value_path(files_root, project_id, local)


def _file_record(files_root: Path, project_id: str, attribute: str, relative: str, step=None) -> dict:
    data = resolve_file_value(files_root, project_id, relative).read_bytes()
    return {
        "attribute_path": attribute,
        "path": relative,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "step": step,
    }


def rich_batches(
    project_id: str, run_id: str, files_root: Path, points: int = 2500, extra_params: tuple = ()
) -> tuple[list[pa.RecordBatch], list[dict]]:
    """Every attribute type, awkward keys, fractional steps, long values, NaN/inf; plus the file records."""
    first = write_file(files_root, project_id, run_id, "model.bin", b"\x00weights" * 100)
    step1 = write_file(files_root, project_id, run_id, "pred_1.png", b"png-one")
    step2 = write_file(files_root, project_id, run_id, "pred_2.png", b"png-two-bytes")
    folder = write_file(files_root, project_id, run_id, "source/a.py", b"print('a')\n")
    write_file(files_root, project_id, run_id, "source/sub/b.txt", b"bee")
    file_set = str(Path(folder).parent)
    params = [
        ("params/lr", "float", 0.001), ("params/nan", "float", math.nan), ("params/inf", "float", math.inf),
        ("params/epochs", "int", 12), ("params/name", "string", "résumé ✓"), ("params/flag", "bool", True),
        ("params/when", "datetime", datetime(2024, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)),
        ("params/set", "string_set", {"b", "a", "c"}), ("params/long", "string", LONG_TEXT),
        (LONG_KEY, "int", 7), (COLLIDING[0], "int", 1), (COLLIDING[1], "int", 2), ("weird//key..x:y", "string", "w"),
        ("sys/tags", "string_set", {"baseline", "mlflow.note", "with space"}),
        ("sys/creation_time", "datetime", CREATED), ("files/model", "file", first), ("files/source", "file_set", file_set),
        *extra_params,
    ]  # fmt: skip
    steps = np.arange(points, dtype=np.float64)
    loss = np.linspace(1.0, 0.0, points)
    loss[3], loss[4], loss[5] = math.nan, math.inf, -math.inf
    batches = [
        parameter_rows(project_id, run_id, params),
        series_rows(project_id, run_id, "metrics/loss", "float_series", steps, loss, T0_MS + steps * 10),
        series_rows(project_id, run_id, "metrics/frac", "float_series", [0.5, 1.25, 2.0], [1.0, 2.0, 3.0], [T0_MS, T0_MS + 1, T0_MS + 2]),
        series_rows(project_id, run_id, "logs/stdout", "string_series", [1, 2], ["hello", "wörld\nnext"], [T0_MS, T0_MS + 5]),
        series_rows(project_id, run_id, "hist/w", "histogram_series", [0, 1],
                    [{"type": "linear", "edges": [0.0, 1.0, 2.0], "values": [3.0, 4.0]}, {"type": "linear", "edges": [0.0, 1.0], "values": [5.0]}],
                    [T0_MS, T0_MS + 7]),
        series_rows(project_id, run_id, "images/pred", "file_series", [1, 2], [step1, step2], [T0_MS, T0_MS + 9]),
    ]  # fmt: skip
    records = [
        _file_record(files_root, project_id, "files/model", first),
        _file_record(files_root, project_id, "images/pred", step1, 1.0),
        _file_record(files_root, project_id, "images/pred", step2, 2.0),
    ]
    return batches, records


def write_export(
    data_root: Path,
    files_root: Path,
    project_id: str,
    run_id: str,
    batches: list[pa.RecordBatch],
    files: list[dict] = (),
    experiment: str | None = "exp-a",
    fork_parent: str | None = None,
    status: str = "complete",
    part_target_bytes: int = 64 * 1024,
) -> Manifest:
    """Parts via RunWriter, then the manifest (written last), like an export does."""
    with RunWriter(data_root, project_id, run_id, part_target_bytes) as writer:
        for batch in batches:
            writer.write(batch)
        parts = writer.close()
    source = {
        "kind": "neptune3", "project_id": project_id, "run_id": run_id, "sys_id": f"SYS-{run_id}",
        "experiment_name": experiment, "creation_time": CREATED.isoformat(), "modification_time": MODIFIED.isoformat(),
        "fork_parent": fork_parent, "fork_step": 1.0 if fork_parent else None,
    }  # fmt: skip
    manifest = Manifest(status=status, source=source, parts=parts, files=list(files))
    write_manifest(data_root, manifest)
    return manifest


def write_rich_export(data_root: Path, files_root: Path, project_id: str, run_id: str, **kwargs) -> Manifest:
    """A run with every type and awkward case, in our format."""
    points = kwargs.pop("points", 2500)
    batches, files = rich_batches(project_id, run_id, files_root, points)
    return write_export(data_root, files_root, project_id, run_id, batches, files, **kwargs)


AWKWARD_PROJECT = "workspace/awkward"


def export_awkward(fake, root: Path, project: str = AWKWARD_PROJECT) -> list:
    """A project of the fake (default: the awkward one; every run, archived too) exported with the 3.x source into
    `<root>/data` and `<root>/files`; the export's per-run results."""
    from neptune_exporter.export import ExportOptions
    from neptune_exporter.export_runner import run_export
    from neptune_exporter.exporters.base import RunSelection
    from neptune_exporter.settings import Settings

    options = ExportOptions(
        source="neptune3",
        projects=(project,),
        data_path=str(root / "data"),
        files_path=str(root / "files"),
        runs=RunSelection(include_archived=True),
        api_token=fake.api_token,
        workers=2,
    )
    return run_export(options, Settings(source_retry_timeout_s=5))

"""Weights & Biases target: exported runs become W&B runs (online, or offline under --wandb-dir for `wandb sync`)."""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_exporter.errors import (
    CorruptPartError,
    InvalidOptionError,
    NeptuneExporterError,
    OutputPathError,
    TargetError,
    TargetUnavailableError,
    TerminalError,
)
from neptune_exporter.loaders.base import (
    WANDB,
    ExportedRun,
    KeyMap,
    LoadResult,
    format_step,
    integer_steps,
    map_key,
    open_exported_run,
    run_key,
)
from neptune_exporter.loaders.step_merge import StepSpill
from neptune_exporter.loaders.wandb_online import PriorState as _PriorState
from neptune_exporter.model import AttributeType, as_utc, decimal_array_to_unscaled
from neptune_exporter.rows import value_column
from neptune_exporter.storage.exported_run import PROVENANCE_CHECKSUM, PROVENANCE_LOAD_STATE

log = logging.getLogger(__name__)

LOAD_STATE = PROVENANCE_LOAD_STATE
CHECKSUM = PROVENANCE_CHECKSUM
OFFLINE_LOG_TIMEOUT_SECONDS = 60.0  # for wandb-core to write a finished run's last records
OFFLINE_LOG_POLL_SECONDS = 0.1
DEFAULT_PROJECT_TEMPLATE = "{project}"
MAX_TAG_LENGTH = 64
TABLE_CHUNK_ROWS = 100_000
NON_FINITE_CONFIG = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
STRING_TABLE_COLUMNS = ["step", "value", "timestamp"]
HISTORY_TYPES = (AttributeType.FLOAT_SERIES, AttributeType.HISTOGRAM_SERIES, AttributeType.STRING_SERIES)
SINGLE_FILE_TYPES = (AttributeType.FILE, AttributeType.FILE_SET, AttributeType.ARTIFACT)
SPILL_SCHEMA = pa.schema(
    [
        pa.field("step", pa.int64()),
        pa.field("key", pa.int32()),
        pa.field("timestamp", pa.int64()),
        pa.field("float_value", pa.float64()),
        pa.field("string_value", pa.string()),
        pa.field(
            "histogram_value",
            pa.struct([pa.field("edges", pa.list_(pa.float64())), pa.field("values", pa.list_(pa.float64()))]),
        ),
    ]
)
# quiet, local-only W&B: no console capture, no system stats, no code/git/metadata collection
QUIET_ENV = {
    "WANDB_SILENT": "true",
    "WANDB_CONSOLE": "off",
    "WANDB_DISABLE_CODE": "true",
    "WANDB_DISABLE_GIT": "true",
    "WANDB__DISABLE_STATS": "true",
    "WANDB_X_DISABLE_STATS": "true",
    "WANDB_X_DISABLE_META": "true",
    "WANDB_X_DISABLE_MACHINE_INFO": "true",
    "WANDB_ERROR_REPORTING": "false",
}

# ----------------------------------------------------------------------------- names


def _clean(text: str, allowed: str) -> str:
    return re.sub(f"[^{allowed}]", "-", text)


def wandb_run_id(project_id: str, run_id: str) -> str:
    """Deterministic W&B run id: readable lowercase prefix + hash of (project, run), only [a-z0-9_-]."""
    prefix = _clean(run_id.lower(), "a-z0-9_-").strip("-")[:40]
    digest = run_key(project_id, run_id)[:12]
    return f"{prefix}-{digest}" if prefix else digest


def wandb_project_name(project_id: str, template: str | None) -> str:
    """W&B project from the Neptune project via a template ({project}, {workspace}, {project_id})."""
    workspace, _, project = project_id.rpartition("/")
    try:
        name = (template or DEFAULT_PROJECT_TEMPLATE).format(
            project=project, workspace=workspace, project_id=project_id
        )
    except (KeyError, IndexError, ValueError) as error:
        raise InvalidOptionError(
            f"--project-template {template!r} is not valid ({error})",
            "use the fields {project}, {workspace}, {project_id}",
        ) from None
    return _clean(name, r"A-Za-z0-9_.\-")[:128] or "neptune"


def artifact_name(target_run_id: str, key: str) -> str:
    """Run-scoped artifact name of one attribute, unique per run and attribute."""
    readable = _clean(key, r"A-Za-z0-9_.\-")[:60]
    digest = run_key(target_run_id, key)[:10]
    return f"{target_run_id}-{readable}-{digest}"


class WandbKeyMap(KeyMap):
    """KeyMap that also moves keys off W&B's reserved leading underscore (`_step`, `_timestamp`, ...)."""

    def __call__(self, key: str) -> str:
        if not key.startswith("_"):
            return super().__call__(key)
        return self.claim(key, map_key("u" + key + "\x00", self.capabilities))  # forced rename: hash of the original


# ----------------------------------------------------------------------------- target settings


@dataclass(frozen=True)
class WandbTarget:
    """Where runs go: online (API key set) or offline under `wandb_dir`."""

    wandb_dir: Path
    entity: str | None = None
    project_template: str | None = None
    api_key: str | None = None
    base_url: str | None = None

    @property
    def online(self) -> bool:
        return bool(self.api_key)

    @classmethod
    def from_env(cls, wandb_dir: Path | str | None, entity: str | None, project_template: str | None) -> WandbTarget:
        """Online when WANDB_API_KEY is set (WANDB_BASE_URL for W&B Server), offline otherwise."""
        return cls(
            wandb_dir=Path(wandb_dir or "./wandb-runs").absolute(),
            entity=entity or os.environ.get("WANDB_ENTITY") or None,
            project_template=project_template,
            api_key=os.environ.get("WANDB_API_KEY") or None,
            base_url=os.environ.get("WANDB_BASE_URL") or None,
        )

    def data_dir(self) -> Path:
        """Artifact staging inside the wandb dir so it survives until `wandb sync`."""
        return self.wandb_dir / "wandb-data"

    def apply_env(self) -> None:
        """Process-wide W&B settings (staging, cache and config dirs inside the wandb dir, quiet mode)."""
        for name, value in QUIET_ENV.items():
            os.environ.setdefault(name, value)
        os.environ["WANDB_DIR"] = str(self.wandb_dir)
        os.environ["WANDB_DATA_DIR"] = str(self.data_dir())
        os.environ["WANDB_CACHE_DIR"] = str(self.wandb_dir / "wandb-cache")
        os.environ.setdefault("WANDB_CONFIG_DIR", str(self.wandb_dir / "wandb-config"))
        os.environ["WANDB_MODE"] = "online" if self.online else "offline"

    def sync_command(self) -> str:
        """The exact command that uploads the offline runs later (already-synced runs are skipped)."""
        entity = f" --entity {shlex.quote(self.entity)}" if self.entity else ""
        folder = shlex.quote(str(self.wandb_dir / "wandb"))
        return f"WANDB_DATA_DIR={shlex.quote(str(self.data_dir()))} wandb sync --yes{entity} {folder}/offline-run-*"


# ----------------------------------------------------------------------------- reading an export


@dataclass
class RunContent:
    """A run read from its export, ready to log: config, tags, file artifacts, series spilled by step."""

    config: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # spill key index → W&B key
    key_types: list[AttributeType] = field(default_factory=list)
    originals: list[str] = field(default_factory=list)
    files: dict[str, list[tuple[Path, str]]] = field(
        default_factory=dict
    )  # attribute → [(local file/dir, name in artifact)]
    file_types: dict[str, AttributeType] = field(default_factory=dict)
    file_count: int = 0
    min_unscaled_step: int | None = None  # lowest series step (W&B drops negative steps: they get shifted)

    def step_offset(self, multiplier: int) -> int:
        """Added to every W&B step so the lowest is >= 0 (recorded in config as neptune.step_offset)."""
        if self.min_unscaled_step is None:
            return 0
        lowest = int(integer_steps(np.array([self.min_unscaled_step]), multiplier)[0])
        return -lowest if lowest < 0 else 0


def _native(attribute_type: AttributeType, row: dict) -> Any:
    column = value_column(attribute_type)
    value = row[column]
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if attribute_type is AttributeType.STRING_SET:
        return sorted(value or [])
    if isinstance(value, float) and not math.isfinite(value):
        return NON_FINITE_CONFIG[repr(value)]  # W&B config stores NaN/inf as null: keep them as text
    return value


def config_value(attribute_type: AttributeType | str, row: dict) -> Any:
    """The W&B config value of a single-value attribute row (native types; datetimes as ISO text)."""
    return _native(AttributeType(attribute_type), row)


class _ExportReader:
    """One pass over a run's parts: parameters → config, files → artifact lists, series → step spill."""

    def __init__(self, exported: ExportedRun, keymap: KeyMap, spill: StepSpill):
        self.exported, self.keymap, self.spill = exported, keymap, spill
        self.content = RunContent()
        self._key_index: dict[str, int] = {}

    def read(self) -> RunContent:
        try:
            for batch in self.exported.batches():
                self._batch(pa.Table.from_batches([batch]))
        except NeptuneExporterError:
            raise
        except (pa.ArrowException, OSError) as error:
            raise CorruptPartError(
                f"cannot read the export of run {self.exported.run_id!r}: {error}",
                "export the run again (its parts are damaged or incomplete)",
                run=self.exported.run_id,
            ) from None
        return self.content

    def _batch(self, table: pa.Table) -> None:
        types = table.column("attribute_type")
        series = pc.is_in(types, value_set=pa.array([t.value for t in HISTORY_TYPES]))
        self._series(table.filter(series))
        self._single_values(table.filter(pc.invert(series)))

    def _index(self, path: str, attribute_type: AttributeType) -> int:
        index = self._key_index.get(path)
        if index is None:
            index = self._key_index[path] = len(self.content.keys)
            self.content.keys.append(self.keymap(path))
            self.content.key_types.append(attribute_type)
            self.content.originals.append(path)
        return index

    def _keys(self, paths: pa.ChunkedArray, types: pa.ChunkedArray) -> np.ndarray:
        """Spill key index of every row: each distinct path is looked up once, not once per point."""
        encoded = pc.dictionary_encode(paths.combine_chunks())
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        distinct, first_rows = np.unique(codes, return_index=True)
        first_types = types.take(pa.array(first_rows)).to_pylist()
        lookup = np.zeros(len(encoded.dictionary), dtype=np.int32)
        for code, path_type in zip(distinct.tolist(), first_types, strict=True):
            lookup[code] = self._index(encoded.dictionary[code].as_py(), AttributeType(path_type))
        return lookup[codes]

    def _series(self, table: pa.Table) -> None:
        if not len(table):
            return
        table = table.filter(pc.is_valid(table.column("step")))
        unscaled = decimal_array_to_unscaled(table.column("step"))
        if unscaled.size:
            low = int(unscaled.min())
            current = self.content.min_unscaled_step
            self.content.min_unscaled_step = low if current is None else min(current, low)
        keys = self._keys(table.column("attribute_path"), table.column("attribute_type"))
        histograms = table.column("histogram_value").cast(SPILL_SCHEMA.field("histogram_value").type)
        self.spill.add(
            pa.table(
                {
                    "step": unscaled,
                    "key": keys,
                    "timestamp": table.column("timestamp").cast(pa.int64()),
                    "float_value": table.column("float_value"),
                    "string_value": table.column("string_value"),
                    "histogram_value": histograms,
                },
                schema=SPILL_SCHEMA,
            )
        )

    def _single_values(self, table: pa.Table) -> None:
        unscaled_steps = decimal_array_to_unscaled(table.column("step"))
        for row, unscaled in zip(
            table.drop_columns(["step", "histogram_value"]).to_pylist(), unscaled_steps.tolist(), strict=True
        ):
            attribute_type, path = AttributeType(row["attribute_type"]), row["attribute_path"]
            if attribute_type in SINGLE_FILE_TYPES or attribute_type is AttributeType.FILE_SERIES:
                self._file(path, attribute_type, row, unscaled)
                continue
            value = _native(attribute_type, row)
            self.content.config[self.keymap(path)] = value
            if path == "sys/tags":
                self.content.tags = [tag[:MAX_TAG_LENGTH] for tag in value]

    def _file(self, path: str, attribute_type: AttributeType, row: dict, unscaled_step: int) -> None:
        local = self.exported.local_file(path, row["file_value"])
        if local is None:
            return
        name = local.name
        if attribute_type is AttributeType.FILE_SERIES:
            name = f"step_{format_step(unscaled_step)}/{local.name}"
        self.content.files.setdefault(path, []).append((local, name))
        self.content.file_types[path] = attribute_type
        self.content.file_count += 1


# ----------------------------------------------------------------------------- logging rows


class _StringSeriesSink:
    """One string series: a text file (one value per line) and (step, value, timestamp) tables, streamed."""

    def __init__(self, staging: Path, key: str):
        self.directory = staging / f"string-series-{run_key(key, 'strings')[:12]}"
        self.directory.mkdir(parents=True)
        self.text = (self.directory / "values.txt").open("w", encoding="utf-8")
        self.rows: list[list] = []
        self.tables: list[Path] = []
        self.count = 0

    def add(self, step: str, value: str | None, timestamp_ms: int | None) -> None:
        self.text.write(f"{value if value is not None else ''}\n")
        moment = None if timestamp_ms is None else datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat()
        self.rows.append([step, value, moment])
        self.count += 1
        if len(self.rows) >= TABLE_CHUNK_ROWS:
            self._flush_table()

    def _flush_table(self) -> None:
        path = self.directory / f"values-{len(self.tables):04d}.table.json"
        path.write_text(_table_json(self.rows), encoding="utf-8")
        self.tables.append(path)
        self.rows = []

    def close(self) -> list[Path]:
        if self.rows or not self.tables:
            self._flush_table()
        self.text.close()
        return [self.directory / "values.txt", *self.tables]


def _table_json(rows: list[list]) -> str:
    """A W&B table file (`*.table.json`) with columns step, value, timestamp."""
    import json

    return json.dumps({"_type": "table", "columns": STRING_TABLE_COLUMNS, "data": rows, "ncols": 3, "nrows": len(rows)})


_NO_TIME = int(np.iinfo(np.int64).max)  # a row's earliest time when none of its points has one


def _row_timestamps(table: pa.Table) -> np.ndarray:
    column = table.column("timestamp")
    return pc.fill_null(column, -1).to_numpy() if column.null_count else column.to_numpy()


class _HistoryWriter:
    """Turns step-ordered spill tables into W&B rows: one `run.log` per step, `_timestamp` = earliest point time."""

    def __init__(self, run, content: RunContent, multiplier: int, staging: Path):
        self.run, self.content, self.multiplier, self.staging = run, content, multiplier, staging
        self.strings: dict[int, _StringSeriesSink] = {}
        self.points = 0
        self.rows = 0
        # per key index, fixed once the export is read (before any row is written)
        self.string_keys = np.array([t is AttributeType.STRING_SERIES for t in content.key_types], bool)
        self.float_keys = np.array([t is AttributeType.FLOAT_SERIES for t in content.key_types], bool)
        self.names = np.asarray(content.keys, dtype=object)

    def write(self, table: pa.Table, from_step: int | None) -> None:
        """Log one step-ordered table: a row per step (steps below `from_step` were logged before a resume)."""
        unscaled = table.column("step").to_numpy()
        steps = integer_steps(unscaled, self.multiplier) + self.content.step_offset(self.multiplier)
        keys = table.column("key").to_numpy()
        is_string = self.string_keys[keys] if len(keys) else np.zeros(0, bool)
        timestamps = _row_timestamps(table)
        if is_string.any():
            self._strings(
                table.filter(pa.array(is_string)), unscaled[is_string], keys[is_string], timestamps[is_string]
            )
        history = ~is_string
        if from_step is not None:
            history &= steps >= from_step
        if history.any():
            self._rows(table.filter(pa.array(history)), steps[history], keys[history], timestamps[history])

    def _strings(self, table: pa.Table, unscaled: np.ndarray, keys: np.ndarray, timestamps: np.ndarray) -> None:
        for value, step, key, ts in zip(
            table.column("string_value").to_pylist(), unscaled.tolist(), keys.tolist(), timestamps.tolist(), strict=True
        ):
            self._string_sink(key).add(format_step(step), value, ts if ts >= 0 else None)

    def _rows(self, table: pa.Table, steps: np.ndarray, keys: np.ndarray, timestamps: np.ndarray) -> None:
        values = table.column("float_value").to_numpy(zero_copy_only=False).tolist()
        histograms = np.flatnonzero(~self.float_keys[keys])
        if histograms.size:
            column = table.column("histogram_value").take(pa.array(histograms)).to_pylist()
            for i, value in zip(histograms.tolist(), column, strict=True):
                values[i] = _histogram(value, self.content.originals[keys[i]])
        names = self.names[keys].tolist()
        starts = np.r_[0, np.flatnonzero(np.diff(steps)) + 1]
        ends = np.r_[starts[1:], len(steps)].tolist()
        earliest = np.minimum.reduceat(np.where(timestamps >= 0, timestamps, _NO_TIME), starts)
        for start, end, step, first_ms in zip(
            starts.tolist(), ends, steps[starts].tolist(), earliest.tolist(), strict=True
        ):
            row: dict[str, Any] = dict(zip(names[start:end], values[start:end], strict=True))
            if first_ms != _NO_TIME:  # some point of the row has a time
                row["_timestamp"] = first_ms / 1000
            self.run.log(row, step=step)
        self.rows += len(ends)
        self.points += len(values)  # a Python int: results are JSON

    def _string_sink(self, key_index: int) -> _StringSeriesSink:
        sink = self.strings.get(key_index)
        if sink is None:
            sink = self.strings[key_index] = _StringSeriesSink(self.staging, self.content.originals[key_index])
        return sink


def _histogram(value: dict | None, attribute: str):
    import wandb

    value = value or {}
    edges, counts = value.get("edges") or [], value.get("values") or []
    try:
        # wandb annotates np_histogram as numpy arrays but takes lists as they are (arrays it converts with .tolist())
        return wandb.Histogram(np_histogram=(list(counts), list(edges)))  # type: ignore[arg-type]
    except ValueError as error:  # more than 512 bins, or edges not one longer than values
        raise TargetError(
            f"W&B cannot store a histogram of attribute {attribute!r} ({len(counts)} bins, {len(edges)} edges): {error}",
            "W&B histograms hold at most 512 bins with one edge more than values; load this run to MLflow instead",
            attribute=attribute,
        ) from None


# ----------------------------------------------------------------------------- the loader


class WandbLoader:
    """Loads exported runs into W&B with the shared loader verbs."""

    capabilities = WANDB

    def __init__(self, target: WandbTarget, step_multiplier: int | None = None, spill_chunk_rows: int = 1_000_000):
        self.target = target
        self.step_multiplier = step_multiplier
        self.spill_chunk_rows = spill_chunk_rows

    @classmethod
    def from_options(cls, options, settings=None) -> WandbLoader:
        """Build from `load.LoadOptions`. Runs may load concurrently from threads: wandb 0.31 keeps one
        run per `wandb.init(reinit="create_new")` and does the I/O in its own wandb-core process."""
        target = WandbTarget.from_env(options.wandb_dir, options.wandb_entity, options.wandb_project_template)
        return cls(target, step_multiplier=options.step_multiplier)

    def next_steps(self) -> list[str]:
        """What the user runs next: the `wandb sync` line for offline runs."""
        return [] if self.target.online else [f"Upload the offline runs with: {self.target.sync_command()}"]

    # -- verbs

    def check_target(self) -> None:
        """Online needs an entity; the wandb dir must be writable (offline runs and artifact staging live there)."""
        if self.target.online and not self.target.entity:
            raise InvalidOptionError(
                "loading to W&B online needs an entity (WANDB_API_KEY is set)",
                "pass --entity YOUR_TEAM (or set WANDB_ENTITY), or unset WANDB_API_KEY to write offline runs",
            )
        self.target.project_template and wandb_project_name("ws/p", self.target.project_template)
        _check_writable(self.target.wandb_dir)
        self.target.apply_env()

    def load_run(self, data_root, files_root, project_id: str, run_id: str) -> LoadResult:
        """Load one run: skip when complete with the same export checksum, otherwise (re)load it."""
        target_run_id = wandb_run_id(project_id, run_id)
        result = LoadResult(project_id, run_id, "loaded", target_run_id=target_run_id)
        try:
            exported = open_exported_run(Path(data_root), Path(files_root), project_id, run_id)
            if not exported.complete:
                raise CorruptPartError(f"the export of run {run_id!r} failed", "export the run again", run=run_id)
            prior = self._prior_state(exported, target_run_id)
            self._discard(prior)
            if prior.state == "complete":
                result.status = "skipped"
                return result
            result.points, result.files = self._load(exported, target_run_id, prior)
        except TerminalError as error:
            result.status, result.error = "failed", error.to_record()
        except _wandb_errors() as error:
            raise TargetUnavailableError(
                f"W&B failed while loading run {run_id!r}: {error}",
                "retry; check WANDB_BASE_URL and the server's health",
            ) from error
        return result

    # -- state

    def project_name(self, project_id: str) -> str:
        return wandb_project_name(project_id, self.target.project_template)

    def _prior_state(self, exported: ExportedRun, target_run_id: str) -> _PriorState:
        if self.target.online:
            from neptune_exporter.loaders.wandb_online import online_prior_state

            return online_prior_state(self, exported, target_run_id)
        return offline_prior_state(self.target.wandb_dir, target_run_id, exported.checksum)

    def _discard(self, prior: _PriorState) -> None:
        for folder in prior.folders:
            shutil.rmtree(folder, ignore_errors=False)

    # -- loading

    def _load(self, exported: ExportedRun, target_run_id: str, prior: _PriorState) -> tuple[int, int]:
        staging_root = self.target.data_dir() / "neptune-staging"
        multiplier = exported.step_multiplier(self.step_multiplier)
        with mapped_run(exported, staging_root, self.spill_chunk_rows) as (content, spill, keymap, staging):
            run = self._init_run(exported, target_run_id, content, keymap, multiplier, prior)
            try:
                history = write_history(run, content, spill, multiplier, staging, prior.next_step)
                self._log_artifacts(run, target_run_id, content, history)
                run.summary[LOAD_STATE] = "complete"
                run.summary[CHECKSUM] = exported.checksum
                run.config.update({LOAD_STATE: "complete"}, allow_val_change=True)
            except BaseException:
                run.finish(exit_code=1)
                raise
            run.finish()
        if not self.target.online:
            await_offline_log(self.target.wandb_dir, target_run_id, exported.checksum)
        return history.points, content.file_count

    def _init_run(
        self,
        exported: ExportedRun,
        target_run_id: str,
        content: RunContent,
        keymap: KeyMap,
        multiplier: int,
        prior: _PriorState,
    ):
        import wandb

        config = dict(content.config)
        config.update(self._provenance(exported, multiplier, content))
        config["neptune.key_map"] = dict(keymap.renamed)
        settings = wandb.Settings(
            mode="online" if self.target.online else "offline",
            root_dir=str(self.target.wandb_dir),
            console="off",
            save_code=False,
            disable_git=True,
            silent=True,
            x_disable_stats=True,
            x_disable_meta=True,
            x_disable_machine_info=True,
        )
        # set only when given: a setting passed explicitly (even its default) overrides WANDB_BASE_URL / WANDB_API_KEY
        if self.target.base_url:
            settings.base_url = self.target.base_url
        if self.target.api_key:
            settings.api_key = self.target.api_key
        init = partial(
            wandb.init,
            entity=self.target.entity,
            project=self.project_name(exported.project_id),
            id=target_run_id,
            name=exported.run_id,
            group=exported.experiment_name or None,
            tags=content.tags,
            config=config,
            allow_val_change=True,
            reinit="create_new",
            settings=settings,
            resume="allow" if self.target.online and prior.state == "partial" else None,
        )
        fork_from = self._fork_from(exported) if prior.state == "absent" else None
        try:
            if fork_from:
                try:
                    return init(fork_from=fork_from)
                except (wandb.errors.CommError, wandb.errors.UsageError) as error:
                    if "fork" not in str(error).lower():
                        raise
                    log.info("W&B server does not fork runs (%s); the parent stays in config only", error)
            return init()
        except (wandb.errors.CommError, wandb.errors.UsageError) as error:
            raise TargetError(
                f"W&B refused run {target_run_id}: {error}", "check --entity, WANDB_API_KEY and WANDB_BASE_URL"
            ) from None

    def _fork_from(self, exported: ExportedRun) -> str | None:
        """`<parent id>?_step=<fork step>` when online and the parent is already in W&B (else None)."""
        if not (self.target.online and exported.fork_parent and exported.fork_step is not None):
            return None
        from neptune_exporter.loaders.wandb_online import fork_point

        return fork_point(self, exported, wandb_run_id(exported.project_id, exported.fork_parent))

    def _provenance(self, exported: ExportedRun, multiplier: int, content: RunContent) -> dict[str, Any]:
        return {
            "neptune.step_offset": content.step_offset(multiplier),
            "neptune.experiment": exported.experiment_name,
            **exported.provenance(multiplier, "partial"),
        }

    def _log_artifacts(self, run, target_run_id: str, content: RunContent, history: _HistoryWriter) -> None:
        import wandb

        for spec in artifact_specs(target_run_id, content, history):
            artifact = wandb.Artifact(spec.name, type=spec.type, metadata=spec.metadata)
            for local, name in spec.entries:
                (artifact.add_dir if local.is_dir() else artifact.add_file)(str(local), name=name)
            run.log_artifact(artifact)


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


def artifact_specs(target_run_id: str, content: RunContent, history: _HistoryWriter) -> list[ArtifactSpec]:
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


def _wandb_errors() -> tuple[type[BaseException], ...]:
    import wandb

    return (wandb.errors.CommError, wandb.errors.Error)


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise OutputPathError(
            f"the W&B folder {directory} is not writable ({error.strerror or error})",
            "pass --wandb-dir pointing at a folder you can write to",
        ) from None


@contextmanager
def mapped_run(exported: ExportedRun, staging_root: Path, spill_chunk_rows: int = 1_000_000):
    """Read a run once: (content, step spill, key map, staging folder), all cleaned up on exit."""
    staging_root.mkdir(parents=True, exist_ok=True)
    keymap = WandbKeyMap(WANDB)
    with (
        tempfile.TemporaryDirectory(dir=staging_root) as staging,
        StepSpill(SPILL_SCHEMA, staging, chunk_rows=spill_chunk_rows) as spill,
    ):
        content = _ExportReader(exported, keymap, spill).read()
        yield content, spill, keymap, Path(staging)


def write_history(
    run, content: RunContent, spill: StepSpill, multiplier: int, staging: Path, from_step: int | None = None
) -> _HistoryWriter:
    """Log every series row in increasing step order to `run` (anything with `.log(row, step=)`)."""
    history = _HistoryWriter(run, content, multiplier, staging)
    for table in spill.merged():
        history.write(table, from_step)
    return history


def await_offline_log(
    wandb_dir: Path, target_run_id: str, checksum: str, timeout_s: float = OFFLINE_LOG_TIMEOUT_SECONDS
) -> None:
    """Wait until the offline log reads back complete: `run.finish()` can return before wandb-core has written
    the last records, and a run is only loaded once a rerun would find it complete (and skip it)."""
    deadline = time.monotonic() + timeout_s
    while not offline_log_complete(wandb_dir, target_run_id, checksum):
        if time.monotonic() >= deadline:
            raise TargetUnavailableError(
                f"the W&B offline log of run {target_run_id!r} was not complete {timeout_s:g} s after the run finished",
                "load again (the incomplete offline run is redone); check free space under --wandb-dir",
            )
        time.sleep(OFFLINE_LOG_POLL_SECONDS)


def offline_log_complete(wandb_dir: Path, target_run_id: str, checksum: str) -> bool:
    """True when a rerun would skip this run: an offline run of this id finished complete with this checksum."""
    return offline_prior_state(wandb_dir, target_run_id, checksum).state == "complete"


def offline_prior_state(wandb_dir: Path, target_run_id: str, checksum: str) -> _PriorState:
    """Offline runs of this id already under the wandb dir: complete (same checksum) or to be redone."""
    from neptune_exporter.storage.wandb_log import find_offline_runs, run_log_path

    folders = find_offline_runs(wandb_dir, target_run_id)
    for folder in reversed(folders):
        log_path = run_log_path(folder)
        if log_path is not None and log_says_complete(log_path, checksum):
            return _PriorState("complete", [f for f in folders if f != folder], complete_log=log_path)
    return _PriorState("partial" if folders else "absent", folders)


def log_says_complete(log_path: Path, checksum: str) -> bool:
    """The `.wandb` log reached `run.finish()` with load state complete and this export checksum (only the exit
    record and those two summary keys are decoded: history is not, so a large run's log is checked quickly)."""
    from neptune_exporter.storage.wandb_log import read_summary_keys

    finished, summary = read_summary_keys(log_path, (LOAD_STATE, CHECKSUM))
    return finished and summary.get(LOAD_STATE) == "complete" and summary.get(CHECKSUM) == checksum


def offline_sync_hint(options) -> str | None:
    """For `load --target wandb` without WANDB_API_KEY: the line that uploads the offline runs (else None)."""
    if getattr(options, "target", None) != "wandb":
        return None
    target = WandbTarget.from_env(options.wandb_dir, options.wandb_entity, options.wandb_project_template)
    return None if target.online else f"offline W&B runs written; upload them with:\n  {target.sync_command()}"

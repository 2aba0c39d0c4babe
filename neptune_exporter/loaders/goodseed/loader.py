"""GoodseedLoader: exported runs become GoodSeed runs (one SQLite file each under the GoodSeed home), idempotently."""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from neptune_exporter.errors import (
    OutputPathError,
    StepOutOfRangeError,
    TargetError,
    TerminalError,
)
from neptune_exporter.loaders.base import ExportedRun, LoadResult, TargetCapabilities, integer_steps, open_exported_run
from neptune_exporter.loaders.goodseed.names import (
    goodseed_home,
    goodseed_module,
    goodseed_run_id,
    inexact_step_message,
    project_name,
    real_steps,
)
from neptune_exporter.loaders.goodseed.writer import GoodseedRunWriter

log = logging.getLogger(__name__)

GOODSEED = TargetCapabilities(
    name="goodseed",
    integer_steps=False,  # steps are REAL: decimal steps stay as they are
    increasing_steps_only=False,
    max_key_length=10**9,  # keys are SQLite TEXT
    key_pattern=r".",
    max_param_length=None,  # local configs are TEXT, never cut
    metrics_per_batch=None,
    params_per_batch=None,
    tags_per_batch=None,
)
LOADING_SUFFIX = "-loading"  # a run being written: `<id>.sqlite-loading`, renamed to `<id>.sqlite` when complete
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


@dataclass
class GoodseedLoader:
    """Loads exported runs into GoodSeed's local storage (`<home>/projects/<project>/runs/<run id>.sqlite`)."""

    home: Path
    project_template: str | None = None
    step_multiplier: int | None = None
    capabilities = GOODSEED

    @classmethod
    def from_options(cls, options, settings=None) -> GoodseedLoader:
        """Build from `load.LoadOptions` (UnsupportedError naming the extra when goodseed is not installed)."""
        return cls(goodseed_home(options.goodseed_home), options.goodseed_project_template, options.step_multiplier)

    # ---------------------------------------------------------------- verbs
    def check_target(self) -> None:
        """The client is installed, the template gives a project, and the home's projects folder is writable."""
        goodseed_module()
        project_name(self.project_template, "workspace/project")
        folder = self.home / "projects"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".neptune-exporter-check-"):
                pass
        except OSError as error:
            raise OutputPathError(
                f"GoodSeed home {self.home} is not writable ({error.strerror or error})",
                "pass a writable --goodseed-home (or GOODSEED_HOME)",
            ) from None

    def load_run(self, data_root, files_root, project_id: str, run_id: str) -> LoadResult:
        """Skip a run complete with this export's checksum; otherwise write it whole beside and swap it in."""
        target_id = goodseed_run_id(project_id, run_id)
        result = LoadResult(project_id, run_id, "loaded", target_run_id=target_id)
        try:
            export = open_exported_run(Path(data_root), Path(files_root), project_id, run_id)
            if not export.complete:
                raise TerminalError(
                    f"the export of run {run_id!r} ({project_id}) is marked failed",
                    "re-export the run, then load again",
                )
            left_out = self.series_left_out(export)
            db_path = self.db_path(project_id, target_id)
            with _path_lock(db_path):  # two Neptune runs a template sends to one GoodSeed run: one loads, one fails
                if self._is_current(db_path, export):
                    result.status = "skipped"
                else:
                    result.points = self._write(export.without(left_out), db_path, target_id)
            result.failed_for_series(left_out)
        except TerminalError as error:
            result.status, result.error = "failed", error.to_record()
        return result

    # ---------------------------------------------------------------- where and what
    def db_path(self, project_id: str, target_id: str) -> Path:
        from goodseed.config import get_run_db_path

        return get_run_db_path(project_name(self.project_template, project_id), target_id, self.home)

    def series_left_out(self, export: ExportedRun) -> dict[str, StepOutOfRangeError]:
        """Series with a step GoodSeed cannot hold exactly (beyond int64 × multiplier, or no exact float64): each
        fails alone, the run's other attributes load."""
        if self.step_multiplier is not None:
            export.step_multiplier(self.step_multiplier)  # InvalidOptionError when a step does not become whole
        left_out = export.series_beyond_range(self.step_multiplier) if self.step_multiplier else {}
        for path, unscaled in export.series_steps_by_path():
            if path in left_out:
                continue
            steps = integer_steps(unscaled, self.step_multiplier, path) if self.step_multiplier else unscaled
            _, exact = real_steps(steps, self.step_multiplier)
            if not exact.all():
                bad = int(unscaled[~exact][0])
                left_out[path] = StepOutOfRangeError(
                    inexact_step_message(path, bad, self.step_multiplier),
                    "GoodSeed steps are float64: load without --step-multiplier (exact up to 2**33 with 6 decimals, "
                    "2**53 whole), or with a smaller one",
                    run=export.run_id,
                    attribute=path,
                )
        return left_out

    def provenance(self, export: ExportedRun) -> dict:
        record = export.provenance(self.step_multiplier or 1, "loading")
        if record["neptune.fork_step"] is not None:
            record["neptune.fork_step"] = float(record["neptune.fork_step"])
        return record

    # ---------------------------------------------------------------- state
    def _is_current(self, db_path: Path, export: ExportedRun) -> bool:
        """True when the run there is this export loaded complete; False when absent or from another export (it is
        replaced); TargetError when it is not this Neptune run's (another run, or a run GoodSeed users made)."""
        _discard(_loading_path(db_path))
        if not db_path.exists():
            return False
        from goodseed.storage import read_configs

        try:
            configs = read_configs(db_path)
        except sqlite3.Error as error:
            raise TargetError(
                f"GoodSeed run database {db_path} cannot be read ({error})",
                "move it away (it is not a complete load of this run), then load again",
            ) from None
        owner = (configs.get("neptune.project"), configs.get("neptune.run_id"))
        if owner != (export.project_id, export.run_id):
            raise TargetError(
                f"GoodSeed run {db_path.stem} in {db_path.parent.parent} already holds "
                + (f"Neptune run {owner[1]} of {owner[0]}" if owner[0] else "a run not loaded from Neptune"),
                "use a --goodseed-project-template with {project} so runs of different projects stay apart, "
                "or another --goodseed-home",
            )
        wanted: dict[str, object] = {"neptune.load_state": "complete", "neptune.export_checksum": export.checksum}
        wanted["neptune.step_multiplier"] = self.step_multiplier or 1
        return all(configs.get(key) == value for key, value in wanted.items())

    def _write(self, export: ExportedRun, db_path: Path, target_id: str) -> int:
        """Write the run whole at `<id>.sqlite-loading`, then rename it over `<id>.sqlite` (a killed load leaves only
        the `-loading` file, which the next load discards)."""
        loading = _loading_path(db_path)
        project = project_name(self.project_template, export.project_id)
        writer = GoodseedRunWriter(loading, export, target_id, project, self.step_multiplier)
        try:
            writer.open_run(self.provenance(export))
            writer.write_all()
            writer.close_run()
        except BaseException:
            writer.abandon()
            _discard(loading)
            raise
        for suffix in SQLITE_COMPANIONS[1:]:  # the replaced run's WAL must never meet the new database
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        os.replace(loading, db_path)
        _discard(loading)  # its emptied companions, if SQLite left any
        return writer.points


_PATH_LOCKS: dict[Path, threading.Lock] = {}
_PATH_LOCKS_GUARD = threading.Lock()


def _path_lock(db_path: Path) -> threading.Lock:
    """The lock of one run database in this process (other processes: the load lock of the export and target)."""
    with _PATH_LOCKS_GUARD:
        return _PATH_LOCKS.setdefault(db_path, threading.Lock())


def _loading_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + LOADING_SUFFIX)


def _discard(db_path: Path) -> None:
    for suffix in SQLITE_COMPANIONS:
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)

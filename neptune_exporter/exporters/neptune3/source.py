"""Neptune3Source: reads Neptune 3.x projects with neptune-query (access check, run listing, one run's export)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from neptune_exporter.errors import InvalidTokenError, UnsupportedError
from neptune_exporter.exporters.base import ProgressCallback, RunContent
from neptune_exporter.exporters.neptune3.client import (
    configure_neptune_query,
    neptune_errors,
    required_token,
    server_of_token,
)
from neptune_exporter.exporters.neptune3.discovery import (
    LISTING_ATTRIBUTES,
    build_run_filter,
    check_project_id,
    run_selected,
    runs_from_table,
)
from neptune_exporter.exporters.neptune3.run_export import RunExport
from neptune_exporter.model import ProjectId, RunRef
from neptune_exporter.selection import AttributeSelection, RunSelection, compile_regex
from neptune_exporter.settings import Settings, neptune_api_token
from neptune_exporter.storage.manifest import Watermark


class Neptune3Source:
    """Reads Neptune 3.x projects with neptune-query (the public API only)."""

    kind = "neptune3"

    def __init__(self, api_token: str | None = None, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        self._token = neptune_api_token(api_token)
        try:
            self.server = server_of_token(self._token)
        except InvalidTokenError:
            self.server = ""
        self._client_ready = False

    def __repr__(self) -> str:  # never shows the token
        return f"Neptune3Source(server={self.server!r})"

    def _ready(self) -> None:
        """Validate the token once; make it and our knobs neptune-query's (process-wide) configuration before every call."""
        import neptune_query

        token = required_token(self._token)
        if not self._client_ready:
            self.server = server_of_token(token)
            self._client_ready = True
        configure_neptune_query(self.settings)
        neptune_query.set_api_token(token)

    # ---------------------------------------------------------------- access and listing

    def check_access(self, project_id: ProjectId) -> None:
        """One small query: token accepted and project readable, else InvalidTokenError / ProjectNotFoundError."""
        check_project_id(project_id)
        self._ready()
        from neptune_query import runs as nq_runs
        from neptune_query.filters import Attribute

        with neptune_errors(project=project_id):
            nq_runs.fetch_runs_table(
                project=project_id,
                attributes=["sys/id"],
                sort_by=Attribute("sys/creation_time", type="datetime"),
                limit=1,
            )

    def list_projects(self, workspace: str) -> list[ProjectId]:
        raise UnsupportedError(
            f"neptune-query cannot list the projects of workspace {workspace!r}",
            "name the projects with -p workspace/project (repeatable)",
        )

    def list_runs(self, project_id: ProjectId, selection: RunSelection) -> list[RunRef]:
        """Runs of the project matching the selection (server-side filter, then exact local checks)."""
        check_project_id(project_id)
        runs_pattern = compile_regex(selection.runs_regex, "--runs")
        experiments_pattern = compile_regex(selection.experiments_regex, "--experiments")
        server_filter = build_run_filter(selection)
        self._ready()
        frame = self._listing_frame(project_id, server_filter)
        refs = [
            ref
            for ref in runs_from_table(project_id, frame)
            if run_selected(ref, selection, runs_pattern, experiments_pattern)
        ]
        return refs

    def _listing_frame(self, project_id: ProjectId, server_filter) -> pd.DataFrame:
        from neptune_query import runs as nq_runs
        from neptune_query.filters import Attribute

        with neptune_errors(project=project_id, query=server_filter is not None):
            return nq_runs.fetch_runs_table(
                project=project_id,
                runs=server_filter,
                attributes=list(LISTING_ATTRIBUTES),
                sort_by=Attribute("sys/creation_time", type="datetime"),
                sort_direction="asc",
                type_suffix_in_column_names=True,
            )

    # ---------------------------------------------------------------- export

    def export_run(
        self,
        run: RunRef,
        attributes: AttributeSelection,
        files_root: Path,
        watermarks: dict[str, Watermark] | None = None,
        progress: ProgressCallback | None = None,
    ) -> RunContent:
        """A lazy stream of the run's rows; files are downloaded while the stream is consumed."""
        compile_regex(attributes.regex, "--attributes")
        self._ready()
        export = RunExport(self.settings, run, attributes, Path(files_root), watermarks or {}, progress, self._ready)
        content = RunContent(
            batches=export.batches(),
            files=export.files,
            source_facts=export.facts,
            attribute_errors=export.attribute_errors,
        )
        return content

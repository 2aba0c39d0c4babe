"""Session-wide test settings: Prefect in a temporary home, quiet, and one test harness per session."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

from neptune_exporter.prefect_env import configure_prefect

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="neptune-exporter-prefect-home-")
configure_prefect()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test server (temporary SQLite) for the whole session: it costs ~18 s to start."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield

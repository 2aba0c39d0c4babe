"""Shared integration fixtures: fake Neptune servers on 127.0.0.1 (awkward workspace, factories, neptune-query wiring)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from neptune_exporter.fake_neptune import FakeNeptune, FaultConfig
from neptune_exporter.fake_neptune.datasets import awkward_workspace
from neptune_exporter.fake_neptune.store import Workspace


@pytest.fixture(scope="session")
def awkward_fake() -> Iterator[FakeNeptune]:
    """`datasets.awkward_workspace()` served for the whole session. Read-only: never mutate it or set faults."""
    with FakeNeptune(awkward_workspace()) as fake:
        yield fake
    assert not fake.server_errors, fake.server_errors[0]


@pytest.fixture
def fake_factory() -> Iterator[Callable[..., FakeNeptune]]:
    """make(workspace=None, faults=None) -> a started FakeNeptune (awkward workspace by default), stopped after."""
    started: list[FakeNeptune] = []

    def make(workspace: Workspace | None = None, faults: FaultConfig | None = None) -> FakeNeptune:
        fake = FakeNeptune(workspace or awkward_workspace(), faults=faults).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()
    errors = [e for fake in started for e in fake.server_errors]
    assert not errors, errors[0]


@pytest.fixture
def use_neptune_query(monkeypatch) -> Callable[[FakeNeptune], None]:
    """Point neptune-query at a fake: use(fake) sets its API token; pass `project=` on every call.

    neptune-query reads NEPTUNE_API_TOKEN/NEPTUNE_PROJECT only at import, and caches one HTTP client per API
    token. Each FakeNeptune has its own token, so `neptune_query.set_api_token(fake.api_token)` switches servers
    within one pytest session. Retry knobs (NEPTUNE_QUERY_RETRY_SOFT_TIMEOUT/HARD_TIMEOUT) are read per call:
    set them with monkeypatch.setenv.
    """
    import neptune_query

    # neptune-query's own retry budget (1800 s / 3600 s), not one an earlier test's export left in this process's
    # environment (the exporter configures neptune-query through it); a test sets a shorter one itself
    monkeypatch.delenv("NEPTUNE_QUERY_RETRY_SOFT_TIMEOUT", raising=False)
    monkeypatch.delenv("NEPTUNE_QUERY_RETRY_HARD_TIMEOUT", raising=False)

    def use(fake: FakeNeptune) -> None:
        neptune_query.set_api_token(fake.api_token)

    return use

"""FakeComet: the REST endpoints `comet upload` (comet_ml's OfflineSender) calls, on 127.0.0.1, recording per
experiment key what arrived: project, workspace, name, tags, parameters, others, metric points and asset bytes."""

from __future__ import annotations

import gzip
import json
import threading
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_KEY = "fake" + "0" * 28


@dataclass
class FakeExperiment:
    """What arrived for one experiment key."""

    key: str
    project: str | None = None
    workspace: str | None = None
    tags: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    others: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)  # {"name", "value", "step", "timestamp"}
    assets: list[dict] = field(default_factory=list)  # {"file_name", "type", "step", "metadata", "data"}
    times: dict[str, Any] = field(default_factory=dict)


class State:
    """Everything the fake holds, guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.experiments: dict[str, FakeExperiment] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self.unknown: list[tuple[str, str]] = []  # routes answered with an empty JSON object

    def experiment(self, key: str) -> FakeExperiment:
        if key not in self.experiments:
            self.experiments[key] = FakeExperiment(key)
        return self.experiments[key]

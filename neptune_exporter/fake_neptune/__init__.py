"""A local Neptune server speaking the neptune-query (3.x) and neptune-client (2.x) wire protocols."""

from neptune_exporter.fake_neptune.faults import FaultConfig
from neptune_exporter.fake_neptune.server import FakeNeptune, FakeNeptuneProcess

__all__ = ["FakeNeptune", "FakeNeptuneProcess", "FaultConfig"]

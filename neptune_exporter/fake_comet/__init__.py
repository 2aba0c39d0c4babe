"""A local stand-in for the Comet endpoints `comet upload` uses (tests, bench); never imported by the product."""

from neptune_exporter.fake_comet.server import FakeComet, FakeExperiment

__all__ = ["FakeComet", "FakeExperiment"]

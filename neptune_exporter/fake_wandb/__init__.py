"""A small local stand-in for the W&B endpoints `wandb sync`, `wandb.init` (online) and `wandb.Api` use."""

from neptune_exporter.fake_wandb.server import FakeRun, FakeWandb

__all__ = ["FakeWandb", "FakeRun"]

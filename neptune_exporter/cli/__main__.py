"""`python -m neptune_exporter.cli`: the same as the `neptune-exporter` console script."""

from neptune_exporter.cli import main

main()

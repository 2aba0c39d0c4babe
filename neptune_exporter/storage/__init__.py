"""On-disk contract: Parquet parts, per-run manifests, project summaries."""

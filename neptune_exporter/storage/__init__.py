"""On-disk contract, imported by sources (exporters/) and targets (loaders/, validation/), importing neither.

Modules: parquet.py (parts: writer, reader, listing), manifest.py (per-run manifest + watermarks), files.py
(exported files: staging → publish, sha256, safe names), exported_run.py (reading an export, ours or the peer
tool's; provenance names), incremental.py (plan / merge / stray rules), summary.py (what is on disk), integrity.py
(every part checked against its manifest before a reader trusts it), lock.py (one writer per data path).

File paths: `file_value.path` (and a manifest's `files[].path`) is relative to `<files>/<project-dir>/`, exactly
as the peer tool neptune-ai/neptune-exporter stores it (it downloads into `files/sanitize(project)` and its loaders
open `files / sanitize(project) / path`); model-registry files keep their scope folder inside the path
(`models/...`, `model_versions/...`). `model.file_value_path` writes such paths and `model.resolve_file_value`
reads them (refusing paths that climb out of the folder). Manifests before format 2 stored paths relative to
`<files>/`; the export planner redoes such runs and loaders refuse their file rows with a remedy.
"""

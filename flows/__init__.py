"""Prefect flows: orchestration only (export, load, validate, migrate)."""

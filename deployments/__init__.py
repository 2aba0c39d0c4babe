"""Prefect deployments: serve entry and prefect.yaml."""

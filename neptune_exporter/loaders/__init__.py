"""Targets: one module per destination, same verbs (see base.py)."""

"""Sources: one module per Neptune generation, same verbs (see base.py)."""

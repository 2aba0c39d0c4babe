"""Compare source, export and target: counts, values, checksums → reports."""

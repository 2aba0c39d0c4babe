"""neptune-exporter: move Neptune 2.x/3.x runs to Parquet + files, MLflow and Weights & Biases."""

__version__ = "0.1.0"

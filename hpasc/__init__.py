"""hpasc: an end-to-end pipeline for the HPA single-cell classification task."""

__version__ = "0.1.0"

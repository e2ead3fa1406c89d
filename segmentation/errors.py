"""Errors the pipeline degrades on instead of failing the night."""

from __future__ import annotations


class InsufficientData(ValueError):
    """The delivery is too small, or its history too short, to fit a model (too few patients
    to cluster, too few outcomes to train and validate the risk model). The pipeline skips or
    reuses the model and carries on; anything else is a real error."""

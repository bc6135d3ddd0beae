"""Benchmark statistics: mean with a 95% confidence interval, AUROC and precision-recall for OOS detection."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fewintent.model.evaluation import auroc, precision_recall_curve

__all__ = ["Z95", "auroc", "mean_ci95", "percentile_ms", "precision_recall_curve"]

Z95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


def mean_ci95(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval, ``1.96 * std / sqrt(n)`` (sample std, ddof=1).

    This is the interval the few-shot literature reports for 600 episodes (normal approximation).

    Example:
        >>> mean_ci95([0.0, 1.0, 0.0, 1.0])
        (0.5, 0.5658...)
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_ci95 needs at least one value")
    if x.size == 1:
        return float(x[0]), 0.0
    return float(x.mean()), float(Z95 * x.std(ddof=1) / math.sqrt(x.size))


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of durations given in seconds, in milliseconds."""
    return float(np.percentile(np.asarray(seconds, dtype=np.float64), q) * 1000.0)

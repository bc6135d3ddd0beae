"""Benchmark statistics: mean with a 95% confidence interval, AUROC and precision-recall for OOS detection."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

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


def auroc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Area under the ROC curve: the chance a positive scores above a negative (ties count half).

    Computed from ranks (Mann-Whitney U), exact and O(n log n).
    """
    pos = np.asarray(positive_scores, dtype=np.float64)
    neg = np.asarray(negative_scores, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    scores = np.concatenate([pos, neg])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(scores.size, dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    i = 0
    while i < scores.size:
        j = i
        while j + 1 < scores.size and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def precision_recall_curve(
    positive_scores: np.ndarray, negative_scores: np.ndarray, *, max_points: int = 101
) -> dict[str, list[float]]:
    """Precision and recall of "positive" (here: out of scope) at every cut, thinned to ``max_points``.

    A query counts as positive when its score is at least the cut; the curve runs from high cuts (low recall)
    to low cuts (recall 1).
    """
    pos = np.asarray(positive_scores, dtype=np.float64)
    neg = np.asarray(negative_scores, dtype=np.float64)
    scores = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(is_pos[order])
    fp = np.cumsum(1 - is_pos[order])
    # keep the last index of each run of equal scores: a cut cannot split ties
    last = np.r_[np.diff(scores[order]) != 0, True]
    tp, fp = tp[last], fp[last]
    recall = tp / max(pos.size, 1)
    precision = tp / np.maximum(tp + fp, 1)
    if recall.size > max_points:
        keep = np.unique(np.linspace(0, recall.size - 1, max_points).round().astype(int))
        recall, precision = recall[keep], precision[keep]
    return {"recall": [round(float(r), 4) for r in recall], "precision": [round(float(p), 4) for p in precision]}


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of durations given in seconds, in milliseconds."""
    return float(np.percentile(np.asarray(seconds, dtype=np.float64), q) * 1000.0)

"""The ``oos`` protocol at stated out-of-scope shares: the test set subsampled to 10%, 30% and 50% out of scope, and
the thresholds compared there: support-only, ``calibrate --logs`` on unlabelled messages made from ``valid``, and
the oracle (the best cut on the scored rows themselves: a ceiling, not a method).

Nothing here encodes: every threshold and metric comes from the scores a method's outcome already holds for its
``valid`` and ``test`` query sets, indexed by the subsample.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fewintent.bench.methods import Outcome
from fewintent.data.intentset import IntentSet
from fewintent.model.classifier import IntentClassifier
from fewintent.model.traffic import calibrate_on_log_scores, check_logs

OOS_SHARES = (0.1, 0.3, 0.5)
"""The out-of-scope shares of the test set (and of the logs) the share rows are measured at."""
LOG_OBJECTIVES = {"logs": "mcc", "logs-f1": "f1"}
"""Threshold source -> the ``calibrate --logs`` objective (``mcc`` is the product's default)."""
ORACLE_OBJECTIVES = {"oracle": "mcc", "oracle-f1": "f1"}
"""Threshold source -> what the oracle's cut maximises on the scored rows (a ceiling, not a method)."""
SHARE_SOURCES = ("support", *LOG_OBJECTIVES, *ORACLE_OBJECTIVES)
"""Where a share row's threshold comes from, in the order written (``--missing-only`` checks the last)."""


def share_counts(n_in: int, n_oos: int, share: float) -> tuple[int, int]:
    """How many in-scope and OOS rows make ``share`` out of scope from pools of these sizes: the OOS part is
    subsampled, or the in-scope part where the OOS pool is too small (``scripts/valid_oos_logs.py`` cuts ``valid``
    with it too)."""
    want = round(share / (1 - share) * n_in)
    if want <= n_oos:
        return n_in, want
    return round(n_oos * (1 - share) / share), n_oos


@dataclass(frozen=True)
class Sample:
    """Rows of one evaluation set (in-scope rows first, then its OOS rows) at one out-of-scope share."""

    share: float
    in_scope: np.ndarray
    """Indices into the set's in-scope rows, in their order."""
    oos: np.ndarray
    """Indices into the set's OOS rows, in their order."""

    def rows(self, n_in: int) -> np.ndarray:
        """Indices into the set's query scores (its in-scope rows, then its OOS rows: ``texts + oos_texts``)."""
        return np.r_[self.in_scope, n_in + self.oos].astype(np.int64)

    def of(self, data: IntentSet) -> IntentSet:
        """The subsample as an evaluation set."""
        return IntentSet(
            [data.texts[i] for i in self.in_scope],
            [data.intents[i] for i in self.in_scope],
            [data.oos_texts[i] for i in self.oos],
            data.oos_label,
        )


def share_samples(data: IntentSet, seed: int, shares: Sequence[float] = OOS_SHARES) -> list[Sample]:
    """``data`` subsampled to each share, seeded: the same rows for every method and base of a run. One seeded
    order of each part, cut to each share's counts, so a row in a smaller subsample is in the larger ones too."""
    rng = np.random.default_rng(seed)
    order_in, order_oos = rng.permutation(len(data.texts)), rng.permutation(len(data.oos_texts))
    out = []
    for share in shares:
        n_in, n_oos = share_counts(len(data.texts), len(data.oos_texts), share)
        out.append(Sample(share, np.sort(order_in[:n_in]), np.sort(order_oos[:n_oos])))
    return out


def subsampled(outcome: Outcome, key: str, rows: np.ndarray) -> Outcome:
    """The outcome with only query set ``key``, cut to ``rows`` (what ``oos_metrics`` reads)."""
    return Outcome(
        outcome.labels,
        {key: outcome.scores[key][rows]},
        outcome.adapt_seconds,
        outcome.support_threshold,
        outcome.score_kind,
        oos_scores={key: outcome.oos_score(key)[rows]},
    )


@dataclass(frozen=True)
class LogThreshold:
    threshold: float
    estimated_share: float
    n_logs: int


def logs_threshold(
    clf: IntentClassifier, texts: list[str], scores: np.ndarray, objective: str, source: str
) -> LogThreshold:
    """What ``fewintent calibrate --logs`` sets on these unlabelled messages (their OOS scores already computed):
    refused, as the product refuses (FewIntentError), on logs too few or too alike. ``clf`` is left as it was."""
    check_logs(texts, source)
    calibrated = copy.copy(clf)  # calibrating sets its threshold and meta: a shallow copy's, not the outcome's
    calibrated.meta = dict(clf.meta)
    report = calibrate_on_log_scores(calibrated, scores, source=source, objective=objective)
    return LogThreshold(report.threshold, report.oos_share, len(texts))


def best_mcc_threshold(scores: np.ndarray, top1: Sequence[str], gold: Sequence[str], oos_label: str) -> float:
    """The cut on ``scores`` (below it: out of scope, else ``top1``) with the best MCC over intents + OOS against
    ``gold`` (``evaluate``'s, :func:`multiclass_mcc`), every cut between two distinct scores tried at once; ties
    keep more in-scope rows."""
    order = np.argsort(scores, kind="stable")
    s = np.asarray(scores, dtype=np.float64)[order]
    names = sorted({*gold, *top1, oos_label})
    index = {name: i for i, name in enumerate(names)}
    g = np.array([index[x] for x in gold])[order]
    p = np.array([index[x] for x in top1])[order]
    oos, k, n = index[oos_label], len(names), len(s)
    t = np.bincount(g, minlength=k).astype(np.float64)
    # rows [:j] are answered out of scope (their top-1 counts leave p_k; p_oos becomes j), rows [j:] keep top-1
    below = np.zeros((n + 1, k))
    below[1:] = np.cumsum(np.eye(k)[p], axis=0)
    total = below[-1]
    j = np.arange(n + 1, dtype=np.float64)
    pred = total[None, :] - below
    pred[:, oos] += j
    hit = np.r_[0, np.cumsum((g == p) & (g != oos))]  # in-scope rows named right, cumulated
    right = np.r_[0, np.cumsum(g == oos)] + hit[-1] - hit
    num = right * n - pred @ t
    denom = np.sqrt(np.maximum(n * n - (pred**2).sum(1), 0.0)) * np.sqrt(max(n * n - float(t @ t), 0.0))
    mcc = np.where(denom > 0, num / np.where(denom > 0, denom, 1.0), 0.0)
    # a cut only between two distinct scores (tied rows go together), or below / above them all
    valid = np.r_[True, s[1:] > s[:-1], True]
    best = int(np.flatnonzero(valid & (mcc >= mcc[valid].max() - 1e-12))[0])
    if best == 0:
        return float(s[0] - 1e-6)
    if best == n:
        return float(s[-1] + 1e-6)
    return float((s[best - 1] + s[best]) / 2)


def no_classifier(method: str) -> str:
    return f"{method} is not the product's classifier: calibrating from unlabelled logs (calibrate --logs) needs one"

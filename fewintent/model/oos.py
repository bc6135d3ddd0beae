"""Out-of-scope scores: how in-scope a message looks (higher = more in scope), and their support-only calibration.

The default, ``prototype`` (best cosine to an intent's mean example), won on the ``valid`` splits against the
others kept here as options (see README, "Out-of-scope scores"); each is calibrated without test data: the scores
the support examples get when they are held out (leave-one-out where exact and cheap, else k-fold).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from fewintent.errors import FewIntentError
from fewintent.heads.logistic import fit_logistic
from fewintent.heads.prototypes import class_means, l2_normalize, pooled_covariance
from fewintent.model.calibration import leave_one_out_scores
from fewintent.model.crossval import fold_of

MAHALANOBIS_SHRINKAGE = 0.6
"""Share of the shared covariance replaced by its average variance (chosen on ``valid``: 0.1 / 0.3 / 0.6)."""
_FOLDS = 5


class OosScore(str, Enum):
    """Which score the out-of-scope threshold cuts."""

    PROTOTYPE = "prototype"
    """Best cosine similarity to an intent's prototype (mean example). The default: best AUROC on ``valid``."""
    NEAREST = "nearest"
    """Best cosine similarity to any single example."""
    MAHALANOBIS = "mahalanobis"
    """Minus the smallest Mahalanobis distance to an intent mean (shared covariance, shrunk)."""
    ENERGY = "energy"
    """Log-sum-exp of the linear head's logits (needs ``head='linear'``)."""

    @property
    def is_cosine(self) -> bool:
        """Scores in [-1, 1]: thresholds are checked against that range and confidences use the cosine scale."""
        return self in (OosScore.PROTOTYPE, OosScore.NEAREST)


@dataclass(frozen=True)
class OosScorer:
    """Everything one score kind needs, derived from the support set (never saved: rebuilt on load)."""

    kind: OosScore
    prototypes: np.ndarray
    support: np.ndarray
    means: np.ndarray | None = None
    precision: np.ndarray | None = None  # inverse shrunk covariance
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None

    @classmethod
    def fit(
        cls,
        kind: OosScore,
        support: np.ndarray,
        y: np.ndarray,
        n_classes: int,
        *,
        prototypes: np.ndarray | None = None,
        head: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> OosScorer:
        if prototypes is None:
            prototypes = l2_normalize(class_means(support, y, n_classes))
        if kind is OosScore.MAHALANOBIS:
            means = class_means(support, y, n_classes)
            cov = pooled_covariance(support, y, means)
            dim = support.shape[1]
            a = MAHALANOBIS_SHRINKAGE
            # (+ a tiny ridge: one example per intent leaves no spread at all, and the inverse must exist)
            shrunk = (1 - a) * cov + (a * np.trace(cov) / dim + 1e-6) * np.eye(dim, dtype=cov.dtype)
            return cls(kind, prototypes, support, means=means, precision=np.linalg.inv(shrunk))
        if kind is OosScore.ENERGY:
            if head is None:
                raise FewIntentError("the 'energy' out-of-scope score needs the linear head (--head linear)")
            return cls(kind, prototypes, support, weight=head[0], bias=head[1])
        return cls(kind, prototypes, support)

    def __call__(self, emb: np.ndarray, sims: np.ndarray | None = None) -> np.ndarray:
        """Scores of embedded messages; ``sims`` (cosine to the prototypes) saves a matmul when given."""
        if len(emb) == 0:
            return np.empty(0, dtype=np.float32)
        if self.kind is OosScore.PROTOTYPE:
            return (sims if sims is not None else emb @ self.prototypes.T).max(axis=1)
        if self.kind is OosScore.NEAREST:
            return (emb @ self.support.T).max(axis=1)
        if self.kind is OosScore.ENERGY:
            assert self.weight is not None and self.bias is not None
            logits = emb @ self.weight.T + self.bias
            top = logits.max(axis=1)
            return top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
        assert self.means is not None and self.precision is not None
        best = np.full(len(emb), np.inf, dtype=emb.dtype)
        for start in range(0, len(self.means), 64):  # (messages, intents, dim) in chunks: bounded memory
            diff = emb[:, None, :] - self.means[None, start : start + 64]
            dist = np.einsum("qcd,de,qce->qc", diff, self.precision, diff, optimize=True)
            best = np.minimum(best, dist.min(axis=1))
        return -best


def held_out_scores(
    kind: OosScore,
    support: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    c: float,
    fixed: tuple[np.ndarray, np.ndarray] | None = None,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """The score each support example gets when it is not part of the support set: what in-scope messages will
    score. Exact leave-one-out for the cosine scores; ``k``-fold (k <= 5) for the fitted ones. Empty when no intent
    has two examples. ``fixed`` rows (embeddings, labels: the intents' names) are in every fitted set and never
    scored, as in the deployed scorer. ``rows`` (a mask) scores only those examples; the others still count in the
    fitted sets."""
    if kind is OosScore.PROTOTYPE:
        return leave_one_out_scores(support, y, n_classes, fixed, rows=rows)
    if kind is OosScore.NEAREST:
        others = support if fixed is None else np.concatenate([support, fixed[0]])
        sims = support @ others.T
        np.fill_diagonal(sims[:, : len(support)], -np.inf)
        keep = np.bincount(y, minlength=n_classes)[y] >= 2
        if rows is not None:
            keep &= rows
        return sims.max(axis=1)[keep] if len(support) else np.empty(0)
    counts = np.bincount(y, minlength=n_classes)
    folds = int(min(_FOLDS, int(counts[counts > 0].min())))
    if folds < 2:
        return np.empty(0)
    fold = fold_of(y, folds)
    out = np.empty(len(y), dtype=np.float32)
    for f in range(folds):
        train, held = fold != f, fold == f
        s, s_y = support[train], y[train]
        if fixed is not None:
            s, s_y = np.concatenate([s, fixed[0]]), np.concatenate([s_y, fixed[1]])
        head = None
        if kind is OosScore.ENERGY:
            head = fit_logistic(s, s_y, n_classes, c=c)
        scorer = OosScorer.fit(kind, s, s_y, n_classes, head=head)
        out[held] = scorer(support[held])
    return out if rows is None else out[rows]

"""Out-of-scope scores: how in-scope a message looks (higher = more in scope), and their support-only calibration.

Each score is one class that fits itself on the support rows, scores embeddings, and says what its held-out
support scores are (what in-scope messages will score: the threshold is calibrated on them). They are picked by
name from :data:`OOS_SCORES`; nothing else branches on which score it is. Their state is derived from the support
set, so a model directory stores none of it: loading fits them again from the saved rows.

The default, ``prototype`` (best cosine to an intent's mean example), won on the ``valid`` splits against the
others kept here as options (see README, "Out-of-scope scores").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np

from fewintent.errors import FewIntentError
from fewintent.heads.decision import DecisionHead, HeadParams
from fewintent.heads.prototypes import class_means, l2_normalize, pooled_covariance
from fewintent.model.calibration import leave_one_out_scores
from fewintent.model.crossval import fold_of

MAHALANOBIS_SHRINKAGE = 0.6
"""Share of the shared covariance replaced by its average variance (chosen on ``valid``: 0.1 / 0.3 / 0.6)."""
_FOLDS = 5

Rows = tuple[np.ndarray, np.ndarray]
HeadFitter = Callable[[np.ndarray, np.ndarray, int], DecisionHead]
"""Fits the classifier's head on rows (embeddings, label indices, number of labels): what fitted scores need."""


def head_fitter(head: type[DecisionHead], params: HeadParams) -> HeadFitter:
    """Fits ``head`` with ``params`` on any rows, its prototypes their class means (each fold of a k-fold score)."""
    return lambda x, y, k: head.fit(x, y, k, l2_normalize(class_means(x, y, k)), params)


class OosScorer:
    """One out-of-scope score, fitted on the support rows (names included). Subclasses set ``name``,
    ``description`` and ``cosine``, and register in :data:`OOS_SCORES`."""

    name: ClassVar[str]
    description: ClassVar[str]
    cosine: ClassVar[bool] = False
    """Scores are cosines in [-1, 1]: thresholds are checked against that range and confidences use the cosine
    scale; other scores are unbounded (confidence moves by their spread)."""
    highest: ClassVar[float | None] = None
    """The largest score there can be (a cosine's is 1, minus a distance's 0): a threshold above it would answer
    every message out of scope, so it is refused."""

    def __init__(self, prototypes: np.ndarray) -> None:
        self.prototypes = prototypes

    @classmethod
    def fit(cls, support: np.ndarray, y: np.ndarray, n_classes: int, prototypes: np.ndarray, head: DecisionHead):  # type: ignore[no-untyped-def]
        """The score for these rows; ``head`` is the classifier's fitted head (``prototypes`` are L2-normalised)."""
        return cls(prototypes)

    def __call__(self, emb: np.ndarray, sims: np.ndarray | None = None) -> np.ndarray:
        """Scores of embedded messages; ``sims`` (cosine to the prototypes) saves a matmul when given."""
        if len(emb) == 0:
            return np.empty(0, dtype=np.float32)
        return self.score(emb, sims if sims is not None else emb @ self.prototypes.T)

    def score(self, emb: np.ndarray, sims: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def held_out(
        cls,
        support: np.ndarray,
        y: np.ndarray,
        n_classes: int,
        fit_head: HeadFitter,
        fixed: Rows | None = None,
        rows: np.ndarray | None = None,
    ) -> np.ndarray:
        """The score each support example gets when it is not part of the support set: what in-scope messages
        will score. ``k``-fold (k <= 5) refits here; exact leave-one-out where a subclass can. Empty when no intent
        has two examples. ``fixed`` rows (the intents' names) are in every fitted set and never scored, as in the
        deployed scorer; ``rows`` (a mask) scores only those examples (the others still count in the fitted sets)."""
        counts = np.bincount(y, minlength=n_classes)
        folds = int(min(_FOLDS, int(counts[counts > 0].min()))) if len(y) else 0
        if folds < 2:
            return np.empty(0)
        fold = fold_of(y, folds)
        out = np.empty(len(y), dtype=np.float32)
        for f in range(folds):
            train, held = fold != f, fold == f
            s, s_y = support[train], y[train]
            if fixed is not None:
                s, s_y = np.concatenate([s, fixed[0]]), np.concatenate([s_y, fixed[1]])
            protos = l2_normalize(class_means(s, s_y, n_classes))
            out[held] = cls.fit(s, s_y, n_classes, protos, fit_head(s, s_y, n_classes))(support[held])
        return out if rows is None else out[rows]


class PrototypeScore(OosScorer):
    name = "prototype"
    description = "best cosine similarity to an intent's prototype (mean example); the default, best AUROC on valid"
    cosine = True

    def score(self, emb: np.ndarray, sims: np.ndarray) -> np.ndarray:
        return sims.max(axis=1)

    @classmethod
    def held_out(cls, support, y, n_classes, fit_head, fixed=None, rows=None):  # type: ignore[no-untyped-def]
        return leave_one_out_scores(support, y, n_classes, fixed, rows=rows)  # exact and cheap


class NearestScore(OosScorer):
    name = "nearest"
    description = "best cosine similarity to any single example"
    cosine = True

    def __init__(self, prototypes: np.ndarray, support: np.ndarray) -> None:
        super().__init__(prototypes)
        self.support = support

    @classmethod
    def fit(cls, support, y, n_classes, prototypes, head):  # type: ignore[no-untyped-def]
        return cls(prototypes, support)

    def score(self, emb: np.ndarray, sims: np.ndarray) -> np.ndarray:
        return (emb @ self.support.T).max(axis=1)

    @classmethod
    def held_out(cls, support, y, n_classes, fit_head, fixed=None, rows=None):  # type: ignore[no-untyped-def]
        others = support if fixed is None else np.concatenate([support, fixed[0]])
        sims = support @ others.T
        np.fill_diagonal(sims[:, : len(support)], -np.inf)
        keep = np.bincount(y, minlength=n_classes)[y] >= 2
        if rows is not None:
            keep &= rows
        return sims.max(axis=1)[keep] if len(support) else np.empty(0)


class MahalanobisScore(OosScorer):
    name = "mahalanobis"
    description = "minus the smallest Mahalanobis distance to an intent mean (shared covariance, shrunk)"
    highest = 0.0

    def __init__(self, prototypes: np.ndarray, means: np.ndarray, precision: np.ndarray) -> None:
        super().__init__(prototypes)
        self.means, self.precision = means, precision

    @classmethod
    def fit(cls, support, y, n_classes, prototypes, head):  # type: ignore[no-untyped-def]
        means = class_means(support, y, n_classes)
        cov = pooled_covariance(support, y, means)
        dim, a = support.shape[1], MAHALANOBIS_SHRINKAGE
        # (+ a tiny ridge: one example per intent leaves no spread at all, and the inverse must exist)
        shrunk = (1 - a) * cov + (a * np.trace(cov) / dim + 1e-6) * np.eye(dim, dtype=cov.dtype)
        return cls(prototypes, means, np.linalg.inv(shrunk))

    def score(self, emb: np.ndarray, sims: np.ndarray) -> np.ndarray:
        best = np.full(len(emb), np.inf, dtype=emb.dtype)
        for start in range(0, len(self.means), 64):  # (messages, intents, dim) in chunks: bounded memory
            diff = emb[:, None, :] - self.means[None, start : start + 64]
            dist = np.einsum("qcd,de,qce->qc", diff, self.precision, diff, optimize=True)
            best = np.minimum(best, dist.min(axis=1))
        return -best


class _HeadScore(OosScorer):
    """A score read off the classifier's head."""

    def __init__(self, prototypes: np.ndarray, head: DecisionHead) -> None:
        super().__init__(prototypes)
        self.head = head

    @classmethod
    def fit(cls, support, y, n_classes, prototypes, head):  # type: ignore[no-untyped-def]
        return cls(prototypes, head)


class EnergyScore(_HeadScore):
    name = "energy"
    description = "log-sum-exp of the head's logits"

    def score(self, emb: np.ndarray, sims: np.ndarray) -> np.ndarray:
        logits = self.head.logits(emb, sims)
        top = logits.max(axis=1)
        return top + np.log(np.exp(logits - top[:, None]).sum(axis=1))


class MarginScore(_HeadScore):
    name = "margin"
    description = "the head's best logit; for a multi-label head, the best margin over an intent's own threshold"

    def score(self, emb: np.ndarray, sims: np.ndarray) -> np.ndarray:
        return self.head.logits(emb, sims).max(axis=1)


OOS_SCORES: dict[str, type[OosScorer]] = {
    score.name: score for score in (PrototypeScore, NearestScore, MahalanobisScore, EnergyScore, MarginScore)
}
DEFAULT_OOS_SCORE = PrototypeScore.name
MULTI_LABEL_OOS_SCORE = MarginScore.name
"""A multi-label head decides out of scope itself (no intent passes): the score is its best margin, cut at 0."""


def oos_score_class(name: str) -> type[OosScorer]:
    """The score registered as ``name``; one line naming the registered ones otherwise."""
    try:
        return OOS_SCORES[name]
    except (KeyError, TypeError):
        raise FewIntentError(f"unknown OOS score '{name}': use {', '.join(OOS_SCORES)}") from None

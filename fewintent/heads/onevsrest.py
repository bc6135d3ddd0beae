"""The multi-label head: one logistic decision per intent (one-vs-rest), with a probability threshold.

A message may carry several intents ("I lost my card, block it"): each intent's logistic regression says whether it
is there, independently of the others. The threshold and the regularisation C are chosen from the examples alone
(k-fold cross-validation: the held-out probabilities of each fold's fit). One threshold is shared by every intent:
per-intent cuts lost to it at every size tried (``scripts/screen_multilabel.py``: 5-fold cross-validation inside
the first 4 training splits of each NLU++ cell, test folds never read; MiniLM, mean internal micro-F1 of the four
cells): an intent's own cut from 2, 4, 8, 16 or 32 positive examples 60.67 / 63.23 / 64.18 / 64.37 / 64.60, the
shared cut 64.63. The model keeps one cut per intent (the saved format), today all equal.

Its logits are margins, the log-odds above each intent's cut: an intent passes at a margin of 0 or more, and a
message where none passes is out of scope.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np

from fewintent.heads.decision import DecisionHead, HeadParams
from fewintent.heads.logistic import lbfgs

C_GRID = (1.0, 10.0, 100.0)
"""Regularisation strengths the cross-validation picks from (scikit-learn's C)."""
_FOLDS = 5
_CUTS = np.linspace(0.05, 0.95, 19)


def fit_one_vs_rest(x: np.ndarray, y: np.ndarray, *, c: float, max_iter: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Independent binary logistic regressions, one per column of the multi-hot ``y`` ``(rows, labels)``, fitted
    together by L-BFGS (the objective is their sum, so the optimum is each one's). Each is scikit-learn's
    ``LogisticRegression(C=c, class_weight="balanced")`` divided by ``n``. Returns float32 ``(weight, bias)``."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n, dim = x.shape
    labels = y.shape[1]
    pos = y.sum(axis=0)
    # balanced: positives and negatives weigh the same in each intent's loss
    w_pos = np.where(pos > 0, n / (2.0 * np.maximum(pos, 1)), 0.0)
    w_neg = np.where(n - pos > 0, n / (2.0 * np.maximum(n - pos, 1)), 0.0)
    weights = y * w_pos + (1 - y) * w_neg
    penalty = 1.0 / (2.0 * c * max(n, 1))

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: labels * dim].reshape(labels, dim), theta[labels * dim :]
        z = x @ w.T + b
        # log(1 + e^z) - y z, stably
        loss = float(np.sum(weights * (np.logaddexp(0.0, z) - y * z))) / n + penalty * float(np.sum(w * w))
        g = weights * (1.0 / (1.0 + np.exp(-z)) - y) / n
        return loss, np.concatenate([(g.T @ x + 2.0 * penalty * w).ravel(), g.sum(axis=0)])

    theta = lbfgs(loss_and_grad, np.zeros(labels * (dim + 1)), max_iter=max_iter)
    return theta[: labels * dim].reshape(labels, dim).astype(np.float32), theta[labels * dim :].astype(np.float32)


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Its matrices are small (rows x 384): BLAS threads only contend, and on a busy 2-core machine one fit took
    26 s with numpy's default threads against 2.5 s with one. Needs threadpoolctl (scikit-learn brings it)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    return 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12)


def choose_thresholds(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The probability cut with the best micro-F1 on held-out ``probs`` ``(rows, labels)``, one per intent (all the
    same: the shared cut)."""
    passed = probs[None, :, :] >= _CUTS[:, None, None]  # (cuts, rows, labels)
    truth = y[None].astype(bool)
    tp = (passed & truth).sum(axis=(1, 2))
    fp = (passed & ~truth).sum(axis=(1, 2))
    fn = (~passed & truth).sum(axis=(1, 2))
    return np.full(y.shape[1], _CUTS[int(np.argmax(_f1(tp, fp, fn)))])


def _micro_f1(probs: np.ndarray, y: np.ndarray, cuts: np.ndarray) -> float:
    passed, truth = probs >= cuts, y.astype(bool)
    tp, fp, fn = (passed & truth).sum(), (passed & ~truth).sum(), (~passed & truth).sum()
    return float(_f1(np.array(tp), np.array(fp), np.array(fn)))


def _folds(n: int, folds: int) -> np.ndarray:
    return np.random.default_rng(0).permutation(n) % folds


class OneVsRestHead(DecisionHead):
    """One logistic decision per intent over a threshold; any number of intents per message."""

    name = "onevsrest"
    description = "one logistic decision per intent, thresholds from the examples (multi-label)"
    multi_label = True

    def __init__(self, params: HeadParams, weight: np.ndarray, bias: np.ndarray, cut: np.ndarray) -> None:
        super().__init__(params)
        self.weight, self.bias, self.cut = weight, bias, cut  # cut: each intent's threshold as log-odds

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        n_labels: int,
        prototypes: np.ndarray,
        params: HeadParams,
        messages: np.ndarray | None = None,
    ) -> OneVsRestHead:
        """``y``: multi-hot ``(rows, labels)`` (a 1-D label index works too); ``messages`` marks the rows that are
        examples (the others, the intents' names, train every fold and are never held out)."""
        with _one_blas_thread():
            return cls._fit(x, _multi_hot(y, n_labels), n_labels, params, messages)

    @classmethod
    def _fit(
        cls, x: np.ndarray, y: np.ndarray, n_labels: int, params: HeadParams, messages: np.ndarray | None
    ) -> OneVsRestHead:
        messages = np.ones(len(x), bool) if messages is None else np.asarray(messages, bool)
        rows = np.flatnonzero(messages)
        folds = min(_FOLDS, len(rows))
        best: tuple[float, float, np.ndarray] | None = None
        if folds >= 2:
            fold = _folds(len(rows), folds)
            for c in C_GRID:
                probs = np.zeros((len(rows), n_labels))
                for f in range(folds):
                    train = np.ones(len(x), bool)
                    train[rows[fold == f]] = False
                    w, b = fit_one_vs_rest(x[train], y[train], c=c)
                    probs[fold == f] = _sigmoid(x[rows[fold == f]] @ w.T + b)
                cuts = choose_thresholds(probs, y[rows])
                score = _micro_f1(probs, y[rows], cuts)
                if best is None or score > best[0]:
                    best = (score, c, cuts)
        c, cuts = (best[1], best[2]) if best is not None else (params.c, np.full(n_labels, 0.5))
        weight, bias = fit_one_vs_rest(x, y, c=c)
        return cls(params, weight, bias, np.log(cuts / (1 - cuts)).astype(np.float32))

    def logits(self, emb: np.ndarray, sims: np.ndarray) -> np.ndarray:
        return emb @ self.weight.T + self.bias - self.cut

    def confidences(self, emb: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """Each intent's own probability (independent: they need not sum to 1)."""
        return _sigmoid(emb @ self.weight.T + self.bias)

    def to_tensors(self) -> dict[str, np.ndarray]:
        return {"head_weight": self.weight, "head_bias": self.bias, "head_cut": self.cut}

    @classmethod
    def from_tensors(
        cls, tensors: Mapping[str, np.ndarray], prototypes: np.ndarray, params: HeadParams
    ) -> OneVsRestHead:
        w, b, cut = (tensors.get(k) for k in ("head_weight", "head_bias", "head_cut"))
        n = len(prototypes)
        if (
            w is None
            or b is None
            or cut is None
            or w.shape != prototypes.shape
            or b.shape != (n,)
            or cut.shape != (n,)
        ):
            raise ValueError("lacks the one-vs-rest head's weights and thresholds or they do not match the labels")
        return cls(params, *(np.asarray(t, np.float32) for t in (w, b, cut)))


def _multi_hot(y: np.ndarray, n_labels: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2:
        return y.astype(np.float64)
    out = np.zeros((len(y), n_labels))
    out[np.arange(len(y)), y] = 1.0
    return out

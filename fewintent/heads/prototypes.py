"""Prototypes: class means of sentence embeddings, L2 normalisation, the shared within-class covariance, and the
prototype decision head.

What a classifier builds its tables from at adapt time and on every intent edit, in numpy (no torch needed);
meta-training takes the same class means inside autograd on torch tensors.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

from fewintent.heads.decision import DecisionHead, HeadParams

_Array = TypeVar("_Array")


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def class_means(embeddings: _Array, labels: Any, n_classes: int) -> _Array:
    """Mean embedding per class; ``labels`` are integers in ``[0, n_classes)`` (a class without rows: zeros), or
    multi-hot ``(rows, n_classes)`` (multi-label rows count in each of their classes).

    Numpy arrays, or torch tensors (then differentiable, on their device: meta-training's prototypes)."""
    if isinstance(embeddings, np.ndarray) and np.ndim(labels) == 2:
        hot = np.asarray(labels, dtype=embeddings.dtype)
        return (hot.T @ embeddings) / np.maximum(hot.sum(axis=0), 1)[:, None]
    if isinstance(embeddings, np.ndarray):
        sums = np.zeros((n_classes, embeddings.shape[-1]), dtype=embeddings.dtype)
        np.add.at(sums, labels, embeddings)
        return sums / np.maximum(np.bincount(labels, minlength=n_classes), 1)[:, None].astype(embeddings.dtype)
    import torch  # only ever reached with a torch tensor in hand

    assert isinstance(embeddings, torch.Tensor)
    totals = embeddings.new_zeros(n_classes, embeddings.shape[-1]).index_add(0, labels, embeddings)
    counts = torch.bincount(labels, minlength=n_classes).clamp(min=1).to(embeddings.dtype)
    return totals / counts.unsqueeze(-1)  # type: ignore[return-value]


def pooled_covariance(embeddings: np.ndarray, labels: np.ndarray, means: np.ndarray) -> np.ndarray:
    """The within-class covariance shared by all classes: residuals from each class's mean (:func:`class_means`),
    divided by ``examples - classes`` (at least 1)."""
    resid = embeddings - means[labels]
    return resid.T @ resid / max(len(embeddings) - len(means), 1)


class PrototypeHead(DecisionHead):
    """Cosine similarity to each intent's mean embedding, times ``scale``: nothing to fit, nothing to save."""

    name = "prototype"
    description = "cosine similarity to each intent's mean example, times scale (no fitting)"

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        n_labels: int,
        prototypes: np.ndarray,
        params: HeadParams,
        messages: np.ndarray | None = None,
    ) -> PrototypeHead:
        return cls(params)

    def logits(self, emb: np.ndarray, sims: np.ndarray) -> np.ndarray:
        return sims * self.params.scale

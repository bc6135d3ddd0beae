"""Prototypes in numpy: class means of sentence embeddings, L2 normalisation and the shared within-class covariance.

What a classifier builds its tables from at adapt time and on every intent edit (no torch needed). Meta-training
takes class means inside autograd with :func:`fewintent.heads.proto.class_means` (its torch twin).
"""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def class_means(embeddings: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean embedding per class; ``labels`` are integers in ``[0, n_classes)`` (a class without rows: zeros)."""
    sums = np.zeros((n_classes, embeddings.shape[-1]), dtype=embeddings.dtype)
    np.add.at(sums, labels, embeddings)
    return sums / np.maximum(np.bincount(labels, minlength=n_classes), 1)[:, None].astype(embeddings.dtype)


def pooled_covariance(embeddings: np.ndarray, labels: np.ndarray, means: np.ndarray) -> np.ndarray:
    """The within-class covariance shared by all classes: residuals from each class's mean (:func:`class_means`),
    divided by ``examples - classes`` (at least 1)."""
    resid = embeddings - means[labels]
    return resid.T @ resid / max(len(embeddings) - len(means), 1)

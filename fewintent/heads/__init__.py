"""Heads: decision rules over sentence embeddings (prototypes, a fitted linear head)."""

from fewintent.heads.linear import PrototypeLinearHead, fit_logistic
from fewintent.heads.proto import Distance, PrototypicalHead, class_means, pooled_covariance

__all__ = [
    "Distance",
    "PrototypeLinearHead",
    "PrototypicalHead",
    "class_means",
    "fit_logistic",
    "pooled_covariance",
]

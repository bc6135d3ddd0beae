"""Heads: decision rules over sentence embeddings (prototypes, a fitted linear head), registered by name.

The classifier's heads are numpy (:mod:`~fewintent.heads.prototypes`, :mod:`~fewintent.heads.logistic`); the torch
modules meta-training differentiates through (``PrototypicalHead``, ``PrototypeLinearHead``, ``Distance``) are
imported on first use, so a runtime-only install never loads torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fewintent.heads.decision import DecisionHead, HeadParams
from fewintent.heads.logistic import LinearHead, fit_logistic
from fewintent.heads.prototypes import PrototypeHead, class_means, l2_normalize, pooled_covariance
from fewintent.heads.registry import HEADS, head_class

if TYPE_CHECKING:
    from fewintent.heads.linear import PrototypeLinearHead
    from fewintent.heads.proto import Distance, PrototypicalHead

__all__ = [
    "HEADS",
    "DecisionHead",
    "Distance",
    "HeadParams",
    "LinearHead",
    "PrototypeHead",
    "PrototypeLinearHead",
    "PrototypicalHead",
    "class_means",
    "fit_logistic",
    "head_class",
    "l2_normalize",
    "pooled_covariance",
]

_TORCH = {
    "Distance": "fewintent.heads.proto",
    "PrototypeLinearHead": "fewintent.heads.linear",
    "PrototypicalHead": "fewintent.heads.proto",
}


def __getattr__(name: str) -> Any:
    if name in _TORCH:
        import importlib

        return getattr(importlib.import_module(_TORCH[name]), name)
    raise AttributeError(f"module 'fewintent.heads' has no attribute '{name}'")

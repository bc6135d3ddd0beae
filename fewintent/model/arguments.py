"""``AdaptArguments``: how ``IntentClassifier.adapt`` builds a model, validated where it is made."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fewintent.data.intentset import DEFAULT_OOS_LABEL
from fewintent.errors import FewIntentError, reject_unknown
from fewintent.heads.linear import DEFAULT_C, HeadType
from fewintent.model.calibration import DEFAULT_IN_SCOPE_RECALL, DEFAULT_SCALE
from fewintent.model.oos import OosScore


@dataclass
class AdaptArguments:
    """How ``IntentClassifier.adapt`` builds a model (also what the CLI's ``adapt`` options map to)."""

    base: str | None = None
    """Hugging Face id or local path of the encoder; None = packaged all-MiniLM-L6-v2."""
    adapter: str | None = "auto"
    """Meta-learned LoRA adapter: a shipped name, a directory, 'auto' (the shipped default if any) or 'none'."""
    steps: int = 0
    """Inner-loop steps on the support set before prototypes are built (0 = prototypes only)."""
    inner_lr: float | None = None
    """Learning rate of those steps; None = the adapter's meta-learned or default value."""
    device: str = "auto"
    seed: int = 0
    oos_label: str = DEFAULT_OOS_LABEL
    in_scope_recall: float = DEFAULT_IN_SCOPE_RECALL
    """Share of in-scope queries the out-of-scope threshold aims to keep (when no OOS examples are given)."""
    scale: float = DEFAULT_SCALE
    """Temperature of the softmax over cosine similarities that gives confidences (prototype head)."""
    head: HeadType = HeadType.LINEAR
    """Decision head: 'linear' (logistic regression on the embeddings, the default) or 'prototype'."""
    head_c: float = DEFAULT_C
    """Inverse regularisation strength of the linear head (scikit-learn's C)."""
    oos_score: OosScore = OosScore.PROTOTYPE
    """Out-of-scope score: 'prototype' (default), 'nearest', 'mahalanobis' or 'energy' (see OosScore)."""
    intent_names: bool = True
    """Use each intent's name ("card_arrival" -> "card arrival") as one more example (chosen on ``valid``)."""

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 0 <= self.steps <= 10_000:
            raise FewIntentError(f"steps must be a whole number from 0 to 10000, got {self.steps!r:.20}")
        if self.inner_lr is not None and not (_finite(self.inner_lr) and self.inner_lr > 0):
            raise FewIntentError(f"inner_lr must be a positive number, got {self.inner_lr!r:.20}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise FewIntentError(f"seed must be a whole number from 0 to 2**63-1, got {self.seed!r:.30}")
        if not isinstance(self.oos_label, str) or not self.oos_label.strip():
            raise FewIntentError(f"oos_label must be a non-empty string, got {self.oos_label!r:.20}")
        if not (_finite(self.in_scope_recall) and 0.5 <= self.in_scope_recall <= 1.0):
            raise FewIntentError(f"in_scope_recall must be between 0.5 and 1, got {self.in_scope_recall!r:.20}")
        if not (_finite(self.scale) and self.scale > 0):
            raise FewIntentError(f"scale must be a positive number, got {self.scale!r:.20}")
        try:
            self.oos_score = OosScore(self.oos_score)
        except ValueError:
            names = ", ".join(k.value for k in OosScore)
            raise FewIntentError(f"unknown OOS score '{self.oos_score}': use {names}") from None
        try:
            self.head = HeadType(self.head)
        except ValueError:
            raise FewIntentError(f"unknown head '{self.head}': use linear or prototype") from None
        if not isinstance(self.intent_names, bool):
            raise FewIntentError(f"intent_names must be true or false, got {self.intent_names!r:.20}")
        if not (isinstance(self.head_c, (int, float)) and 0 < self.head_c < float("inf")):
            raise FewIntentError(f"head_c must be a positive number, got {self.head_c!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AdaptArguments:
        """Arguments from a mapping (e.g. a YAML file); unknown keys are refused."""
        reject_unknown(d, cls.__dataclass_fields__, "adapt argument(s)")
        return cls(**d)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

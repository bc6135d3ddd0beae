"""What prediction reads and returns: the immutable scoring table and the prediction objects."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from fewintent.model.oos import OosScorer


@dataclass
class IntentScore:
    name: str
    confidence: float


@dataclass
class Prediction:
    """One classified text; ``to_dict()`` is one ``predict --json`` line (README, "Command line")."""

    text: str
    intent: IntentScore
    is_oos: bool
    intent_ranking: list[IntentScore] = field(default_factory=list)
    oos_score: float | None = None
    """How in-scope the text looks under the model's OOS score (higher = more); below the threshold = OOS."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScoringTable:
    """Everything prediction reads, swapped as one object so concurrent readers never see half an update."""

    labels: tuple[str, ...]
    prototypes: torch.Tensor  # (n_labels, dim), L2-normalised
    support: torch.Tensor  # (n_examples, dim)
    support_labels: torch.Tensor  # (n_examples,) int64 into labels
    oos: torch.Tensor  # (n_oos, dim) out-of-scope examples, possibly empty
    threshold: float
    scorer: OosScorer  # the out-of-scope score the threshold cuts
    head_weight: torch.Tensor | None = None  # (n_labels, dim) the linear head; None = prototype head
    head_bias: torch.Tensor | None = None  # (n_labels,)
    oos_temperature: float = 20.0  # how fast OOS confidence moves away from 0.5 around the threshold
    # the intents' names as one more example each (``intent_names``): (n_names, dim) and their label indices
    name_support: torch.Tensor | None = None
    name_labels: torch.Tensor | None = None

    def oos_scores(self, emb: torch.Tensor, sims: torch.Tensor) -> torch.Tensor:
        """How in-scope each embedding looks (higher = more); the threshold cuts this."""
        return self.scorer(emb, sims)

    def similarities(self, emb: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each embedding to each prototype: the out-of-scope score."""
        return emb @ self.prototypes.T

    def logits(self, emb: torch.Tensor, sims: torch.Tensor, scale: float) -> torch.Tensor:
        """The head's scores over intents (softmax gives confidences)."""
        if self.head_weight is None or self.head_bias is None:
            return sims * scale
        return emb @ self.head_weight.T + self.head_bias

    def counts(self) -> dict[str, int]:
        """Examples per intent, in label order."""
        c = torch.bincount(self.support_labels, minlength=len(self.labels)).tolist()
        return dict(zip(self.labels, c))

"""The decision head a classifier ranks intents with, as one object: its parameters, fit, scores and save/load.

A head is fitted on the support rows (examples and the intents' names as embeddings with label indices) and the
class prototypes; it scores embeddings with logits over intents (a softmax gives confidences). It saves its own
tensors into the model's ``model.safetensors`` and reads them back. Heads are picked by name from
:data:`fewintent.heads.registry.HEADS`; nothing else branches on which head it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np

_Head = TypeVar("_Head", bound="DecisionHead")


@dataclass(frozen=True)
class HeadParams:
    """The classifier settings a head reads (resolved for the base): how sharp cosine softmaxes are, and the
    inverse regularisation strength of fitted heads (scikit-learn's C)."""

    scale: float
    c: float


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``log(softmax(logits))`` over the last axis, computed stably."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis."""
    return np.exp(log_softmax(logits))


class DecisionHead(ABC):
    """Ranks intents over sentence embeddings. Subclasses set ``name`` and ``description`` and register in
    :data:`fewintent.heads.registry.HEADS`."""

    name: ClassVar[str]
    description: ClassVar[str]
    multi_label: ClassVar[bool] = False
    """True for a head that names any number of intents per message: its logits are margins (an intent passes at
    0 or more) and a message where none passes is out of scope; it is fitted on multi-hot labels."""

    def __init__(self, params: HeadParams) -> None:
        self.params = params

    @classmethod
    @abstractmethod
    def fit(
        cls: type[_Head],
        x: np.ndarray,
        y: np.ndarray,
        n_labels: int,
        prototypes: np.ndarray,
        params: HeadParams,
        messages: np.ndarray | None = None,
    ) -> _Head:
        """The head fitted on rows ``x`` (embeddings) with label indices ``y`` (names included; multi-hot
        ``(rows, labels)`` for a multi-label head), given the L2-normalised class ``prototypes``. ``messages``
        marks the rows that are examples rather than the intents' names (None: all are)."""

    @abstractmethod
    def logits(self, emb: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """Scores over intents, ``(messages, labels)``; ``sims`` are the cosines to the prototypes."""

    def confidences(self, emb: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """How sure the head is of each intent: the softmax of its logits (a multi-label head: each intent's own
        probability)."""
        return softmax(self.logits(emb, sims))

    def to_tensors(self) -> dict[str, np.ndarray]:
        """The head's own tensors, by their names in ``model.safetensors`` (none for a head derived from the
        prototypes)."""
        return {}

    @classmethod
    def from_tensors(
        cls: type[_Head], tensors: Mapping[str, np.ndarray], prototypes: np.ndarray, params: HeadParams
    ) -> _Head:
        """The head :meth:`to_tensors` wrote; ``ValueError`` says what does not fit the labels."""
        return cls(params)

"""What the model's helper modules use of a classifier, as a protocol.

Calibration, evaluation, cross-validation, discovery, log calibration and persistence take any object with this
shape (:class:`~fewintent.model.classifier.IntentClassifier` is the one), so none of them imports ``classifier.py``
back, not even for type checking: the classifier imports them, never the other way round.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from fewintent.encoder.base import Encoder
from fewintent.model.config import ClassifierConfig, TrainingArguments
from fewintent.model.table import Prediction, ScoringTable

Progress = Callable[[int], None]
"""Told how many texts were encoded so far (a progress bar's ``advance``)."""


class Classifier(Protocol):
    """A fitted intent classifier, as the model's helper modules see it."""

    encoder: Encoder
    config: ClassifierConfig
    training: TrainingArguments | None
    meta: dict[str, Any]
    threshold_manual: bool

    @property
    def table(self) -> ScoringTable: ...

    @property
    def labels(self) -> list[str]: ...

    @property
    def oos_label(self) -> str: ...

    @property
    def threshold(self) -> float: ...

    @threshold.setter
    def threshold(self, value: float) -> None: ...

    def counts(self) -> dict[str, int]: ...

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray: ...

    def embed(self, texts: Sequence[str], *, progress: Progress | None = None) -> tuple[ScoringTable, np.ndarray]: ...

    def predict(
        self, texts: Sequence[str], *, top_k: int = 10, progress: Progress | None = None
    ) -> list[Prediction]: ...

    def decide(self, texts: Sequence[str], table: ScoringTable, emb: Any, top_k: int = 10) -> list[Prediction]: ...

    def fit_embeddings(
        self, labels: Sequence[str], support: Any, y: Any, oos: Any = None, *, tuned: Any = None, sets: Any = None
    ) -> Any: ...

    def restore(
        self,
        labels: Sequence[str],
        tensors: Any,
        *,
        threshold: float,
        threshold_manual: bool = False,
        oos_temperature: float | None = None,
    ) -> Any: ...

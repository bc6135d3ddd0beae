"""Prototypical head: class means in embedding space, scored by scaled cosine or squared Euclidean distance."""

from __future__ import annotations

from enum import Enum

import torch
from torch import nn

from fewintent.heads.prototypes import class_means


class Distance(str, Enum):
    """How a query is compared with a prototype."""

    COSINE = "cosine"
    """Cosine similarity of L2-normalised vectors, times a temperature (scale); the default for sentence encoders."""
    EUCLIDEAN = "euclidean"
    """Negative squared Euclidean distance (Snell et al. 2017), times the temperature."""


class PrototypicalHead(nn.Module):
    """``fit(support, labels)`` builds prototypes; ``head(query)`` returns logits over classes.

    Example:
        >>> head = PrototypicalHead().fit(torch.eye(4), torch.tensor([0, 0, 1, 1]))
        >>> head(torch.eye(4)).argmax(-1).tolist()
        [0, 0, 1, 1]
    """

    def __init__(
        self, distance: Distance | str = Distance.COSINE, temperature: float = 20.0, learn_temperature: bool = False
    ) -> None:
        super().__init__()
        self.distance = Distance(distance)
        log_t = torch.tensor(float(temperature)).log()
        self.log_temperature = nn.Parameter(log_t, requires_grad=learn_temperature)
        self.prototypes: torch.Tensor = torch.empty(0)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def fit(self, support: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None) -> PrototypicalHead:
        n = int(labels.max().item()) + 1 if n_classes is None else n_classes
        self.prototypes = class_means(support, labels, n)
        return self

    def similarities(self, query: torch.Tensor) -> torch.Tensor:
        """Unscaled scores: cosine similarity, or negative squared Euclidean distance."""
        if self.distance is Distance.COSINE:
            return nn.functional.normalize(query, dim=-1) @ nn.functional.normalize(self.prototypes, dim=-1).T
        return -torch.cdist(query, self.prototypes).pow(2)

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        return self.similarities(query) * self.temperature

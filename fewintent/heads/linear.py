"""A linear head initialised from prototypes (Proto-MAML): at initialisation it scores exactly like the
prototypical head, and an inner loop can then fine-tune it with the encoder.
"""

from __future__ import annotations

import torch
from torch import nn

from fewintent.heads.proto import Distance
from fewintent.heads.prototypes import class_means


class PrototypeLinearHead(nn.Module):
    """``logits = x @ W.T + b`` with ``W``, ``b`` set so the logits equal the prototypical head's.

    Cosine (unit-norm inputs): ``W = T * normalize(c)``, ``b = 0``. Squared Euclidean:
    ``-T |x - c|^2 = T (2 x.c - |c|^2) - T |x|^2``, so ``W = 2 T c``, ``b = -T |c|^2`` (the ``|x|^2`` term is the
    same for every class and does not change the softmax).

    Example:
        >>> head = PrototypeLinearHead.from_support(torch.eye(4), torch.tensor([0, 0, 1, 1]), 2)
        >>> head(torch.eye(4)).argmax(-1).tolist()
        [0, 0, 1, 1]
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = nn.Parameter(bias.detach().clone())

    @classmethod
    def from_prototypes(
        cls, prototypes: torch.Tensor, distance: Distance | str = Distance.COSINE, temperature: float = 20.0
    ) -> PrototypeLinearHead:
        protos = prototypes.detach().float()
        if Distance(distance) is Distance.COSINE:
            weight = temperature * nn.functional.normalize(protos, dim=-1)
            bias = torch.zeros(len(protos), device=protos.device)
        else:
            weight = 2.0 * temperature * protos
            bias = -temperature * protos.pow(2).sum(-1)
        return cls(weight, bias)

    @classmethod
    def from_support(
        cls,
        support: torch.Tensor,
        labels: torch.Tensor,
        n_classes: int,
        distance: Distance | str = Distance.COSINE,
        temperature: float = 20.0,
    ) -> PrototypeLinearHead:
        return cls.from_prototypes(class_means(support.detach(), labels, n_classes), distance, temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.bias

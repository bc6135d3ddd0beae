"""A linear head initialised from prototypes (Proto-MAML): at initialisation it scores exactly like the
prototypical head, and an inner loop can then fine-tune it with the encoder.
"""

from __future__ import annotations

from enum import Enum

import torch
from torch import nn

from fewintent.heads.proto import Distance, class_means


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


class HeadType(str, Enum):
    """The decision head an :class:`~fewintent.IntentClassifier` names intents with."""

    LINEAR = "linear"
    """Multinomial logistic regression on the normalised embeddings (:func:`fit_logistic`), started from the
    prototypes; refitted from the stored embeddings on every intent edit. The default: it won on ``valid``."""
    PROTOTYPE = "prototype"
    """Cosine similarity to each intent's mean embedding, times ``scale`` (no fitting at all)."""


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    *,
    c: float,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_iter: int = 200,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by L-BFGS; returns ``(weight (n_classes, dim), bias (n_classes,))``.

    The objective is scikit-learn's ``LogisticRegression(C=c)`` divided by ``c * n``:
    ``mean cross-entropy + |W|^2 / (2 c n)`` (bias not penalised), so ``c`` means the same as there. It is
    convex; ``init`` (e.g. the prototype head's weights) only makes L-BFGS converge in fewer iterations.
    Classes without examples keep their initial row (they cannot be fitted).
    """
    if c <= 0 or not torch.isfinite(torch.tensor(c)):
        raise ValueError(f"c must be a positive number, got {c}")
    x = x.detach().float().clone()  # a plain tensor: encoder outputs are inference tensors autograd refuses
    if init is None:
        init = PrototypeLinearHead.from_support(x, y, n_classes).weight.data, torch.zeros(n_classes)
    weight = init[0].detach().clone().float().requires_grad_(True)
    bias = init[1].detach().clone().float().requires_grad_(True)
    penalty = 1.0 / (2.0 * c * max(len(x), 1))
    opt = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-6, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(x @ weight.T + bias, y) + penalty * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return weight.detach(), bias.detach()

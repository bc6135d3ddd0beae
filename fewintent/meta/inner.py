"""The inner loop shared by first-order MAML (training) and ``fewintent adapt --steps S`` (deployment, through
:mod:`fewintent.model.tuning`), and the optimiser every training loop of the product steps with.

A Proto-MAML task adaptation: a linear head initialised from the support prototypes, then ``steps`` updates of
the LoRA parameters and the head on the support cross-entropy. Updates use ``torch.autograd.grad`` and never
touch ``.grad``, so an outer loop can accumulate its meta-gradient there undisturbed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import torch
from torch import nn

from fewintent.encoder.encoder import SentenceEncoder
from fewintent.heads.linear import PrototypeLinearHead
from fewintent.heads.proto import Distance
from fewintent.heads.prototypes import class_means

Autocast = Callable[[], AbstractContextManager[Any]]


class InnerOptimizer(str, Enum):
    """The update rule of the inner loop."""

    ADAM = "adam"
    """Adam, fresh state per task: steps of about ``lr`` per parameter whatever the gradient scale (default)."""
    SGD = "sgd"
    """Plain gradient descent, as in the original MAML."""


@dataclass
class InnerLoopSettings:
    """How a task is adapted on its support set. The defaults are what ``fewintent adapt --steps`` uses."""

    steps: int = 5
    lr: float = 1e-3
    """Learning rate of the LoRA parameters."""
    head_lr: float = 1e-2
    """Learning rate of the prototype-initialised linear head."""
    optimizer: InnerOptimizer | str = InnerOptimizer.ADAM
    distance: Distance | str = Distance.COSINE
    temperature: float = 20.0
    """Scale of the head's logits at initialisation (the classifier's confidence scale)."""
    batch_size: int = 64
    """Support examples per step; a larger support set gives a random (seeded) batch of this size per step."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["optimizer"] = InnerOptimizer(self.optimizer).value
        d["distance"] = Distance(self.distance).value
        return d


class Updater:
    """Adam or SGD over an explicit parameter list, from gradients handed in (not from ``.grad``): the inner loop
    and ``adapt --tune`` both step with it."""

    def __init__(self, params: Sequence[torch.Tensor], lrs: Sequence[float], kind: InnerOptimizer | str) -> None:
        self.params, self.lrs, self.kind = list(params), list(lrs), InnerOptimizer(kind)
        self.t = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor | None], scale: float = 1.0) -> None:
        """One update; ``scale`` multiplies every learning rate (a schedule)."""
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        for p, g, lr, m, v in zip(self.params, grads, self.lrs, self.m, self.v):
            if g is None:
                continue
            lr = lr * scale
            if self.kind is InnerOptimizer.SGD:
                p.sub_(lr * g)
                continue
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v / (1 - b2**self.t)).sqrt_().add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - b1**self.t))


def inner_loop(
    encoder: SentenceEncoder,
    params: Sequence[torch.Tensor],
    texts: Sequence[str],
    labels: torch.Tensor,
    n_classes: int,
    settings: InnerLoopSettings,
    *,
    generator: torch.Generator | None = None,
    autocast: Autocast = nullcontext,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[PrototypeLinearHead, list[float]]:
    """Adapt ``params`` (in place) and a fresh prototype head on the support set; returns the head and losses.

    The head starts from the prototypes of the support embeddings under the initial ``params``. ``on_step`` is
    told each step's number (from 1) and loss.
    """
    labels = labels.to(encoder.device)
    n = len(texts)
    full_batch = n <= settings.batch_size
    head: PrototypeLinearHead | None = None
    if not full_batch or settings.steps == 0:
        # Prototypes of the whole support set; encode() sorts by length, so big sets carry little padding.
        emb = encoder.encode(list(texts)).to(encoder.device)
        head = PrototypeLinearHead.from_support(emb, labels, n_classes, settings.distance, settings.temperature)
    losses: list[float] = []
    updater: Updater | None = None
    for _ in range(settings.steps):
        if full_batch:
            idx = torch.arange(n)
        else:
            idx = torch.randperm(n, generator=generator)[: settings.batch_size]
        with autocast():
            emb = encoder([texts[int(i)] for i in idx])
        if head is None:  # full batch: the first forward pass gives the prototypes too
            head = PrototypeLinearHead.from_support(emb, labels, n_classes, settings.distance, settings.temperature)
        loss = nn.functional.cross_entropy(head(emb.float()), labels[idx.to(labels.device)])
        head_params = [head.weight, head.bias]
        if updater is None:
            lrs = [settings.lr] * len(params) + [settings.head_lr] * 2
            updater = Updater([*params, *head_params], lrs, settings.optimizer)
        grads = torch.autograd.grad(loss, [*params, *head_params], allow_unused=True)
        updater.step(grads)
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(len(losses), losses[-1])
    assert head is not None
    return head, losses


def prototype_accuracy(
    support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, q_labels: torch.Tensor
) -> float:
    """Nearest-prototype (cosine) accuracy: what the deployed classifier does with ``--steps 0``."""
    n = int(labels.max()) + 1
    protos = nn.functional.normalize(class_means(support, labels, n), dim=-1)
    pred = (nn.functional.normalize(query, dim=-1) @ protos.T).argmax(-1)
    return float((pred == q_labels).float().mean())

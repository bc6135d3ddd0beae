"""First-order MAML over the LoRA parameters with a prototype-initialised head (Proto-MAML, first order).

Per task: clone the LoRA parameters, adapt them and a linear head initialised from the support prototypes for
``steps`` inner updates on the support loss, take the query-loss gradient at the adapted weights, restore the
initial weights, and hand that gradient back: the first-order approximation of the meta-gradient, which the
outer optimiser applies to the initialisation.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from fewintent.data.episodes import Episode
from fewintent.encoder.encoder import SentenceEncoder
from fewintent.encoder.lora import lora_parameters
from fewintent.heads.linear import PrototypeLinearHead
from fewintent.meta.inner import Autocast, InnerLoopSettings, inner_loop


class FOMAML:
    """learn2learn-style first-order MAML: ``task_gradient(episode)`` adapts, measures the query loss, restores.

    Example:
        >>> algo = FOMAML(encoder, InnerLoopSettings(steps=3, lr=1e-3))  # doctest: +SKIP
        >>> grads, metrics = algo.task_gradient(episode)  # parameters are back at the initialisation  # doctest: +SKIP
    """

    def __init__(
        self, encoder: SentenceEncoder, inner: InnerLoopSettings | None = None, *, autocast: Autocast = nullcontext
    ) -> None:
        self.encoder = encoder
        self.inner = inner or InnerLoopSettings()
        self.autocast = autocast

    def parameters(self) -> list[nn.Parameter]:
        return list(lora_parameters(self.encoder).values())

    @property
    def learned_temperature(self) -> float | None:
        """None: the inner loop's head starts from a fixed temperature (``InnerLoopSettings.temperature``)."""
        return None

    def adapt(
        self, episode: Episode, generator: torch.Generator | None = None
    ) -> tuple[PrototypeLinearHead, list[float]]:
        """Run the inner loop on the episode's support set, changing the LoRA parameters in place."""
        labels = torch.tensor(episode.support_labels, device=self.encoder.device)
        return inner_loop(
            self.encoder,
            self.parameters(),
            episode.support,
            labels,
            episode.ways,
            self.inner,
            generator=generator,
            autocast=self.autocast,
        )

    def query_loss(self, episode: Episode, head: PrototypeLinearHead) -> tuple[torch.Tensor, float]:
        with self.autocast():
            emb = self.encoder(episode.query)
        labels = torch.tensor(episode.query_labels, device=emb.device)
        logits = head(emb.float())
        return nn.functional.cross_entropy(logits, labels), float((logits.argmax(-1) == labels).float().mean())

    def task_gradient(self, episode: Episode) -> tuple[list[torch.Tensor], dict[str, float]]:
        """The first-order meta-gradient of one task: d(query loss)/d(LoRA) at the adapted weights."""
        params = self.parameters()
        initial = [p.detach().clone() for p in params]
        try:
            head, support_losses = self.adapt(episode)
            loss, acc = self.query_loss(episode, head)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        finally:
            with torch.no_grad():
                for p, p0 in zip(params, initial):
                    p.copy_(p0)
        out = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]
        metrics = {"loss": float(loss.detach()), "acc": acc}
        if support_losses:
            metrics["support_loss_first"], metrics["support_loss_last"] = support_losses[0], support_losses[-1]
        return out, metrics

    def accumulate(self, episode: Episode, weight: float = 1.0) -> dict[str, float]:
        """Add ``weight`` times the task's first-order gradient to each LoRA parameter's ``.grad``."""
        grads, metrics = self.task_gradient(episode)
        for p, g in zip(self.parameters(), grads):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.add_(g, alpha=weight)
        return metrics

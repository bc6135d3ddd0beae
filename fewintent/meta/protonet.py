"""Prototypical networks (Snell et al. 2017) trained episodically through the LoRA parameters."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from fewintent.data.episodes import Episode
from fewintent.encoder.encoder import SentenceEncoder
from fewintent.encoder.lora import lora_parameters
from fewintent.heads.proto import Distance, PrototypicalHead
from fewintent.meta.inner import Autocast


class ProtoNet:
    """Episodic prototypical loss: prototypes from the support set, cross-entropy of the query set.

    Gradients reach only the LoRA parameters (the base encoder is frozen) and, when learned, the temperature.

    Example:
        >>> algo = ProtoNet(encoder, distance="cosine", temperature=20.0)  # doctest: +SKIP
        >>> metrics = algo.accumulate(episode)  # adds d(loss)/d(params) to each .grad  # doctest: +SKIP
    """

    def __init__(
        self,
        encoder: SentenceEncoder,
        *,
        distance: Distance | str = Distance.COSINE,
        temperature: float = 20.0,
        learn_temperature: bool = True,
        autocast: Autocast = nullcontext,
    ) -> None:
        self.encoder = encoder
        self.head = PrototypicalHead(distance, temperature, learn_temperature).to(encoder.device)
        self.autocast = autocast

    def parameters(self) -> list[nn.Parameter]:
        """What the outer optimiser updates: the LoRA weights, then the temperature when it is learned."""
        extra = [self.head.log_temperature] if self.head.log_temperature.requires_grad else []
        return [*lora_parameters(self.encoder).values(), *extra]

    def loss(self, episode: Episode) -> tuple[torch.Tensor, float]:
        """Query cross-entropy (differentiable) and query accuracy."""
        with self.autocast():
            emb = self.encoder(episode.support + episode.query)
        emb = emb.float()
        s, q = emb[: len(episode.support)], emb[len(episode.support) :]
        device = emb.device
        s_labels = torch.tensor(episode.support_labels, device=device)
        q_labels = torch.tensor(episode.query_labels, device=device)
        logits = self.head.fit(s, s_labels, episode.ways)(q)
        loss = nn.functional.cross_entropy(logits, q_labels)
        return loss, float((logits.argmax(-1) == q_labels).float().mean())

    def accumulate(self, episode: Episode, weight: float = 1.0) -> dict[str, float]:
        """Add ``weight * d(query loss)/d(params)`` to the parameters' ``.grad``."""
        loss, acc = self.loss(episode)
        (loss * weight).backward()
        return {"loss": float(loss.detach()), "acc": acc}

    @property
    def temperature(self) -> float:
        return float(self.head.temperature.detach())

    @property
    def learned_temperature(self) -> float | None:
        """The episode head's temperature (learned or fixed), recorded in the adapter."""
        return self.temperature

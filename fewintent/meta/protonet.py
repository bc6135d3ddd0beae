"""Prototypical networks (Snell et al. 2017) trained episodically through the LoRA parameters."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from fewintent.data.episodes import Episode
from fewintent.encoder.encoder import SentenceEncoder
from fewintent.encoder.lora import lora_parameters
from fewintent.heads.proto import Distance, PrototypicalHead
from fewintent.meta.episodic import EpisodicLoss
from fewintent.meta.inner import Autocast

UNKNOWN_LOSSES = ("reject", "rank")
"""How queries of intents held out as unknown train (``unknown_fraction``): 'reject' (an extra logit at a learned
similarity) or 'rank' (below every known query's own-prototype similarity: the deployed out-of-scope score)."""


class ProtoNet(EpisodicLoss):
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
        unknown_fraction: float = 0.0,
        unknown_loss: str = "reject",
        rank_weight: float = 1.0,
        autocast: Autocast = nullcontext,
    ) -> None:
        if not 0.0 <= unknown_fraction < 1.0:
            raise ValueError(f"unknown_fraction must be in [0, 1), got {unknown_fraction}")
        if unknown_loss not in UNKNOWN_LOSSES:
            raise ValueError(f"unknown_loss must be one of {', '.join(UNKNOWN_LOSSES)}, got {unknown_loss!r:.30}")
        self.unknown_loss = unknown_loss
        self.rank_weight = rank_weight
        self.encoder = encoder
        self.head = PrototypicalHead(distance, temperature, learn_temperature).to(encoder.device)
        self.autocast = autocast
        self.unknown_fraction = unknown_fraction
        # Meta-learned rejection: a learned similarity below which a query is "none of these" (an extra logit).
        learns_reject = unknown_fraction > 0 and unknown_loss == "reject"
        self.reject_at = nn.Parameter(torch.tensor(0.5, device=encoder.device), requires_grad=learns_reject)

    def parameters(self) -> list[nn.Parameter]:
        """What the outer optimiser updates: the LoRA weights, then the temperature when it is learned, then the
        rejection similarity when episodes hold intents out as unknown."""
        extra = [self.head.log_temperature] if self.head.log_temperature.requires_grad else []
        if self.reject_at.requires_grad:
            extra.append(self.reject_at)
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
        unknown = int(episode.ways * self.unknown_fraction)
        if unknown == 0 or episode.ways - unknown < 2:
            logits = self.head.fit(s, s_labels, episode.ways)(q)
            loss = nn.functional.cross_entropy(logits, q_labels)
            return loss, float((logits.argmax(-1) == q_labels).float().mean())
        # The last `unknown` intents lose their support examples.
        known = episode.ways - unknown
        keep = s_labels < known
        head = self.head.fit(s[keep], s_labels[keep], known)
        logits = head(q)
        if self.unknown_loss == "rank":
            return self._rank_loss(logits, q_labels, known)
        # "reject": their queries must pick the extra "unknown" logit (temperature x reject_at), the others their
        # own intent, as deployment's fallback does.
        reject = (self.head.temperature * self.reject_at).expand(len(q), 1)
        logits = torch.cat([logits, reject], dim=1)
        target = torch.where(q_labels < known, q_labels, torch.full_like(q_labels, known))
        loss = nn.functional.cross_entropy(logits, target)
        return loss, float((logits.argmax(-1) == target).float().mean())

    def _rank_loss(self, logits: torch.Tensor, q_labels: torch.Tensor, known: int) -> tuple[torch.Tensor, float]:
        """The known intents' query cross-entropy, plus ``rank_weight`` times a pairwise logistic loss that ranks
        every known query's similarity to its own prototype above every unknown query's best similarity: the
        deployed out-of-scope score (``prototype``: the best cosine to a prototype) as an AUROC surrogate, with the
        head's temperature as its scale. Accuracy: known queries only."""
        is_known = q_labels < known
        ce = nn.functional.cross_entropy(logits[is_known], q_labels[is_known])
        acc = float((logits[is_known].argmax(-1) == q_labels[is_known]).float().mean())
        if bool(is_known.all()):
            return ce, acc
        own = logits[is_known].gather(1, q_labels[is_known, None]).squeeze(1)  # temperature x cosine
        best_unknown = logits[~is_known].max(dim=1).values
        rank = nn.functional.softplus(best_unknown[:, None] - own[None, :]).mean()
        return ce + self.rank_weight * rank, acc

    @property
    def temperature(self) -> float:
        return float(self.head.temperature.detach())

    @property
    def learned_reject_at(self) -> float | None:
        """The learned rejection similarity (None when episodes hold no intent out or rank them instead)."""
        return float(self.reject_at.detach()) if self.reject_at.requires_grad else None

    @property
    def learned_temperature(self) -> float | None:
        """The episode head's temperature (learned or fixed), recorded in the adapter."""
        return self.temperature

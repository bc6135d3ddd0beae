"""A differentiable ridge-regression head in every episode (R2D2, Bertinetto et al. 2019), trained through LoRA.

The deployed classifier fits a linear head on the support embeddings (:func:`fewintent.heads.linear.fit_logistic`);
prototypes are only its starting point. Meta-training with a closed-form linear head fitted on each episode's support
set aligns the episode objective with that deployment: the query loss reaches the encoder through the solve.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
from torch import nn

from fewintent.data.episodes import Episode
from fewintent.encoder.encoder import SentenceEncoder
from fewintent.encoder.lora import lora_parameters
from fewintent.meta.episodic import EpisodicLoss
from fewintent.meta.inner import Autocast


def ridge_weights(support: torch.Tensor, labels: torch.Tensor, ways: int, lam: torch.Tensor) -> torch.Tensor:
    """``W = S^T (S S^T + lam I)^-1 Y``: the ridge solution in its n x n (Woodbury) form, since an episode has far
    fewer support examples than embedding dimensions. ``support`` is (n, d); returns (d, ways)."""
    y = nn.functional.one_hot(labels, ways).to(support.dtype)
    gram = support @ support.T + lam * torch.eye(len(support), device=support.device, dtype=support.dtype)
    return support.T @ torch.linalg.solve(gram, y)


class RidgeNet(EpisodicLoss):
    """Episodic loss of a ridge head fitted on the support set; learned regulariser and logit scale.

    Example:
        >>> algo = RidgeNet(encoder, lam=1.0, scale=20.0)  # doctest: +SKIP
        >>> metrics = algo.accumulate(episode)  # adds d(query loss)/d(params) to each .grad  # doctest: +SKIP
    """

    def __init__(
        self,
        encoder: SentenceEncoder,
        *,
        lam: float = 1.0,
        scale: float = 20.0,
        learn_scale: bool = True,
        autocast: Autocast = nullcontext,
    ) -> None:
        if lam <= 0 or scale <= 0:
            raise ValueError(f"ridge lam and scale must be positive, got {lam} and {scale}")
        self.encoder = encoder
        self.autocast = autocast
        device = encoder.device
        self.log_lambda = nn.Parameter(torch.tensor(math.log(lam), device=device))
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale), device=device), requires_grad=learn_scale)

    def parameters(self) -> list[nn.Parameter]:
        """The LoRA weights, then the regulariser and (when learned) the logit scale."""
        return [
            *lora_parameters(self.encoder).values(),
            self.log_lambda,
            *([self.log_scale] if self.learn_scale else []),
        ]

    @property
    def learn_scale(self) -> bool:
        return self.log_scale.requires_grad

    def loss(self, episode: Episode) -> tuple[torch.Tensor, float]:
        """Query cross-entropy of the support-fitted ridge head (differentiable) and query accuracy."""
        with self.autocast():
            emb = self.encoder(episode.support + episode.query)
        emb = nn.functional.normalize(emb.float(), dim=-1)
        s, q = emb[: len(episode.support)], emb[len(episode.support) :]
        device = emb.device
        s_labels = torch.tensor(episode.support_labels, device=device)
        q_labels = torch.tensor(episode.query_labels, device=device)
        w = ridge_weights(s, s_labels, episode.ways, self.log_lambda.exp())
        logits = self.log_scale.exp() * (q @ w)
        loss = nn.functional.cross_entropy(logits, q_labels)
        return loss, float((logits.argmax(-1) == q_labels).float().mean())

    @property
    def learned_temperature(self) -> float | None:
        """The logit scale, recorded in the adapter as its temperature."""
        return float(self.log_scale.detach().exp())

    @property
    def learned_lambda(self) -> float:
        return float(self.log_lambda.detach().exp())

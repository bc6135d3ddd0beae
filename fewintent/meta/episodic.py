"""What the single-pass episodic algorithms (ProtoNet, RidgeNet) share: a differentiable episode loss whose gradient
is accumulated into ``.grad`` for the trainer's outer step."""

from __future__ import annotations

import torch

from fewintent.data.episodes import Episode


class EpisodicLoss:
    """Subclasses define ``loss(episode) -> (differentiable query loss, query accuracy)``."""

    def loss(self, episode: Episode) -> tuple[torch.Tensor, float]:
        raise NotImplementedError

    def accumulate(self, episode: Episode, weight: float = 1.0) -> dict[str, float]:
        """Add ``weight * d(query loss)/d(params)`` to the parameters' ``.grad``."""
        loss, acc = self.loss(episode)
        (loss * weight).backward()
        return {"loss": float(loss.detach()), "acc": acc}

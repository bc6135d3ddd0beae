"""The meta-learning algorithms by name: what the trainer needs of one, and how each is built from the arguments.

Adding an algorithm: its module (an object with ``parameters()``, ``accumulate(episode, weight)`` and
``learned_temperature``), a value in :class:`~fewintent.meta.args.Algorithm`, and one entry in ``BUILDERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from torch import nn

from fewintent.data.episodes import Episode
from fewintent.encoder.encoder import SentenceEncoder
from fewintent.meta.args import Algorithm, MetaTrainingArguments
from fewintent.meta.fomaml import FOMAML
from fewintent.meta.inner import Autocast
from fewintent.meta.protonet import ProtoNet
from fewintent.meta.ridge import RidgeNet


class MetaAlgorithm(Protocol):
    """One outer-loop algorithm over an encoder's LoRA parameters."""

    def parameters(self) -> list[nn.Parameter]:
        """What the outer optimiser updates (LoRA first, then any extra such as a temperature)."""
        ...

    def accumulate(self, episode: Episode, weight: float = 1.0) -> dict[str, float]:
        """Add ``weight`` times the episode's meta-gradient to ``.grad``; returns its loss and accuracy."""
        ...

    @property
    def learned_temperature(self) -> float | None:
        """The temperature it learned, recorded in the adapter (None when it has none)."""
        ...


Builder = Callable[[SentenceEncoder, MetaTrainingArguments, Autocast], MetaAlgorithm]

BUILDERS: dict[Algorithm, Builder] = {
    Algorithm.PROTONET: lambda encoder, args, autocast: ProtoNet(
        encoder,
        distance=args.distance,
        temperature=args.temperature,
        learn_temperature=args.learn_temperature,
        unknown_fraction=args.unknown_fraction,
        unknown_loss=args.unknown_loss,
        rank_weight=args.unknown_weight,
        autocast=autocast,
    ),
    Algorithm.FOMAML: lambda encoder, args, autocast: FOMAML(encoder, args.inner_settings(), autocast=autocast),
    Algorithm.RIDGE: lambda encoder, args, autocast: RidgeNet(
        encoder,
        lam=args.ridge_lambda,
        scale=args.temperature,
        learn_scale=args.learn_temperature,
        autocast=autocast,
    ),
}


def build_algorithm(encoder: SentenceEncoder, args: MetaTrainingArguments, autocast: Autocast) -> MetaAlgorithm:
    return BUILDERS[args.algorithm](encoder, args, autocast)

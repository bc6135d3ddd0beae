"""Encoder layer: the registered bases, a transformer sentence encoder, pooling, LoRA adapters, device."""

from fewintent.encoder.encoder import SentenceEncoder, resolve_base, resolve_device
from fewintent.encoder.registry import BASES, BaseSpec

__all__ = ["BASES", "BaseSpec", "SentenceEncoder", "resolve_base", "resolve_device"]

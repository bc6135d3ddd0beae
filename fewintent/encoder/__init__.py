"""Encoder layer: a transformer sentence encoder, pooling, LoRA adapters, device."""

from fewintent.encoder.encoder import DEFAULT_BASE, DEFAULT_BASE_SHA256, SentenceEncoder, resolve_device

__all__ = ["DEFAULT_BASE", "DEFAULT_BASE_SHA256", "SentenceEncoder", "resolve_device"]

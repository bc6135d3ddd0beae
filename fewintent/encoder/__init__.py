"""Encoder layer: the registered bases, a transformer sentence encoder, pooling, LoRA adapters, device.

The torch encoder (``SentenceEncoder``, ``resolve_base``, ``resolve_device``) is imported on first use: serving an
exported ONNX model (:mod:`fewintent.encoder.onnx_runtime`) never loads torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fewintent.encoder.registry import BASES, BaseSpec

if TYPE_CHECKING:
    from fewintent.encoder.encoder import SentenceEncoder, resolve_base, resolve_device

__all__ = ["BASES", "BaseSpec", "SentenceEncoder", "resolve_base", "resolve_device"]

_TORCH = {"SentenceEncoder", "resolve_base", "resolve_device"}


def __getattr__(name: str) -> Any:
    if name in _TORCH:
        from fewintent.encoder import encoder

        return getattr(encoder, name)
    raise AttributeError(f"module 'fewintent.encoder' has no attribute '{name}'")

"""Encoders the benchmark shares between methods, and a per-run embedding cache.

Methods that embed with the same encoder weights (the frozen encoder, or one adapter with ``steps=0``) read
each text's embedding from the cache, so a text is encoded once per run and per encoder. Every cached text
remembers what encoding it cost, so a method's ``adapt_seconds`` still counts the encoding of its support
set as if it had been alone (the speed protocol measures adaptation without any cache).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from fewintent.encoder.encoder import SentenceEncoder
from fewintent.encoder.lora import load_adapter

EncoderFactory = Callable[[], SentenceEncoder]
FROZEN = "frozen"


class EncoderPool:
    """One loaded encoder per adapter (``None`` = frozen), and the embeddings each has computed."""

    def __init__(self, factory: EncoderFactory, *, batch_size: int = 64) -> None:
        self.factory = factory
        self.batch_size = batch_size
        self._encoders: dict[str, SentenceEncoder] = {}
        self._configs: dict[str, dict] = {}
        self._emb: dict[str, dict[str, torch.Tensor]] = {}
        self._cost: dict[str, dict[str, float]] = {}
        self.load_seconds: dict[str, float] = {}

    @staticmethod
    def key(adapter_dir: Path | None) -> str:
        return FROZEN if adapter_dir is None else f"adapter:{Path(adapter_dir).resolve()}"

    def get(self, adapter_dir: Path | None) -> tuple[str, SentenceEncoder]:
        key = self.key(adapter_dir)
        if key not in self._encoders:
            start = time.perf_counter()
            enc = self.factory()
            if adapter_dir is not None:
                self._configs[key] = load_adapter(enc, adapter_dir)
            self.load_seconds[key] = time.perf_counter() - start
            self._encoders[key] = enc
            self._emb[key], self._cost[key] = {}, {}
        return key, self._encoders[key]

    def adapter_config(self, key: str) -> dict:
        return self._configs.get(key, {})

    def embed(self, key: str, texts: Sequence[str]) -> tuple[torch.Tensor, float]:
        """Embeddings of ``texts`` (in order) and the seconds their first encoding took, summed."""
        cache, cost = self._emb[key], self._cost[key]
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            start = time.perf_counter()
            emb = self._encoders[key].encode(missing, batch_size=self.batch_size)
            each = (time.perf_counter() - start) / len(missing)
            for t, e in zip(missing, emb):
                cache[t], cost[t] = e, each
        if not texts:
            return torch.empty(0, self._encoders[key].dim), 0.0
        return torch.stack([cache[t] for t in texts]), float(sum(cost[t] for t in dict.fromkeys(texts)))

    def warm(self, key: str, texts: Sequence[str]) -> None:
        """Encode texts ahead (e.g. every episode's texts in one pass); costs are remembered per text."""
        self.embed(key, list(dict.fromkeys(texts)))

    def frozen_on(self, device: str) -> SentenceEncoder:
        """The frozen encoder on ``device``: the shared one when it is there, else a new one moved there."""
        _, enc = self.get(None)
        if str(enc.device) == device or device == "cpu" and enc.device.type == "cpu":
            return enc
        return self.factory().to(device)

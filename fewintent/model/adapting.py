"""The trainer: everything that happens before a classifier can decide.

It resolves the base and the adapter, loads the torch encoder (or takes one already loaded: the benchmark and
cross-validation reuse one), runs ``--steps`` or ``--tune`` on the examples, and returns a fitted
:class:`~fewintent.model.classifier.IntentClassifier`. How the classifier was trained (:class:`TrainingArguments`)
is recorded on it as provenance; its settings (:class:`ClassifierConfig`) are what it decides with. Torch is
imported here, inside the calls that need it, never by the classifier.

Example:
    >>> clf = Trainer(AdaptArguments(adapter="none", head="prototype")).train(data)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fewintent.data.intentset import IntentSet, check_texts
from fewintent.data.io import read_intent_file
from fewintent.encoder.lora import LoraSettings
from fewintent.encoder.registry import constants_for
from fewintent.errors import FewIntentError, reject_unknown, training_parts
from fewintent.heads.registry import DEFAULT_HEAD, MULTI_LABEL_HEAD
from fewintent.model.classifier import IntentClassifier
from fewintent.model.config import AdaptArguments, ClassifierConfig, TrainingArguments

if TYPE_CHECKING:
    from fewintent.encoder.encoder import SentenceEncoder
    from fewintent.model.tuning import TrainingProgress

__all__ = ["AdaptArguments", "LoadedEncoder", "Trainer", "TrainingArguments", "adapt", "unfitted"]

Examples = IntentSet | Mapping[str, Sequence[str]] | str | Path


@dataclass
class LoadedEncoder:
    """A torch encoder with its adapter loaded (LoRA still live, not merged) and what to record of them."""

    encoder: SentenceEncoder
    meta: dict[str, Any] = field(default_factory=lambda: {"adapter": None})
    """``adapter``: the adapter's config and source (None for the frozen encoder)."""

    @property
    def adapter(self) -> dict[str, Any] | None:
        return self.meta.get("adapter")


class Trainer:
    """Builds a fitted classifier from examples, a classifier config and training arguments.

    ``args`` holds both (an :class:`AdaptArguments`; keyword ``overrides`` set its fields). With ``encoder`` (a
    :class:`LoadedEncoder` someone else owns, e.g. the benchmark's pool) nothing is loaded and its LoRA weights are
    not merged, so the owner can put them back after ``--steps``; without one, :meth:`load_encoder` loads the base
    and adapter that ``args`` name, and the LoRA weights are merged once training is over.
    """

    def __init__(
        self,
        args: AdaptArguments | ClassifierConfig | TrainingArguments | None = None,
        *,
        encoder: LoadedEncoder | None = None,
        progress: Callable[[int], None] | None = None,
        training: TrainingProgress | None = None,
        **overrides: Any,
    ) -> None:
        reject_unknown(overrides, AdaptArguments.__dataclass_fields__, "adapt argument(s)")
        given = {} if args is None else args.to_dict()
        self.args = replace(AdaptArguments(**given), **overrides)
        self.encoder = encoder
        self.progress, self.training = progress, training

    def load_encoder(self) -> LoadedEncoder:
        """The base encoder with the adapter ``args`` names loaded (LoRA still live); torch is imported (and
        seeded) here, not before."""
        with training_parts("adapting a classifier (a torch encoder)"):
            import torch

            from fewintent.encoder.encoder import SentenceEncoder
        from fewintent.encoder.lora import SHIPPED_ADAPTERS_DIR, load_adapter, resolve_adapter

        args = self.args
        torch.manual_seed(args.seed)
        encoder = SentenceEncoder(args.base, device=args.device, max_length=args.max_length)
        loaded = LoadedEncoder(encoder)
        adapter_dir = resolve_adapter(args.adapter, encoder.name, encoder.sha256)
        if adapter_dir is not None:
            adapter_config = load_adapter(encoder, adapter_dir)
            shipped = adapter_dir.parent == SHIPPED_ADAPTERS_DIR
            loaded.meta["adapter"] = {**adapter_config, "source": adapter_dir.name if shipped else str(adapter_dir)}
        return loaded

    def train(self, examples: Examples) -> IntentClassifier:
        """A classifier fitted on ``examples`` (an IntentSet, ``{intent: [texts]}`` or a file path), after the
        encoder was trained on them where ``args`` say so (``steps``, ``tune``)."""
        from fewintent.encoder.lora import attach_lora, has_lora, merge_lora

        data = as_intentset(examples, self.args.oos_label)
        if data.is_multi_label and not self.args.multi_label:
            if self.args.head != DEFAULT_HEAD:
                raise FewIntentError(
                    f"{data.source} gives several intents per message; --head {self.args.head} names one: "
                    "leave --head out (or use --multi-label)"
                )
            self.args = replace(self.args, head=MULTI_LABEL_HEAD)  # multi-label data: the multi-label head
        args = self.args
        loaded = self.encoder or self.load_encoder()
        encoder = loaded.encoder
        meta: dict[str, Any] = {**loaded.meta, "steps": 0, "seed": args.seed}
        tuned: list[bool] | None = None
        embedded: dict[str, Any] | None = None
        if args.steps > 0:
            from fewintent.model.tuning import adapt_on_support

            if not has_lora(encoder):  # the frozen encoder: fresh LoRA layers to step in
                attach_lora(encoder)
            lr = args.inner_lr if args.inner_lr is not None else float((loaded.adapter or {}).get("inner_lr", 1e-3))
            adapt_on_support(encoder, data, steps=args.steps, lr=lr, seed=args.seed, progress=self.training)
            meta["steps"], meta["inner_lr"] = args.steps, lr
        elif args.tune:
            from fewintent.model.tuning import tune_encoder

            below = LoraSettings.from_dict(loaded.adapter.get("lora", {})) if loaded.adapter else None
            head_c = args.head_c if args.head_c is not None else constants_for(encoder.name, encoder.sha256).head_c
            result = tune_encoder(
                encoder,
                data,
                names=args.intent_names,
                seed=args.seed,
                below=below,
                head_c=head_c,
                time_budget=args.tune_time,
                progress=self.training,
            )
            meta["tune"] = result.to_dict()
            tuned = [not h for h in result.held_out]
            embedded = result.embeddings  # the kept epoch's: not encoded again
        if self.encoder is None:
            merge_lora(encoder)  # the LoRA weights are final from here on: fold them in, inference at raw cost
        clf = IntentClassifier(encoder, args.settings(), meta=meta, training=args.training())
        return clf.fit(data, progress=self.progress, tuned=tuned, embedded=embedded)

    def unfitted(self) -> IntentClassifier:
        """The encoder (and adapter) :meth:`train` would use, with no intents yet: ``fit`` / ``fit_embeddings``
        next. For work that encodes once and fits many heads (cross-validation); ``steps`` must be 0, ``tune`` off."""
        from fewintent.encoder.lora import merge_lora

        if self.args.steps or self.args.tune:
            raise FewIntentError("steps > 0 and tune adapt the encoder to one training set; use adapt() for that")
        loaded = self.encoder or self.load_encoder()
        if self.encoder is None:
            merge_lora(loaded.encoder)
        meta = {**loaded.meta, "steps": 0, "seed": self.args.seed}
        return IntentClassifier(loaded.encoder, self.args.settings(), meta=meta, training=self.args.training())


def adapt(examples: Examples, args: AdaptArguments | None = None, **options: Any) -> IntentClassifier:
    """``Trainer(args, ...).train(examples)``: what :meth:`IntentClassifier.adapt` calls."""
    progress, training = options.pop("progress", None), options.pop("training", None)
    return Trainer(args, progress=progress, training=training, **options).train(examples)


def unfitted(args: AdaptArguments | None = None, **overrides: Any) -> IntentClassifier:
    """``Trainer(args).unfitted()``: what :meth:`IntentClassifier.unfitted` calls."""
    return Trainer(args, **overrides).unfitted()


def as_intentset(examples: Examples, oos_label: str) -> IntentSet:
    """Examples as an IntentSet: read from a file, built from a ``{intent: [texts]}`` mapping, or as given."""
    if isinstance(examples, IntentSet):
        return examples
    if isinstance(examples, (str, Path)):
        return read_intent_file(examples, oos_label=oos_label)
    if not isinstance(examples, Mapping):
        raise FewIntentError(
            "examples must be an IntentSet, a file path or a {intent: [texts]} mapping, "
            f"got {type(examples).__name__}"
        )
    pairs = []
    for intent, texts in examples.items():
        if not isinstance(intent, str):
            raise FewIntentError(f"intent names must be strings, got {intent!r:.40}")
        if isinstance(texts, str):
            raise FewIntentError(f"examples for '{intent}' must be a list of texts, not one string")
        pairs += [(text, intent) for text in check_texts(texts)]
    return IntentSet.from_pairs(pairs, oos_label=oos_label)

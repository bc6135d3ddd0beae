"""What describes a classifier, and how one is trained: two configs.

``ClassifierConfig`` holds what a saved model needs to decide (head, OOS score, their numbers): the classifier holds
it and persistence writes it into ``config.json`` as it is. ``TrainingArguments`` says how a classifier is built
(base, adapter, ``--steps``, ``--tune``, seed, device): the trainer (:mod:`fewintent.model.adapting`) takes it and
the model records it as provenance, never as a setting. ``AdaptArguments`` is both at once, what
``IntentClassifier.adapt`` and the CLI's ``adapt`` take. A new setting is one field (with its check), its CLI flag,
and its use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, TypeVar

from fewintent.data.intentset import DEFAULT_OOS_LABEL
from fewintent.encoder.registry import BaseConstants
from fewintent.errors import FewIntentError, reject_unknown
from fewintent.heads.registry import DEFAULT_HEAD, HEADS
from fewintent.model.oos import DEFAULT_OOS_SCORE, MULTI_LABEL_OOS_SCORE, OOS_SCORES

_Config = TypeVar("_Config", bound="_Checked")


class _Checked:
    """Fields checked on construction (:data:`_CHECKS`), read from and written to plain mappings."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            check = _CHECKS.get(f.name)
            value = getattr(self, f.name)
            if check is not None and (value is not None or f.default is not None):
                object.__setattr__(self, f.name, check(value))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def from_dict(cls: type[_Config], d: Mapping[str, Any], **extra: Any) -> _Config:
        """A config from a mapping (a YAML file, ``config.json``); unknown keys are refused."""
        if not isinstance(d, Mapping):
            raise FewIntentError(f"settings must be a mapping of names to values, got {type(d).__name__}")
        reject_unknown(d, cls.__dataclass_fields__, "setting(s)")  # type: ignore[attr-defined]
        return cls(**{**d, **extra})


@dataclass(frozen=True)
class ClassifierConfig(_Checked):
    """How a classifier decides. ``None`` in a number means "the value tuned on the base"
    (:class:`~fewintent.encoder.registry.BaseConstants`), filled in by :meth:`resolved` when the encoder is known.

    Example:
        >>> ClassifierConfig(head="prototype").head
        'prototype'
    """

    oos_label: str = DEFAULT_OOS_LABEL
    """The intent name that marks out-of-scope rows (and out-of-scope answers)."""
    in_scope_recall: float | None = None
    """Share of in-scope queries the out-of-scope threshold keeps when no OOS examples are given."""
    scale: float | None = None
    """Temperature of the softmax over cosine similarities (prototype head and OOS confidences)."""
    fallback_threshold: float | None = None
    """The OOS threshold when the support cannot calibrate one (every intent has a single example)."""
    head: str = DEFAULT_HEAD
    """Decision head, by name (:data:`fewintent.heads.registry.HEADS`): 'linear' (the default), 'prototype', or
    'onevsrest' (multi-label: any number of intents per message)."""
    head_c: float | None = None
    """Inverse regularisation strength of the linear head (scikit-learn's C)."""
    oos_score: str = DEFAULT_OOS_SCORE
    """Out-of-scope score, by name (:data:`fewintent.model.oos.OOS_SCORES`): 'prototype' (the default), 'nearest',
    'mahalanobis' or 'energy'."""
    intent_names: bool = True
    """Use each intent's name ("card_arrival" -> "card arrival") as one more example (chosen on ``valid``)."""
    max_length: int = 128
    """Tokens of a message the encoder reads; longer messages are cut (intent utterances rarely pass 64)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if HEADS[self.head].multi_label:  # it decides out of scope itself: nothing of its intents passes
            if self.oos_score == DEFAULT_OOS_SCORE:
                object.__setattr__(self, "oos_score", MULTI_LABEL_OOS_SCORE)
            elif self.oos_score != MULTI_LABEL_OOS_SCORE:
                raise FewIntentError(
                    f"the multi-label head '{self.head}' decides out of scope itself (no intent passes); "
                    f"--oos-score {self.oos_score} does not apply to it"
                )

    @property
    def multi_label(self) -> bool:
        """The head names any number of intents per message."""
        return HEADS[self.head].multi_label

    def resolved(self, constants: BaseConstants) -> ClassifierConfig:
        """This config with every base-tuned number that was left None filled in from ``constants``."""
        tuned: dict[str, Any] = {k: v for k, v in constants.to_dict().items() if getattr(self, k) is None}
        return replace(self, **tuned)

    def settings(self) -> ClassifierConfig:
        """The classifier's own settings (drops how it is trained, from :class:`AdaptArguments`)."""
        return ClassifierConfig(**_own(self, ClassifierConfig))


@dataclass(frozen=True)
class TrainingArguments(_Checked):
    """How a classifier is built: recorded in its ``config.json`` as provenance, not read back as settings."""

    base: str | None = None
    """Encoder: a registered base (``fewintent bases``), a Hugging Face id or a local path; None = the default."""
    adapter: str | None = "auto"
    """Meta-learned LoRA adapter: a shipped name, a directory, 'auto' (the base's shipped default) or 'none'."""
    steps: int = 0
    """Inner-loop LoRA steps on the support set before the head is fitted (0 = none)."""
    inner_lr: float | None = None
    """Learning rate of those steps; None = the adapter's meta-learned or default value."""
    seed: int = 0
    tune: bool = False
    """Train LoRA layers and the head on the examples before fitting (accurate mode: minutes instead of seconds;
    the recipe is :data:`fewintent.model.tuning.DEFAULT_RECIPE`)."""
    tune_time: float | None = None
    """Seconds ``tune`` may train at most: it stops there with the best state so far (None: no limit)."""
    device: str = "auto"
    """auto, cpu or cuda."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tune and self.steps:
            raise FewIntentError("--tune and --steps are two ways of training at adapt time: choose one")

    def training(self) -> TrainingArguments:
        """How the classifier is trained (drops its settings, from :class:`AdaptArguments`)."""
        return TrainingArguments(**_own(self, TrainingArguments))


@dataclass(frozen=True)
class AdaptArguments(TrainingArguments, ClassifierConfig):
    """What ``IntentClassifier.adapt`` is told: the classifier's settings and how to train it, in one object
    (``settings()`` and ``training()`` split them)."""


TRAINING_FIELDS = frozenset(TrainingArguments.__dataclass_fields__)


def _own(config: Any, cls: Any) -> dict[str, Any]:
    return {k: getattr(config, k) for k in cls.__dataclass_fields__}


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _number(name: str, ok: Callable[[float], bool], what: str) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        if not (_finite(v) and ok(float(v))):
            raise FewIntentError(f"{name} must be {what}, got {v!r:.20}")
        return float(v)

    return check


def _whole(name: str, low: int, high: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise FewIntentError(f"{name} must be a whole number from {low} to {high}, got {v!r:.30}")
        return v

    return check


def _registered(registry: Mapping[str, Any], what: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        name = getattr(v, "value", v)  # a str enum member reads as its value
        if not isinstance(name, str) or name not in registry:
            raise FewIntentError(f"unknown {what} '{name}': use {', '.join(registry)}")
        return name

    return check


def _text(name: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if not isinstance(v, str) or not v.strip():
            raise FewIntentError(f"{name} must be a non-empty string, got {v!r:.20}")
        return v

    return check


def _flag(name: str) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if not isinstance(v, bool):
            raise FewIntentError(f"{name} must be true or false, got {v!r:.20}")
        return v

    return check


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "steps": _whole("steps", 0, 10_000),
    "inner_lr": _number("inner_lr", lambda x: x > 0, "a positive number"),
    "seed": _whole("seed", 0, 2**63 - 1),
    "oos_label": _text("oos_label"),
    "in_scope_recall": _number("in_scope_recall", lambda x: 0.5 <= x <= 1.0, "between 0.5 and 1"),
    "scale": _number("scale", lambda x: x > 0, "a positive number"),
    "fallback_threshold": _number("fallback_threshold", lambda x: -1.0 <= x <= 1.0, "a cosine in [-1, 1]"),
    "head": _registered(HEADS, "head"),
    "head_c": _number("head_c", lambda x: x > 0, "a positive number"),
    "oos_score": _registered(OOS_SCORES, "OOS score"),
    "intent_names": _flag("intent_names"),
    "max_length": _whole("max_length", 8, 512),
    "tune": _flag("tune"),
    "tune_time": _number("tune_time", lambda x: x > 0, "a positive number of seconds"),
    "base": lambda v: str(v),
    "adapter": lambda v: str(v),
    "device": _text("device"),
}

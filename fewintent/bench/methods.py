"""The methods compared, behind one interface: adapt on a support set, score query sets.

Names are fixed so results compare across runs:

- ``frozen-prototype``: the shipped encoder without adapter, class-mean prototypes, cosine (fewintent with
  ``--adapter none``).
- ``frozen-logreg``: scikit-learn ``LogisticRegression`` on the frozen embeddings, its ``C`` tuned per dataset
  and shot count on that dataset's ``valid`` split (never ``test``).
- ``frozen-linear``: the product's linear head (``fewintent adapt --adapter none --head linear``).
- ``fewintent-linear``: the product default: the meta-learned protonet adapter left out of the scored dataset,
  linear head (``fewintent adapt --head linear``); ``fewintent-<algo>-linear`` names another adapter.
- ``setfit``: the SetFit library on the same base encoder, its default training recipe.
- ``fewintent-protonet`` / ``fewintent-fomaml``: the meta-learned adapter of that algorithm, prototypes only
  (``--steps 0``); ``fewintent-<algo>-steps<N>``: the same adapter with ``N`` inner-loop steps on the support
  set before the prototypes (``fewintent adapt --steps N``). Each row also carries ``steps`` and ``head``.
- ``<method>-tune`` (``fewintent-linear-tune``, ``frozen-linear-tune``): the same method in accurate mode
  (``fewintent adapt --tune``): ``IntentClassifier.adapt`` itself runs, so ``adapt_seconds`` is its whole wall time
  (encoder load, tuning, encoding, head); the row's ``tune`` says what tuning did.

The linear-head methods use each intent's name as one more example (the product default since it won on
``valid``); the prototype-head methods do not, as when they were first measured (rows carry ``intent_names``).

Every fewintent method (and ``frozen-prototype`` / ``frozen-linear``) builds its decision rule with
``IntentClassifier.fit_embeddings``, the code ``fewintent adapt`` runs after encoding, so the report measures what
users get; only the embeddings are cached across methods.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewintent.bench.config import ALGORITHMS
from fewintent.bench.encoders import EncoderPool
from fewintent.data.intentset import IntentSet
from fewintent.encoder.encoder import SentenceEncoder
from fewintent.encoder.lora import load_lora_state, lora_state
from fewintent.encoder.registry import BaseSpec
from fewintent.errors import FewIntentError, FewIntentWarning
from fewintent.heads.logistic import HeadType
from fewintent.meta.args import Algorithm
from fewintent.model.calibration import calibrate_threshold
from fewintent.model.classifier import IntentClassifier
from fewintent.model.config import AdaptArguments
from fewintent.model.oos import OosScore

FROZEN_PROTOTYPE = "frozen-prototype"
FROZEN_LINEAR = "frozen-linear"
FROZEN_LOGREG = "frozen-logreg"
FEWINTENT_LINEAR = "fewintent-linear"
LOGREG_C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
SETFIT = "setfit"
DEFAULT_METHODS = (
    FROZEN_PROTOTYPE,
    FROZEN_LOGREG,
    SETFIT,
    FEWINTENT_LINEAR,
    "fewintent-protonet",
    "fewintent-fomaml",
    "fewintent-fomaml-steps5",
)
_FEWINTENT = re.compile(r"^fewintent-(" + "|".join(ALGORITHMS) + r")(-linear)?(?:-steps(\d+))?$")


@dataclass
class Outcome:
    """What one adaptation produced: per query set, a score per intent (higher = more likely)."""

    labels: list[str]
    scores: dict[str, np.ndarray]
    adapt_seconds: float
    support_threshold: float | None = None
    """OOS threshold on the max score, from the support set alone (None when the method has no such rule)."""
    score_kind: str = "cosine"
    extra: dict[str, Any] = field(default_factory=dict)
    oos_scores: dict[str, np.ndarray] | None = None
    """Per query set, the score the OOS threshold applies to when it is not the best intent score."""

    def oos_score(self, key: str) -> np.ndarray:
        """Higher = more in scope; ``support_threshold`` cuts this."""
        if self.oos_scores is not None:
            return self.oos_scores[key]
        return self.scores[key].max(1)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    family: str  # frozen-prototype | frozen-logreg | setfit | fewintent
    algorithm: str | None = None
    steps: int = 0
    head: HeadType = HeadType.PROTOTYPE
    oos_score: OosScore = OosScore.PROTOTYPE
    tune: bool = False

    @property
    def intent_names(self) -> bool:
        """The linear-head methods are today's product (intent names as examples, the default); the prototype-head
        ones keep the configuration they were named for (examples only), so their rows stay comparable."""
        return self.head is HeadType.LINEAR

    def classifier(self, encoder: SentenceEncoder) -> IntentClassifier:
        """The product configuration this method names, unfitted: head, OOS score and intent names."""
        return IntentClassifier(encoder, head=self.head, oos_score=self.oos_score, intent_names=self.intent_names)


TUNE_SUFFIX = "-tune"
_OOS_SUFFIX = re.compile(r"^(.+)-oos-(" + "|".join(k.value for k in OosScore) + r")$")


def parse_method(name: str) -> MethodSpec:
    """``fewintent-fomaml-steps5`` -> family fewintent, algorithm fomaml, 5 steps; unknown names are refused.

    Any fewintent or frozen-prototype/-linear name takes a ``-oos-<score>`` suffix (``fewintent-linear-oos-nearest``):
    the same method with another out-of-scope score (``fewintent adapt --oos-score``).
    """
    m = _OOS_SUFFIX.match(name)
    if m:
        base = parse_method(m.group(1))
        if base.family not in ("fewintent", FROZEN_PROTOTYPE):
            raise FewIntentError(f"'{name}': only fewintent and frozen-prototype/-linear methods take -oos-<score>")
        return replace(base, name=name, oos_score=OosScore(m.group(2)))
    if name.endswith(TUNE_SUFFIX):
        base = parse_method(name[: -len(TUNE_SUFFIX)])
        if base.family not in ("fewintent", FROZEN_PROTOTYPE) or base.steps or base.tune:
            raise FewIntentError(f"'{name}': only fewintent and frozen-prototype/-linear methods without steps tune")
        return replace(base, name=name, tune=True)
    if name in (FROZEN_PROTOTYPE, FROZEN_LOGREG, SETFIT):
        return MethodSpec(name, name)
    if name == FROZEN_LINEAR:
        return MethodSpec(name, FROZEN_PROTOTYPE, head=HeadType.LINEAR)
    if name == FEWINTENT_LINEAR:
        return MethodSpec(name, "fewintent", Algorithm.PROTONET.value, head=HeadType.LINEAR)
    m = _FEWINTENT.match(name)
    if m:
        head = HeadType.LINEAR if m.group(2) else HeadType.PROTOTYPE
        return MethodSpec(name, "fewintent", m.group(1), int(m.group(3) or 0), head)
    known = ", ".join(
        (
            FROZEN_PROTOTYPE,
            FROZEN_LINEAR,
            FROZEN_LOGREG,
            SETFIT,
            FEWINTENT_LINEAR,
            "fewintent-protonet",
            "fewintent-fomaml",
        )
    )
    raise FewIntentError(
        f"unknown method '{name}': use {known}, or fewintent-<protonet|fomaml>[-linear][-steps<N>], with -tune "
        "for accurate mode"
    )


def _label_index(support: IntentSet) -> tuple[list[str], torch.Tensor]:
    labels = support.labels
    index = {label: i for i, label in enumerate(labels)}
    return labels, torch.tensor([index[i] for i in support.intents], dtype=torch.long)


def classifier_head(
    encoder: SentenceEncoder,
    spec: MethodSpec,
    labels: list[str],
    support_emb: torch.Tensor,
    y: torch.Tensor,
    oos_emb: torch.Tensor | None = None,
) -> IntentClassifier:
    """The product's decision rule on these embeddings: ``IntentClassifier.fit_embeddings``, product defaults."""
    clf = spec.classifier(encoder)
    with warnings.catch_warnings():  # 1-shot episodes are 1-shot on purpose: no warning per episode
        warnings.simplefilter("ignore", FewIntentWarning)
        return clf.fit_embeddings(labels, support_emb, y, oos_emb)


def _score(clf: IntentClassifier, emb: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(intent scores the head ranks by, OOS score) for embedded queries, as ``IntentClassifier.decide`` uses them."""
    table, x = clf.table, np.asarray(emb, dtype=np.float32)
    sims = table.similarities(x)
    return table.logits(x, sims, clf.scale), table.oos_scores(x, sims)


def _outcome(
    clf: IntentClassifier, labels: list[str], queries: dict[str, torch.Tensor], adapt: float, extra: dict[str, Any]
) -> Outcome:
    scored = {k: _score(clf, e) for k, e in queries.items()}
    kind = "cosine" if clf.head is HeadType.PROTOTYPE else "logit"
    return Outcome(
        labels,
        {k: v[0] for k, v in scored.items()},
        adapt,
        clf.threshold,
        score_kind=kind,
        extra={**extra, "head": clf.head.value, "oos_score": clf.oos_score.value, "intent_names": clf.intent_names},
        oos_scores={k: v[1] for k, v in scored.items()},
    )


class Method:
    spec: MethodSpec

    @property
    def name(self) -> str:
        return self.spec.name

    def run(self, support: IntentSet, queries: dict[str, list[str]], *, want_threshold: bool = False) -> Outcome:
        raise NotImplementedError


class ClassifierMethod(Method):
    """The product's head (prototypes or linear) on an encoder (frozen, or with a meta-learned adapter),
    optionally after inner-loop steps."""

    def __init__(
        self,
        spec: MethodSpec,
        pool: EncoderPool,
        adapter_dir: Path | None,
        *,
        seed: int = 0,
        inner_lr: float | None = None,
        base: str | None = None,
        device: str = "cpu",
    ) -> None:
        self.spec, self.pool, self.adapter_dir, self.seed, self.inner_lr = spec, pool, adapter_dir, seed, inner_lr
        self.base, self.device = base, device

    def run(self, support: IntentSet, queries: dict[str, list[str]], *, want_threshold: bool = False) -> Outcome:
        if self.spec.tune:
            return self._run_tuned(support, queries)
        key, encoder = self.pool.get(self.adapter_dir)
        labels, y = _label_index(support)
        if self.spec.steps == 0:
            emb, enc_cost = self.pool.embed(key, support.texts)
            oos_emb, oos_cost = self.pool.embed(key, support.oos_texts)
            start = time.perf_counter()
            clf = classifier_head(encoder, self.spec, labels, emb, y, oos_emb)
            # encoding time as if uncached (remembered per text) + the head's own time
            adapt = enc_cost + oos_cost + time.perf_counter() - start
            embedded = {k: self.pool.embed(key, v)[0] for k, v in queries.items()}
            return _outcome(clf, labels, embedded, adapt, self._adapter_fields(key))
        return self._run_with_steps(encoder, support, labels, y, queries)

    def _adapter_fields(self, key: str) -> dict[str, Any]:
        if self.adapter_dir is None:
            return {"adapter": None}
        config = self.pool.adapter_config(key)
        return {"adapter": adapter_note(self.adapter_dir), "adapter_created": config.get("created")}

    def _run_with_steps(self, encoder, support, labels, y, queries) -> Outcome:  # type: ignore[no-untyped-def]
        from fewintent.model.tuning import adapt_on_support  # issue 3's inner loop, the one `adapt --steps` runs

        key = self.pool.key(self.adapter_dir)
        lr = self.inner_lr or float(self.pool.adapter_config(key).get("inner_lr", 1e-3))
        saved = lora_state(encoder)
        try:
            torch.manual_seed(self.seed)
            start = time.perf_counter()
            adapt_on_support(encoder, support, steps=self.spec.steps, lr=lr, seed=self.seed)
            emb = encoder.encode(support.texts)
            oos_emb = encoder.encode(support.oos_texts) if support.oos_texts else None
            clf = classifier_head(encoder, self.spec, labels, emb, y, oos_emb)
            adapt = time.perf_counter() - start
            embedded = {k: encoder.encode(v) for k, v in queries.items()}
        finally:
            load_lora_state(encoder, saved)  # the next task starts from the meta-learned weights again
        return _outcome(clf, labels, embedded, adapt, {**self._adapter_fields(key), "inner_lr": lr})

    def _run_tuned(self, support: IntentSet, queries: dict[str, list[str]]) -> Outcome:
        """Accurate mode, as ``fewintent adapt --tune`` runs it: a fresh encoder with this method's adapter,
        tuned on the support set; the adapt time is the whole ``IntentClassifier.adapt`` call."""
        args = AdaptArguments(
            base=self.base,
            adapter="none" if self.adapter_dir is None else str(self.adapter_dir),
            head=self.spec.head,
            oos_score=self.spec.oos_score,
            intent_names=self.spec.intent_names,
            tune=True,
            seed=self.seed,
            device=self.device,
        )
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FewIntentWarning)
            clf = IntentClassifier.adapt(support, args)
        adapt = time.perf_counter() - start
        embedded = {k: clf.encoder.encode(v) for k, v in queries.items()}
        tune = clf.meta["tune"]
        fields = {"adapter": adapter_note(self.adapter_dir)}
        if self.adapter_dir is not None:
            fields["adapter_created"] = (clf.meta.get("adapter") or {}).get("created")
        summary = {k: tune[k] for k in ("epochs_run", "kept_epoch", "seconds", "stopped_by", "held_out_accuracy")}
        return _outcome(clf, clf.labels, embedded, adapt, {**fields, "tune": {**summary, "recipe": tune["recipe"]}})


def adapter_note(adapter_dir: Path | None) -> str | None:
    if adapter_dir is None:
        return None
    return adapter_dir.name if "fewintent/adapters" in adapter_dir.as_posix() else str(adapter_dir)


class LogRegMethod(Method):
    """scikit-learn's logistic regression on the frozen encoder's embeddings, ``C`` tuned on ``valid``.

    ``valid`` gives the dataset's ``valid`` split (None: no tuning, ``C=1``); each support set gets the ``C`` of
    :data:`LOGREG_C_GRID` with the best accuracy on the ``valid`` rows of its intents. ``test`` is never read.
    """

    def __init__(
        self,
        pool: EncoderPool,
        *,
        seed: int = 0,
        valid: Callable[[], IntentSet] | None = None,
        in_scope_recall: float = 0.95,
    ) -> None:
        self.spec, self.pool, self.seed, self.valid = MethodSpec(FROZEN_LOGREG, FROZEN_LOGREG), pool, seed, valid
        self.in_scope_recall = in_scope_recall  # the product's target on this base, so OOS rows compare
        self.c = 1.0
        self._tuned: dict[tuple[tuple[str, ...], int], float] = {}

    def _fit(self, x: np.ndarray, y: np.ndarray, c: float | None = None):  # type: ignore[no-untyped-def]
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.c if c is None else c, max_iter=3000, random_state=self.seed).fit(x, y)

    def _tune(self, key: str, labels: list[str], x: np.ndarray, y: np.ndarray) -> tuple[float, str]:
        if self.valid is None:
            return 1.0, "default"
        cache_key = (tuple(labels), len(y))
        if cache_key not in self._tuned:
            valid = self.valid()
            index = {label: i for i, label in enumerate(labels)}
            rows = [(t, index[i]) for t, i in zip(valid.texts, valid.intents) if i in index]
            if not rows:
                return 1.0, "default (no valid rows for these intents)"
            xv = self.pool.embed(key, [t for t, _ in rows])[0].numpy()
            yv = np.array([i for _, i in rows])
            accuracy = {c: float((self._fit(x, y, c).predict(xv) == yv).mean()) for c in LOGREG_C_GRID}
            self._tuned[cache_key] = max(LOGREG_C_GRID, key=lambda c: (accuracy[c], -c))
        return self._tuned[cache_key], "valid"

    def run(self, support: IntentSet, queries: dict[str, list[str]], *, want_threshold: bool = False) -> Outcome:
        key, _ = self.pool.get(None)
        labels, y_t = _label_index(support)
        emb, enc_cost = self.pool.embed(key, support.texts)
        x, y = emb.numpy(), y_t.numpy()
        self.c, source = self._tune(key, labels, x, y)
        start = time.perf_counter()
        clf = self._fit(x, y)
        adapt = enc_cost + time.perf_counter() - start
        threshold = self._support_threshold(x, y) if want_threshold else None
        scores = {k: clf.predict_proba(self.pool.embed(key, v)[0].numpy()) for k, v in queries.items()}
        extra = {"C": self.c, "C_source": source}
        return Outcome(labels, scores, adapt, threshold, score_kind="probability", extra=extra)

    def _support_threshold(self, x: np.ndarray, y: np.ndarray) -> float | None:
        """Out-of-fold max probabilities of the support examples, cut to keep 95% of them (k-fold, k <= 5)."""
        from sklearn.model_selection import StratifiedKFold

        k = min(5, int(np.bincount(y).min()))
        if k < 2:
            return None
        top = np.empty(len(y))
        n_classes = int(y.max()) + 1
        for train, held in StratifiedKFold(k, shuffle=True, random_state=self.seed).split(x, y):
            clf = self._fit(x[train], y[train])
            proba = np.zeros((len(held), n_classes))
            proba[:, clf.classes_] = clf.predict_proba(x[held])
            top[held] = proba.max(1)
        return calibrate_threshold(top, None, in_scope_recall=self.in_scope_recall)


def setfit_available() -> str | None:
    """None when SetFit can run, else why not (with the fix)."""
    try:
        import setfit  # noqa: F401
    except ImportError:
        return "setfit is not installed: pip install 'fewintent[bench]'"
    return None


class SetFitMethod(Method):
    """SetFit (contrastive fine-tuning of the same base encoder, then a logistic-regression head).

    ``iterations=None`` is the library's default recipe (every pair, oversampled); an integer sets
    ``num_iterations`` (the SetFit paper's recipe is 20), recorded in each row.
    """

    def __init__(
        self, *, device: str = "cpu", seed: int = 0, iterations: int | None = None, base: BaseSpec | None = None
    ) -> None:
        self.spec, self.device, self.seed, self.iterations = MethodSpec(SETFIT, SETFIT), device, seed, iterations
        self.base = base
        self.last_model: Any = None

    def default_steps(self, n_texts: int, labels: list[int]) -> int:
        """Training steps the library's default recipe takes on this support set (batch 16, one epoch)."""
        counts = np.bincount(labels)
        same = int(sum(c * (c + 1) // 2 for c in counts))  # setfit pairs include each text with itself
        different = n_texts * (n_texts + 1) // 2 - same
        return math.ceil(2 * max(same, different) / 16)

    def load(self):  # type: ignore[no-untyped-def]
        from setfit import SetFitModel

        from fewintent.encoder.encoder import resolve_base

        location = resolve_base(self.base.name if self.base else None).location
        return SetFitModel.from_pretrained(str(location), device=self.device)

    def run(self, support: IntentSet, queries: dict[str, list[str]], *, want_threshold: bool = False) -> Outcome:
        from datasets import Dataset
        from setfit import Trainer, TrainingArguments

        labels, y = _label_index(support)
        model = self.load()
        args = TrainingArguments(seed=self.seed, report_to="none")
        if self.iterations is not None:
            args.num_iterations = self.iterations
        train = Dataset.from_dict({"text": support.texts, "label": y.tolist()})
        trainer = Trainer(model=model, args=args, train_dataset=train)
        start = time.perf_counter()
        trainer.train()
        adapt = time.perf_counter() - start
        default_steps = self.default_steps(len(support.texts), y.tolist())
        batch = int(args.embedding_batch_size)
        # setfit makes 2 * num_iterations pairs per text (one positive, one negative), one epoch by default
        steps = (
            default_steps if self.iterations is None else math.ceil(2 * self.iterations * len(support.texts) / batch)
        )
        scores = {}
        for k, v in queries.items():
            proba = np.asarray(model.predict_proba(v, batch_size=64, as_numpy=True))
            full = np.zeros((len(v), len(labels)))
            full[:, np.asarray(model.model_head.classes_)] = proba  # columns by class id
            scores[k] = full
        extra: dict[str, Any] = {
            "recipe": "default" if self.iterations is None else f"num_iterations={self.iterations}",
            "train_steps": steps,
            "default_recipe_steps": default_steps,
        }
        if steps:
            extra["seconds_per_step"] = adapt / steps
            extra["projected_default_seconds"] = adapt / steps * default_steps
        self.last_model = model
        return Outcome(labels, scores, adapt, None, score_kind="probability", extra=extra)

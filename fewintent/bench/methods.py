"""The methods compared, behind one interface: built for one dataset of one protocol, they adapt on a support set
and score query sets. :data:`METHODS` maps names to classes; each class says how it behaves (its adapter, its
episode budget, how the speed protocol times it), so no other module checks a method's name.

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
- ``<method>-oos-<score>``: the same method with another out-of-scope score (``fewintent adapt --oos-score``).
- ``<method>-tune`` (``fewintent-linear-tune``, ``frozen-linear-tune``): the same method in accurate mode
  (``fewintent adapt --tune``).

The linear-head methods use each intent's name as one more example (the product default since it won on
``valid``); the prototype-head methods do not, as when they were first measured (rows carry ``intent_names``).

Every fewintent method (and ``frozen-prototype`` / ``frozen-linear``) is the product itself: without steps or
tuning an ``IntentClassifier`` on the run's shared encoder, fitted with ``fit_embeddings`` on cached embeddings
and deciding with ``decide``; with them, ``IntentClassifier.adapt``, whose ``adapt_seconds`` is then its whole wall
time (encoder load, training, encoding, head).
"""

from __future__ import annotations

import copy
import math
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fewintent.bench.config import ALGORITHMS, adapter_problem, adapter_template, resolve_adapter_for
from fewintent.bench.context import BenchContext, Skip
from fewintent.data.intentset import IntentSet
from fewintent.encoder.lora import load_lora_state, lora_state, merge_lora, read_adapter
from fewintent.errors import FewIntentError, FewIntentWarning, extra_install
from fewintent.model.adapting import LoadedEncoder, Trainer
from fewintent.model.calibration import calibrate_threshold
from fewintent.model.classifier import IntentClassifier
from fewintent.model.config import AdaptArguments, ClassifierConfig
from fewintent.model.rows import intent_rows

LOGREG_C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
OVR_C_GRID = (1.0, 10.0, 100.0)
DEFAULT_METHODS = (
    "frozen-prototype",
    "frozen-logreg",
    "setfit",
    "fewintent-linear",
    "fewintent-protonet",
    "fewintent-fomaml",
    "fewintent-fomaml-steps5",
)
PRODUCT_METHOD = "fewintent-linear"
"""The product default (``fewintent adapt``), the method the README's headline shows where it shows one."""
MULTILABEL_METHODS = ("frozen-onevsrest", "frozen-ovr-logreg", "setfit-onevsrest", "fewintent-onevsrest")
"""The ``multilabel`` protocol's methods when ``--methods`` is not given."""
Predict = Callable[[list[str]], Any]
Domains = tuple[str, ...]


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
    intent_sets: dict[str, list[tuple[str, ...]]] | None = None
    """Multi-label methods: per query set, the intents each query is given (empty: none, out of scope)."""
    classifier: IntentClassifier | None = None
    """The fitted product classifier the scores came from (product methods), for what needs more than scores: its
    support's held-out scores calibrate it from unlabelled logs. None for a method that is not the product."""

    def oos_score(self, key: str) -> np.ndarray:
        """Higher = more in scope; ``support_threshold`` cuts this."""
        if self.oos_scores is not None:
            return self.oos_scores[key]
        return self.scores[key].max(1)


@dataclass
class SpeedPlan:
    """How the speed protocol times a method: ``adapt`` adapts on the support set as a user would (timed, memory
    watched) and returns the function that predicts; ``fields`` go into the row (an ``adapt_seconds`` among them
    replaces the timed one, e.g. SetFit's training time taken elsewhere)."""

    adapt: Callable[[], Predict]
    fields: dict[str, Any] = field(default_factory=dict)


class Method:
    """One compared method. A new baseline is a subclass (``run``, and whichever hooks differ) and one line in
    :data:`METHODS`; the protocols, the speed protocol and the report ask the method, never its name."""

    steps = 0
    """Inner-loop steps on the support set (a row field)."""
    time_reference: ClassVar[bool] = False
    """The method whose adaptation time the report compares the others' with (SetFit)."""
    budget_flag: ClassVar[str] = ""
    """The option that limits how many episodes it runs (:meth:`episodes`)."""
    multi_label = False
    """It names any number of intents per message (the ``multilabel`` protocol runs it; the others do not)."""

    def __init__(self, name: str, ctx: BenchContext, dataset: str = "") -> None:
        self.name, self.ctx, self.dataset = name, ctx, dataset

    @classmethod
    def validate(cls, name: str) -> None:
        """Refuse (FewIntentError) a name of this family that is not a method."""

    @classmethod
    def build(cls, ctx: BenchContext, name: str, protocol: str, dataset: str, heldout: Domains) -> Method | Skip:
        """The method for one dataset of one protocol, or why it gives no row there."""
        return cls(name, ctx, dataset)

    @classmethod
    def episodes(cls, name: str, ctx: BenchContext, n: int) -> int:
        """How many of ``n`` episodes it runs (a method that trains on every episode may run the first few)."""
        return n

    def refuse(self, support: IntentSet) -> str | None:
        """Why it does not run on this support set (a budget), or None."""
        return None

    def warm_key(self) -> str | None:
        """The shared embedding cache it reads (episodic encodes every text of the episodes ahead), if any."""
        return None

    def run(self, support: IntentSet, queries: dict[str, list[str]], *, want_threshold: bool = False) -> Outcome:
        raise NotImplementedError

    def speed(self, device: str, support: IntentSet, cell: tuple[str, int]) -> SpeedPlan | Skip:
        """How the speed protocol times it on ``cell`` (dataset, shots)."""
        raise NotImplementedError


_PRODUCT = re.compile(
    rf"^(?:frozen-(?P<frozen>prototype|linear|onevsrest)|fewintent-(?:(?P<algo>{'|'.join(ALGORITHMS)})"
    r"(?P<linear>-linear)?(?:-steps(?P<steps>\d+))?|(?P<default>linear|onevsrest)))(?:-oos-(?P<oos>[a-z]+))?"
    r"(?P<tune>-tune)?$"
)


def _head(m: re.Match[str]) -> str:
    return m["frozen"] or m["default"] or ("linear" if m["linear"] else "prototype")


class ProductMethod(Method):
    """The product, ``IntentClassifier``: ``frozen-*`` on the encoder alone (``--adapter none``), ``fewintent-*``
    with the meta-learned adapter of its algorithm left out of the scored dataset (the base's default adapter on
    multi-label data, which none of them saw). ``*-onevsrest`` is the multi-label head that ``fewintent adapt``
    picks by itself on multi-label data."""

    budget_flag = "steps-episodes"

    def __init__(self, name: str, ctx: BenchContext, dataset: str = "") -> None:
        super().__init__(name, ctx, dataset)
        m = self._match(name)
        self.algorithm = None if m["frozen"] else m["algo"] or ALGORITHMS[0]
        self.head = _head(m)
        self.oos_score = ClassifierConfig(head=self.head, oos_score=m["oos"] or "prototype").oos_score
        self.steps, self.tune = int(m["steps"] or 0), bool(m["tune"])
        self.multi_label = ClassifierConfig(head=self.head).multi_label
        self.intent_names = self.head != "prototype"  # the configuration each name was first measured with
        self.adapter_dir: Path | None = None

    @classmethod
    def _match(cls, name: str) -> re.Match[str]:
        m = _PRODUCT.match(name)
        if m is None:
            raise FewIntentError(
                f"unknown method '{name}': use {', '.join(METHODS_SHOWN)}, or fewintent-<{'|'.join(ALGORITHMS)}>"
                "[-linear][-steps<N>], with -oos-<score> for another out-of-scope score and -tune for accurate mode"
            )
        if m["tune"] and m["steps"]:
            raise FewIntentError(f"'{name}': only fewintent and frozen-prototype/-linear methods without steps tune")
        ClassifierConfig(head=_head(m), oos_score=m["oos"] or "prototype")  # refuses an unknown or unfit OOS score
        return m

    @classmethod
    def validate(cls, name: str) -> None:
        cls._match(name)

    @classmethod
    def build(cls, ctx: BenchContext, name: str, protocol: str, dataset: str, heldout: Domains) -> Method | Skip:
        method, cfg, base = cls(name, ctx, dataset), ctx.config, ctx.base
        if method.algorithm is None:
            return method
        template = adapter_template(cfg.adapters, protocol, method.algorithm)
        if protocol == "multilabel" and f"multilabel:{method.algorithm}" not in cfg.adapters:
            if method.algorithm != ALGORITHMS[0] or base.default_adapter is None:  # the product's own adapter
                return Skip(f"the {base.name} base ships no {method.algorithm} adapter for multi-label data", True)
            template = base.default_adapter
        path, asked = resolve_adapter_for(template, dataset, cfg.adapter_dirs, base)
        if path is None and "{leave_out}" in template and base.leave_out_adapter is None:
            return Skip(f"the {base.name} base ships no leave-one-dataset-out adapters (its product is frozen)", True)
        if path is None:
            flag = f"{protocol}:{method.algorithm}" if protocol in ("episodic", "multilabel") else method.algorithm
            return Skip(f"adapter '{asked}' not found (pass --adapter {flag}=NAME_OR_PATH once it exists)", True)
        # speed measures time only: any adapter of the right layout times the same, so "saw the data" is no bar
        config, _ = read_adapter(path)
        problem = adapter_problem(config, method.algorithm, "" if protocol == "speed" else dataset, heldout)
        if problem:
            return Skip(f"adapter '{asked}' not used: {problem}")
        method.adapter_dir = path
        return method

    @classmethod
    def episodes(cls, name: str, ctx: BenchContext, n: int) -> int:
        budget = ctx.config.steps_episodes
        m = cls._match(name)
        return min(n, budget) if budget and (m["steps"] or m["tune"]) else n

    @property
    def cached(self) -> bool:
        """Nothing trains on the support set: the run's shared encoder and its embedding cache serve."""
        return not (self.steps or self.tune)

    def warm_key(self) -> str | None:
        return self.ctx.pool.get(self.adapter_dir)[0] if self.cached else None

    def arguments(self, device: str) -> AdaptArguments:
        """What ``fewintent adapt`` is told for this method."""
        adapter = "none" if self.adapter_dir is None else str(self.adapter_dir)
        return AdaptArguments(**self.settings, base=self.ctx.base.name, adapter=adapter, seed=self.ctx.config.seed,
                              steps=self.steps, tune=self.tune, device=device)  # fmt: skip

    @property
    def settings(self) -> dict[str, Any]:
        return {"head": self.head, "oos_score": self.oos_score, "intent_names": self.intent_names}

    def loaded(self, key: str, encoder: Any) -> LoadedEncoder:
        """The pool's encoder as the trainer takes it, with its adapter recorded as ``Trainer.load_encoder`` would."""
        if self.adapter_dir is None:
            return LoadedEncoder(encoder)
        return LoadedEncoder(
            encoder, {"adapter": {**self.ctx.pool.adapter_config(key), "source": adapter_note(self.adapter_dir)}}
        )

    def run(self, support: IntentSet, queries: dict[str, list[str]], *, want_threshold: bool = False) -> Outcome:
        fields: dict[str, Any] = {"adapter": adapter_note(self.adapter_dir)}
        pool = self.ctx.pool
        key, encoder = pool.get(self.adapter_dir)
        if self.cached:
            emb, seconds = pool.embed(key, support.texts)
            oos_emb, oos_seconds = pool.embed(key, support.oos_texts)
            y, sets = intent_rows(support, support.labels)  # as IntentClassifier.fit passes them
            start = time.perf_counter()
            clf = IntentClassifier(encoder, **self.settings)
            with warnings.catch_warnings():  # 1-shot episodes are 1-shot on purpose: no warning per episode
                warnings.simplefilter("ignore", FewIntentWarning)
                clf.fit_embeddings(support.labels, emb, y, oos_emb, sets=sets if self.multi_label else None)
            # encoding time as if uncached (remembered per text) + the head's own time
            seconds += oos_seconds + time.perf_counter() - start
            decided = {
                k: clf.decide(v, clf.table, pool.embed(key, v)[0], len(support.labels)) for k, v in queries.items()
            }
            if self.adapter_dir is not None:
                fields["adapter_created"] = pool.adapter_config(key).get("created")
        else:
            clf, seconds, decided = self._trained(key, encoder, support, queries)
            meta = clf.meta
            if self.adapter_dir is not None:
                fields["adapter_created"] = (meta.get("adapter") or {}).get("created")
            if self.steps:
                fields["inner_lr"] = meta.get("inner_lr")
            if self.tune:
                tune = meta.get("tune") or {}
                keep = ("epochs_run", "kept_epoch", "seconds", "stopped_by", "held_out_accuracy", "recipe")
                fields["tune"] = {k: tune[k] for k in keep if k in tune}
        index = {label: i for i, label in enumerate(clf.labels)}
        scores, oos = {}, {}
        for k, predictions in decided.items():
            scores[k] = np.zeros((len(predictions), len(index)))
            for row, p in enumerate(predictions):
                scores[k][row, [index[s.name] for s in p.intent_ranking]] = [s.confidence for s in p.intent_ranking]
            oos[k] = np.array([p.oos_score for p in predictions])
        sets_out = None
        if self.multi_label:
            sets_out = {k: [tuple(s.name for s in p.intents or []) for p in v] for k, v in decided.items()}
        kind = "cosine" if self.head == "prototype" else "logit"
        extra = {**fields, **self.settings}
        return Outcome(clf.labels, scores, seconds, clf.threshold, kind, extra, oos, sets_out, classifier=clf)

    def _trained(self, key: str, encoder: Any, support: IntentSet, queries: dict[str, list[str]]) -> tuple:
        """``--steps`` / ``--tune`` through the trainer on the pool's encoder (loaded once per run, not per support
        set): steps leave its LoRA live and are undone after the queries are scored; tune merges its layers into the
        weights, so it trains a copy. The time is the trainer's: training, encoding and the head (no load)."""
        loaded = self.loaded(key, encoder)
        if self.tune:
            loaded = LoadedEncoder(copy.deepcopy(encoder), loaded.meta)
        saved = lora_state(encoder) if self.steps else None
        try:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FewIntentWarning)
                clf = Trainer(self.arguments(self.ctx.config.device), encoder=loaded).train(support)
            seconds = time.perf_counter() - start
            decided = {k: clf.predict(v, top_k=len(clf.labels)) for k, v in queries.items()}
        finally:
            if saved is not None:
                load_lora_state(encoder, saved)  # the next support set starts from the meta-learned weights again
        return clf, seconds, decided

    def speed(self, device: str, support: IntentSet, cell: tuple[str, int]) -> SpeedPlan | Skip:
        if self.tune:
            return Skip("a -tune method's adapt time (minutes of training) is in its fullway and oos rows")
        fields = {**self.settings, "adapter": adapter_note(self.adapter_dir)}
        args = self.arguments(device)
        if self.steps:  # loaded before the clock; the steps, the merge (as adapt does after them) and the fit timed
            fields["adapt_timed"] = "Trainer.train (steps, LoRA merge, encoding, head), encoder loaded before"
            loaded = Trainer(args).load_encoder()

            def adapt_with_steps() -> Predict:
                clf = Trainer(args, encoder=loaded).train(support)
                merge_lora(loaded.encoder)
                return lambda texts: clf.predict(texts, top_k=1)

            return SpeedPlan(adapt_with_steps, fields)
        clf = Trainer(args).unfitted()  # loaded (and its adapter merged) before the clock starts

        def adapt() -> Predict:
            clf.fit(support)
            return lambda texts: clf.predict(texts, top_k=1)

        return SpeedPlan(adapt, fields)


def adapter_note(adapter_dir: Path | None) -> str | None:
    if adapter_dir is None:
        return None
    return adapter_dir.name if "fewintent/adapters" in adapter_dir.as_posix() else str(adapter_dir)


def _label_ids(support: IntentSet) -> np.ndarray:
    index = {label: i for i, label in enumerate(support.labels)}
    return np.array([index[i] for i in support.intents])


class LogRegMethod(Method):
    """scikit-learn's logistic regression on the frozen encoder's embeddings, ``C`` tuned on ``valid``.

    Each support set gets the ``C`` of :data:`LOGREG_C_GRID` with the best accuracy on the dataset's ``valid`` rows
    of its intents (episodic episodes read their own intents' rows; no rows: ``C=1``). ``test`` is never read.
    """

    def __init__(self, name: str, ctx: BenchContext, dataset: str = "") -> None:
        super().__init__(name, ctx, dataset)
        self.corpus = dataset.split(":")[0]  # OOS settings are named like banking77_oos:id
        self.in_scope_recall = ctx.base.constants.in_scope_recall  # the product's target on this base, so OOS compares
        self.c = 1.0
        self._tuned: dict[tuple[tuple[str, ...], int], float] = {}

    def warm_key(self) -> str | None:
        return self.ctx.pool.get(None)[0]

    def _fit(self, x: np.ndarray, y: Any, c: float | None = None):  # type: ignore[no-untyped-def]
        from sklearn.linear_model import LogisticRegression

        seed = self.ctx.config.seed
        return LogisticRegression(C=self.c if c is None else c, max_iter=3000, random_state=seed).fit(x, y)

    def _tune(self, key: str, labels: list[str], x: np.ndarray, y: np.ndarray) -> tuple[float, str]:
        if not self.corpus:
            return 1.0, "default"
        cache_key = (tuple(labels), len(y))
        if cache_key not in self._tuned:
            valid = self.ctx.corpora.labelled(self.corpus, "valid")
            index = {label: i for i, label in enumerate(labels)}
            rows = [(t, index[i]) for t, i in zip(valid.texts, valid.intents) if i in index]
            if not rows:
                return 1.0, "default (no valid rows for these intents)"
            xv = self.ctx.pool.embed(key, [t for t, _ in rows])[0].numpy()
            yv = np.array([i for _, i in rows])
            accuracy = {c: float((self._fit(x, y, c).predict(xv) == yv).mean()) for c in LOGREG_C_GRID}
            self._tuned[cache_key] = max(LOGREG_C_GRID, key=lambda c: (accuracy[c], -c))
        return self._tuned[cache_key], "valid"

    def run(self, support: IntentSet, queries: dict[str, list[str]], *, want_threshold: bool = False) -> Outcome:
        pool = self.ctx.pool
        key, _ = pool.get(None)
        emb, enc_cost = pool.embed(key, support.texts)
        x, y = emb.numpy(), _label_ids(support)
        self.c, source = self._tune(key, support.labels, x, y)
        start = time.perf_counter()
        clf = self._fit(x, y)
        adapt = enc_cost + time.perf_counter() - start
        threshold = self._support_threshold(x, y) if want_threshold else None
        scores = {k: clf.predict_proba(pool.embed(key, v)[0].numpy()) for k, v in queries.items()}
        extra = {"C": self.c, "C_source": source}
        return Outcome(support.labels, scores, adapt, threshold, score_kind="probability", extra=extra)

    def _support_threshold(self, x: np.ndarray, y: np.ndarray) -> float | None:
        """Out-of-fold max probabilities of the support examples, cut to keep 95% of them (k-fold, k <= 5)."""
        from sklearn.model_selection import StratifiedKFold

        k = min(5, int(np.bincount(y).min()))
        if k < 2:
            return None
        top = np.empty(len(y))
        n_classes = int(y.max()) + 1
        for train, held in StratifiedKFold(k, shuffle=True, random_state=self.ctx.config.seed).split(x, y):
            clf = self._fit(x[train], y[train])
            proba = np.zeros((len(held), n_classes))
            proba[:, clf.classes_] = clf.predict_proba(x[held])
            top[held] = proba.max(1)
        return calibrate_threshold(top, None, in_scope_recall=self.in_scope_recall)

    def speed(self, device: str, support: IntentSet, cell: tuple[str, int]) -> SpeedPlan | Skip:
        encoder = self.ctx.pool.frozen_on(device)

        def adapt() -> Predict:
            from sklearn.linear_model import LogisticRegression

            x = encoder.encode(support.texts).numpy()
            clf = LogisticRegression(max_iter=1000, random_state=self.ctx.config.seed).fit(x, support.intents)
            return lambda texts: clf.predict_proba(encoder.encode(texts).numpy())

        return SpeedPlan(adapt)


class OvrLogRegMethod(Method):
    """``frozen-ovr-logreg``: scikit-learn's ``OneVsRestClassifier(LogisticRegression(class_weight="balanced"))`` on
    the frozen encoder's embeddings, an intent passing at probability >= 0.5 (the tutorial recipe of issue 31), ``C``
    of :data:`OVR_C_GRID` chosen by 5-fold cross-validation (micro-F1) on the support set alone. Messages with no
    intent train as all-negative rows; intent names are not examples."""

    multi_label = True

    def warm_key(self) -> str | None:
        return self.ctx.pool.get(None)[0]

    def run(self, support: IntentSet, queries: dict[str, list[str]], *, want_threshold: bool = False) -> Outcome:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GridSearchCV, KFold
        from sklearn.multiclass import OneVsRestClassifier

        pool, labels = self.ctx.pool, support.labels
        key, _ = pool.get(None)
        emb, seconds = pool.embed(key, support.texts + support.oos_texts)
        index = {label: i for i, label in enumerate(labels)}
        y = np.zeros((len(emb), len(labels)), dtype=int)
        for row, names in enumerate(support.sets()):
            y[row, [index[x] for x in names]] = 1
        start = time.perf_counter()
        logreg = LogisticRegression(class_weight="balanced", max_iter=1000, random_state=self.ctx.config.seed)
        folds = KFold(5, shuffle=True, random_state=self.ctx.config.seed)
        search = GridSearchCV(OneVsRestClassifier(logreg), {"estimator__C": OVR_C_GRID}, scoring="f1_micro", cv=folds)
        with warnings.catch_warnings():  # an intent absent from a CV fold is predicted constant: expected here
            warnings.simplefilter("ignore", UserWarning)
            search.fit(emb.numpy(), y)
        seconds += time.perf_counter() - start
        scores = {k: search.predict_proba(pool.embed(key, v)[0].numpy()) for k, v in queries.items()}
        sets = {k: [tuple(labels[i] for i in np.flatnonzero(p >= 0.5)) for p in v] for k, v in scores.items()}
        extra = {"C": float(search.best_params_["estimator__C"]), "C_source": "5-fold CV on the support set"}
        return Outcome(labels, scores, seconds, None, "probability", extra, intent_sets=sets)


class SetFitMethod(Method):
    """SetFit (contrastive fine-tuning of the same base encoder, then a logistic-regression head).

    ``--setfit-iterations`` unset is the library's default recipe (every pair, oversampled); an integer sets
    ``num_iterations`` (the SetFit paper's recipe is 20), recorded in each row.
    """

    time_reference, budget_flag = True, "setfit-episodes"

    def __init__(self, name: str, ctx: BenchContext, *, device: str | None = None) -> None:
        super().__init__(name, ctx)
        self.device, self.iterations = device or ctx.config.device, ctx.config.setfit_iterations
        self.last_model: Any = None
        self.last_seconds: float | None = None

    @classmethod
    def build(cls, ctx: BenchContext, name: str, protocol: str, dataset: str, heldout: Domains) -> Method | Skip:
        try:
            import setfit  # noqa: F401
        except ImportError:
            return Skip(f"setfit is not installed: {extra_install('bench')}")
        if protocol == "episodic" and not ctx.config.setfit_episodes:
            return Skip("SetFit trains once per episode: give --setfit-episodes N to run it on N episodes")
        return cls(name, ctx)

    @classmethod
    def episodes(cls, name: str, ctx: BenchContext, n: int) -> int:
        return min(n, ctx.config.setfit_episodes)

    def refuse(self, support: IntentSet) -> str | None:
        n, budget = len(support.texts), self.ctx.config.setfit_max_support
        if n <= budget:
            return None
        steps = self.default_steps(n, _label_ids(support).tolist())
        return (
            f"support of {n} texts is over --setfit-max-support {budget} "
            f"(SetFit's default recipe would train {steps} steps here; raise the budget to run it)"
        )

    @staticmethod
    def default_steps(n_texts: int, labels: list[int]) -> int:
        """Training steps the library's default recipe takes on this support set (batch 16, one epoch)."""
        counts = np.bincount(labels)
        same = int(sum(c * (c + 1) // 2 for c in counts))  # setfit pairs include each text with itself
        different = n_texts * (n_texts + 1) // 2 - same
        return math.ceil(2 * max(same, different) / 16)

    def load(self):  # type: ignore[no-untyped-def]
        from setfit import SetFitModel

        from fewintent.encoder.encoder import resolve_base

        return SetFitModel.from_pretrained(str(resolve_base(self.ctx.base.name).location), device=self.device)

    def run(self, support: IntentSet, queries: dict[str, list[str]], *, want_threshold: bool = False) -> Outcome:
        from datasets import Dataset
        from setfit import Trainer, TrainingArguments

        labels, y = support.labels, _label_ids(support).tolist()
        model = self.load()
        args = TrainingArguments(seed=self.ctx.config.seed, report_to="none")
        if self.iterations is not None:
            args.num_iterations = self.iterations
        trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": support.texts, "label": y}))
        start = time.perf_counter()
        trainer.train()
        adapt = time.perf_counter() - start
        default_steps = self.default_steps(len(support.texts), y)
        # setfit makes 2 * num_iterations pairs per text (one positive, one negative), one epoch by default
        batch = int(args.embedding_batch_size)
        steps = default_steps if self.iterations is None else math.ceil(2 * self.iterations * len(y) / batch)
        scores = {}
        for k, v in queries.items():
            proba = np.asarray(model.predict_proba(v, batch_size=64, as_numpy=True))
            scores[k] = np.zeros((len(v), len(labels)))
            scores[k][:, np.asarray(model.model_head.classes_)] = proba  # columns by class id
        extra: dict[str, Any] = {
            "recipe": "default" if self.iterations is None else f"num_iterations={self.iterations}",
            "train_steps": steps,
            "default_recipe_steps": default_steps,
        }
        if steps:
            extra["seconds_per_step"] = adapt / steps
            extra["projected_default_seconds"] = adapt / steps * default_steps
        self.last_model, self.last_seconds = model, adapt
        return Outcome(labels, scores, adapt, None, score_kind="probability", extra=extra)

    def speed(self, device: str, support: IntentSet, cell: tuple[str, int]) -> SpeedPlan | Skip:
        """SetFit's adaptation time is its full training on this split, in this run: reused from this run's fullway
        row, else trained here (support within --setfit-max-support; its memory counts), else (with a note) the
        newest fullway row in results.json. Latency and throughput are measured on the trained model if any."""
        from fewintent.bench.results import load_rows

        done = self.ctx.artifacts.get(("fullway", *cell, self.name))
        fields: dict[str, Any] = {}
        model: Any = None
        if isinstance(done, SetFitMethod) and done.device == device:
            model, fields["adapt_seconds"] = done.last_model, done.last_seconds
            fields["adapt_seconds_source"] = "fullway row of this run"
        elif self.refuse(support) is None:
            fields["adapt_seconds_source"] = "trained in this speed run"
        else:
            for r in load_rows(self.ctx.store.path):
                if (r.protocol, r.dataset, r.shots, r.method) == ("fullway", *cell, self.name) and r.adapt_seconds:
                    fields["adapt_seconds"], fields["recipe"] = r.adapt_seconds, r.recipe
                    run_id = (r.run or {}).get("id")
                    fields["adapt_seconds_source"] = f"fullway row of run {run_id} (another run: load may differ)"
            if "adapt_seconds" not in fields:
                return Skip("no SetFit training time on this split (run fullway with setfit first)")

        def adapt() -> Predict:
            trained = model
            if fields["adapt_seconds_source"] == "trained in this speed run":
                runner = SetFitMethod(self.name, self.ctx, device=device)
                outcome = runner.run(support, {})
                trained, fields["adapt_seconds"] = runner.last_model, outcome.adapt_seconds
                fields["recipe"] = outcome.extra.get("recipe")
            if trained is None:  # inference cost does not depend on the trained weights
                from sklearn.linear_model import LogisticRegression

                trained = SetFitMethod(self.name, self.ctx, device=device).load()
                emb = trained.model_body.encode(support.texts, convert_to_numpy=True)
                trained.model_head = LogisticRegression(max_iter=1000).fit(emb, support.intents)
            return lambda texts: trained.predict_proba(texts, as_numpy=True)

        return SpeedPlan(adapt, fields)


class SetFitOvrMethod(SetFitMethod):
    """``setfit-onevsrest``: SetFit with ``multi_target_strategy="one-vs-rest"`` on the same base (contrastive pairs,
    then one balanced logistic regression per intent, an intent passing at probability >= 0.5). ``--setfit-iterations``
    sets its ``num_iterations`` as for ``setfit``; ``--setfit-episodes`` limits it to the first N splits."""

    multi_label = True

    def load(self):  # type: ignore[no-untyped-def]
        from setfit import SetFitModel

        from fewintent.encoder.encoder import resolve_base

        location = str(resolve_base(self.ctx.base.name).location)
        # balanced, as frozen-ovr-logreg: SetFit's default head (C=1, unweighted) names almost no intent at >= 0.5
        # from 1-2 folds (0.3-17% micro-F1 measured), so the two baselines differ only by SetFit's contrastive step
        head = {"class_weight": "balanced", "max_iter": 1000}
        return SetFitModel.from_pretrained(
            location, device=self.device, multi_target_strategy="one-vs-rest", head_params=head
        )

    def refuse(self, support: IntentSet) -> str | None:
        n, budget = len(support.texts) + len(support.oos_texts), self.ctx.config.setfit_max_support
        return None if n <= budget else f"support of {n} texts is over --setfit-max-support {budget}"

    def run(self, support: IntentSet, queries: dict[str, list[str]], *, want_threshold: bool = False) -> Outcome:
        from datasets import Dataset
        from setfit import Trainer, TrainingArguments

        labels = support.labels
        index = {label: i for i, label in enumerate(labels)}
        y = np.zeros((len(support.texts) + len(support.oos_texts), len(labels)), dtype=int)
        for row, names in enumerate(support.sets()):
            y[row, [index[x] for x in names]] = 1
        model = self.load()
        args = TrainingArguments(seed=self.ctx.config.seed, report_to="none")
        if self.iterations is not None:
            args.num_iterations = self.iterations
        data = Dataset.from_dict({"text": support.texts + support.oos_texts, "label": y.tolist()})
        with tempfile.TemporaryDirectory(prefix="setfit-") as scratch:  # its checkpoints, not in the working dir
            args.output_dir = scratch
            trainer = Trainer(model=model, args=args, train_dataset=data)
            start = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - start
        sets, scores = {}, {}
        for k, v in queries.items():
            passed = np.asarray(model.predict(v, batch_size=64, as_numpy=True))
            scores[k] = passed.astype(float)
            sets[k] = [tuple(labels[i] for i in np.flatnonzero(p)) for p in passed]
        extra = {"recipe": "default" if self.iterations is None else f"num_iterations={self.iterations}"}
        extra["head"] = "OneVsRest(LogisticRegression(class_weight=balanced)), p >= 0.5"
        self.last_model, self.last_seconds = model, seconds
        return Outcome(labels, scores, seconds, None, "probability", extra, intent_sets=sets)


METHODS: dict[str, type[Method]] = {
    "frozen-logreg": LogRegMethod,
    "frozen-ovr-logreg": OvrLogRegMethod,
    "setfit": SetFitMethod,
    "setfit-onevsrest": SetFitOvrMethod,
    "frozen": ProductMethod,
    "fewintent": ProductMethod,
}
"""Method names (or the family before the first ``-``) -> their class; the first match wins."""
METHODS_SHOWN = (
    "frozen-prototype",
    "frozen-linear",
    "frozen-logreg",
    "setfit",
    "fewintent-linear",
    *MULTILABEL_METHODS,
)


def method_class(name: str) -> type[Method]:
    """The class of method ``name`` (validated: an unknown name is refused with the names there are)."""
    cls = METHODS.get(name) or METHODS.get(name.split("-")[0], ProductMethod)
    cls.validate(name)
    return cls


def build_method(
    ctx: BenchContext, name: str, protocol: str, dataset: str, heldout: tuple[str, ...] = ()
) -> Method | Skip:
    """``name`` for one dataset of one protocol, with its leave-out adapter, or why it is skipped there. The
    ``multilabel`` protocol runs the multi-label methods and only them."""
    method = method_class(name).build(ctx, name, protocol, dataset, heldout)
    if isinstance(method, Method) and method.multi_label != (protocol == "multilabel"):
        if method.multi_label:
            return Skip("a multi-label method: the multilabel protocol measures it")
        return Skip(f"it names one intent per message; multi-label methods: {', '.join(MULTILABEL_METHODS)}")
    return method

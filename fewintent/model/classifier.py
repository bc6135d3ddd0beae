"""IntentClassifier: adapt to a company's intents from a few examples, predict with an out-of-scope fallback."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from fewintent.data.intentset import IntentSet, check_intent_name, check_texts, known_spelling, name_example
from fewintent.data.io import read_intent_file
from fewintent.encoder.base import Encoder, set_num_threads
from fewintent.encoder.registry import constants_for
from fewintent.errors import EditConflictError, FewIntentError, UnknownIntentError, reject_unknown
from fewintent.heads.decision import HeadParams
from fewintent.heads.prototypes import class_means, l2_normalize
from fewintent.heads.registry import head_class
from fewintent.model.calibration import CalibrationReport, calibrate_classifier, check_threshold, support_threshold
from fewintent.model.config import AdaptArguments, ClassifierConfig, TrainingArguments
from fewintent.model.discovery import DiscoveryResult, discover
from fewintent.model.oos import head_fitter, oos_score_class
from fewintent.model.overlap import OverlapReport, find_overlaps
from fewintent.model.persistence import export_model, load_model, save_model
from fewintent.model.protocols import Progress
from fewintent.model.rows import intent_rows
from fewintent.model.table import IntentScore, Prediction, Rows, ScoringTable, head_rows
from fewintent.model.traffic import calibrate_on_logs

if TYPE_CHECKING:
    from fewintent.model.tuning import TrainingProgress

__all__ = ["AdaptArguments", "ClassifierConfig", "IntentClassifier", "IntentScore", "Prediction"]


class IntentClassifier:
    """Names the intent of a message, or says it is out of scope.

    Safe to share across threads: predictions read one immutable table; ``add_intent`` / ``remove_intent``
    build a new table and swap it in atomically. Encoder calls are serialised (the encoder already uses every
    core). Tables and heads are numpy: a model on an ONNX encoder never imports torch.
    In async code keep the event loop free: ``await asyncio.to_thread(clf.predict, texts)``, or, for many
    concurrent callers, ``fewintent.serve.MicroBatcher(clf)`` which merges them into one encoder pass.

    Example:
        >>> clf = IntentClassifier.adapt({"greet": ["hi", "hello there"], "bye": ["bye", "see you"]})
        >>> clf.predict(["hey, hello!"])[0].intent.name
        'greet'
    """

    def __init__(
        self,
        encoder: Encoder,
        config: ClassifierConfig | None = None,
        *,
        meta: dict[str, Any] | None = None,
        training: TrainingArguments | None = None,
        **settings: Any,
    ) -> None:
        """A classifier with no intents yet over ``encoder``; ``settings`` override fields of ``config``
        (e.g. ``head="prototype"``). Numbers left None take the values tuned on the encoder's base. ``training``
        and ``meta`` record how it was built (provenance, saved with it; the trainer fills them in)."""
        reject_unknown(settings, ClassifierConfig.__dataclass_fields__, "classifier setting(s)")
        config = replace(config or ClassifierConfig(), **settings).settings()
        self.encoder = encoder
        self.config = config.resolved(constants_for(encoder.name, encoder.sha256))
        self.training = training
        self._name_cache: dict[str, np.ndarray] = {}  # name example -> its embedding (cross-validation refits)
        self.threshold_manual = False
        self.meta: dict[str, Any] = dict(meta or {})
        self._write_lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._table: ScoringTable | None = None

    @property
    def oos_label(self) -> str:
        """The answer for out-of-scope messages (``config.oos_label``)."""
        return self.config.oos_label

    def _head_params(self) -> HeadParams:
        return HeadParams(scale=float(self.config.scale or 0.0), c=float(self.config.head_c or 0.0))

    # ----------------------------------------------------------------- building
    @classmethod
    def adapt(
        cls,
        examples: IntentSet | Mapping[str, Sequence[str]] | str | Path,
        args: AdaptArguments | None = None,
        *,
        progress: Progress | None = None,
        training: TrainingProgress | None = None,
        **overrides: Any,
    ) -> IntentClassifier:
        """Build a classifier from example utterances (an IntentSet, ``{intent: [texts]}`` or a file path): the
        trainer's work (:class:`fewintent.model.adapting.Trainer`), here so the one object users hold builds too.

        Keyword overrides set fields of :class:`AdaptArguments`, e.g. ``adapter="none"``, ``steps=5``,
        ``tune=True``. ``progress`` is told how many examples were encoded; ``training`` follows ``steps`` or
        ``tune`` (:class:`~fewintent.model.tuning.TrainingStatus`).

        Example:
            >>> clf = IntentClassifier.adapt("train.jsonl", tune=True, tune_time=300)  # doctest: +SKIP
        """
        from fewintent.model.adapting import adapt

        return adapt(examples, args, progress=progress, training=training, **overrides)

    @classmethod
    def unfitted(cls, args: AdaptArguments | None = None, **overrides: Any) -> IntentClassifier:
        """The encoder (and adapter) ``adapt`` would use, with no intents yet: ``fit`` / ``fit_embeddings`` next
        (:meth:`fewintent.model.adapting.Trainer.unfitted`)."""
        from fewintent.model.adapting import unfitted

        return unfitted(args, **overrides)

    def fit(
        self,
        data: IntentSet,
        *,
        progress: Progress | None = None,
        tuned: Sequence[bool] | None = None,
        embedded: Mapping[str, Any] | None = None,
    ) -> IntentClassifier:
        """(Re)build prototypes and the OOS threshold from ``data``, replacing every intent.

        ``tuned`` says, per example, whether the encoder was trained on it (``adapt(tune=True)`` passes it): the
        OOS threshold is then calibrated on the others only, and the model says which intents tuning saw.
        ``embedded`` maps texts (examples, intents' names) to embeddings this encoder already made of them (tuning's
        last pass: ``adapt(tune=True)`` passes them); only the others are encoded.
        """
        if len(data.labels) < 2:
            raise FewIntentError("at least 2 intents are needed to build a classifier")
        if data.is_multi_label and not self.config.multi_label:
            raise FewIntentError(
                f"{data.source} gives several intents per message: use the multi-label head (--head onevsrest, "
                f"or --multi-label), not '{self.config.head}'"
            )
        labels = tuple(data.labels)
        emb = self._encode_new(data.texts + data.oos_texts, embedded or {}, progress)
        support, oos = emb[: len(data.texts)], emb[len(data.texts) :]
        y, sets = intent_rows(data, labels)
        mask = None
        if tuned is not None:
            if len(tuned) != len(data.texts):
                raise FewIntentError(f"tuned has {len(tuned)} flags for {len(data.texts)} examples")
            mask = np.array([bool(t) for t in tuned], dtype=bool)
        if embedded:
            named = [t for label in labels if (t := name_example(label)) is not None and t in embedded]
            self._name_cache.update({t: np.asarray(embedded[t], np.float32) for t in named})
        return self.fit_embeddings(labels, support, y, oos, tuned=mask, sets=sets if self.config.multi_label else None)

    def fit_embeddings(
        self,
        labels: Sequence[str],
        support: Any,
        y: Any,
        oos: Any = None,
        *,
        tuned: Any = None,
        sets: Any = None,
    ) -> IntentClassifier:
        """Build prototypes, the head and the OOS threshold from already encoded examples (what ``fit`` does
        after encoding; the benchmark calls it with cached embeddings so it measures this very code). Arrays are
        numpy, or anything ``np.asarray`` takes (a CPU torch tensor). A multi-label head takes ``sets``, each
        example's intents as a bool row over ``labels`` (``y`` then holds the first of them); None: ``y`` alone."""
        support = np.asarray(support, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        oos = np.empty((0, support.shape[1]), np.float32) if oos is None else np.asarray(oos, dtype=np.float32)
        tuned = None if tuned is None else np.asarray(tuned, dtype=bool)
        if self.config.multi_label and sets is None:
            sets = np.arange(len(labels))[None, :] == y[:, None]
        sets = None if sets is None else np.asarray(sets, dtype=bool)
        names = self._name_rows(labels)
        with self._write_lock:
            self._table = self._build_table(tuple(labels), support, y, oos, names, tuned, sets)
        return self

    def _encode_new(self, texts: list[str], known: Mapping[str, Any], progress: Progress | None) -> np.ndarray:
        """Embeddings of ``texts``, encoding only those ``known`` lacks (each once)."""
        new = list(dict.fromkeys(t for t in texts if t not in known))
        if len(new) == len(texts):
            return self.encode(texts, progress)
        found = dict(zip(new, self.encode(new, progress)))
        if progress is not None:
            progress(len(texts) - len(new))
        return np.stack([np.asarray(known[t] if t in known else found[t], dtype=np.float32) for t in texts])

    def _name_rows(self, labels: Sequence[str]) -> Rows | None:
        """The intents' names as examples (``intent_names``): embeddings and label indices, or None when off or
        no name says anything."""
        if not self.config.intent_names:
            return None
        texts = [(i, name_example(label)) for i, label in enumerate(labels)]
        kept = [(i, text) for i, text in texts if text is not None]
        missing = list(dict.fromkeys(text for _, text in kept if text not in self._name_cache))
        if missing:
            self._name_cache.update(zip(missing, self.encode(missing)))
        if not kept:
            return None
        return np.stack([self._name_cache[text] for _, text in kept]), np.array([i for i, _ in kept], dtype=np.int64)

    def _build_table(
        self,
        labels: tuple[str, ...],
        support: np.ndarray,
        y: np.ndarray,
        oos: np.ndarray,
        names: Rows | None = None,
        tuned: np.ndarray | None = None,
        sets: np.ndarray | None = None,
    ) -> ScoringTable:
        """Prototypes, head, OOS scorer and threshold from the examples; the name rows count as examples, except
        that the threshold is calibrated on the user's examples alone (held out, against prototypes with names),
        and on a tuned encoder only on the examples it was not trained on (``tuned`` False). A multi-label head
        decides out of scope itself (no intent passes its own threshold): the table's threshold is then 0."""
        cfg, n, params = self.config, len(labels), self._head_params()
        head_cls, score = head_class(cfg.head), oos_score_class(cfg.oos_score)
        x, targets, messages = head_rows((support, y), names, sets, n, oos)
        protos = l2_normalize(class_means(x, targets, n))
        head = head_cls.fit(x, targets, n, protos, params, messages)

        def table(threshold: float, temperature: float) -> ScoringTable:
            return ScoringTable.build(
                labels, head, score, protos, (support, y), oos, threshold=threshold, oos_temperature=temperature,
                names=names, tuned=tuned, sets=sets,
            )  # fmt: skip

        if self.threshold_manual and self._table is not None:  # set by hand: it survives edits
            return table(self._table.threshold, self._table.oos_temperature)
        if head_cls.multi_label:  # margins are log-odds over each intent's own threshold
            return table(0.0, 1.0)
        fit_head = head_fitter(head_cls, params)
        draft = table(0.0, params.scale)
        threshold, temperature = support_threshold(
            score, (support, y, n), fit_head, names, tuned, draft.scorer(oos) if len(oos) else None, cfg
        )
        return replace(draft, threshold=threshold, oos_temperature=temperature)

    def restore(
        self,
        labels: Sequence[str],
        tensors: Mapping[str, Any],
        *,
        threshold: float,
        threshold_manual: bool = False,
        oos_temperature: float | None = None,
    ) -> IntentClassifier:
        """Put back a saved state (what :mod:`fewintent.model.persistence` reads) without recalibrating anything;
        ``tensors`` are what :meth:`ScoringTable.to_tensors` wrote (``ValueError`` when they do not fit)."""
        table = ScoringTable.from_tensors(
            tuple(labels),
            tensors,
            head=head_class(self.config.head),
            params=self._head_params(),
            oos_score=oos_score_class(self.config.oos_score),
            threshold=threshold,
            oos_temperature=float(self.config.scale or 0.0) if oos_temperature is None else float(oos_temperature),
        )
        with self._write_lock:
            self._table = table
            self.threshold_manual = threshold_manual
        return self

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """Embeddings as a float32 numpy array, whichever encoder (torch or ONNX) made them."""
        # The encoder holds no per-call state, but LoRA dropout/train flags are process-wide: one at a time.
        with self._encode_lock:
            return np.asarray(self.encoder.encode(texts, progress=progress), dtype=np.float32)

    @staticmethod
    def set_threads(threads: int) -> None:
        """CPU threads every encoder of this process uses from now on (ONNX sessions created later, and torch)."""
        set_num_threads(threads)

    # ----------------------------------------------------------------- reading
    @property
    def table(self) -> ScoringTable:
        if self._table is None:
            raise FewIntentError("the classifier has no intents yet: call adapt() or fit() first")
        return self._table

    @property
    def labels(self) -> list[str]:
        return list(self.table.labels)

    @property
    def threshold(self) -> float:
        return self.table.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        """Set the out-of-scope threshold by hand (within its OOS score's range); it then survives edits."""
        value = check_threshold(value, cosine=(s := oos_score_class(self.config.oos_score)).cosine, highest=s.highest)
        with self._write_lock:
            self._table = replace(self.table, threshold=value)
            self.threshold_manual = True

    def counts(self) -> dict[str, int]:
        return self.table.counts()

    def similarities(
        self, texts: Sequence[str], *, progress: Progress | None = None
    ) -> tuple[ScoringTable, np.ndarray]:
        """Cosine similarity of each text to each prototype, with the table used (for consistent reads)."""
        table, emb = self.embed(texts, progress=progress)
        return table, table.similarities(emb)

    def embed(self, texts: Sequence[str], *, progress: Progress | None = None) -> tuple[ScoringTable, np.ndarray]:
        """Embeddings of ``texts`` with the table to score them against (one consistent snapshot)."""
        texts = check_texts(texts)
        table = self.table
        return table, self.encode(texts, progress)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """The head's confidence in each intent (no OOS column), shape ``(len(texts), len(labels))``, labels order:
        a softmax over intents, or each intent's own probability for a multi-label head."""
        table, emb = self.embed(texts)
        return table.head.confidences(emb, table.similarities(emb))

    @overload
    def predict(self, texts: str, *, top_k: int = ..., progress: Any = ...) -> Prediction: ...  # type: ignore[overload-overlap]
    @overload
    def predict(self, texts: Sequence[str], *, top_k: int = ..., progress: Any = ...) -> list[Prediction]: ...
    def predict(self, texts: str | Sequence[str], *, top_k: int = 10, progress: Progress | None = None) -> Any:
        """Classify texts (one string: one prediction, as in SetFit); below the threshold is the OOS label."""
        if isinstance(texts, str):
            return self.predict([texts], top_k=top_k, progress=progress)[0]
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise FewIntentError(f"top_k must be a whole number of at least 1, got {top_k!r:.20}")
        texts = check_texts(texts)  # once: a generator must not be consumed twice
        table, emb = self.embed(texts, progress=progress)
        return self.decide(texts, table, emb, top_k)

    def decide(self, texts: Sequence[str], table: ScoringTable, emb: Any, top_k: int = 10) -> list[Prediction]:
        """Predictions from embeddings: the head ranks the intents, the OOS score (by default the best cosine to a
        prototype) against the threshold decides out of scope. A multi-label head names every intent whose margin
        passes the threshold (``Prediction.intents``)."""
        emb = np.asarray(emb, dtype=np.float32)
        sims = table.similarities(emb)
        probs = table.head.confidences(emb, sims)
        passing = table.logits(emb, sims) >= table.threshold if table.head.multi_label else None
        k = min(top_k, len(table.labels))
        top_i = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
        top_p = np.take_along_axis(probs, top_i, axis=-1)
        score = table.oos_scores(emb, sims)
        # OOS confidence grows with the distance below the threshold; 0.5 exactly at it.
        with np.errstate(over="ignore"):  # far above the threshold exp overflows to inf: the confidence is 0
            oos_conf = 1.0 / (1.0 + np.exp(-(table.threshold - score.astype(np.float64)) * table.oos_temperature))
        out = []
        for row, text in enumerate(texts):
            ranking = [IntentScore(table.labels[int(i)], float(p)) for p, i in zip(top_p[row], top_i[row])]
            is_oos = bool(score[row] < table.threshold)
            intent = IntentScore(self.oos_label, float(oos_conf[row])) if is_oos else ranking[0]
            named = None
            if passing is not None:
                order = np.argsort(-probs[row], kind="stable")
                named = [IntentScore(table.labels[int(i)], float(probs[row, i])) for i in order if passing[row, i]]
                intent = named[0] if named else intent
            out.append(Prediction(text, intent, is_oos, ranking, float(score[row]), named))
        return out

    def calibrate(
        self,
        data: IntentSet | str | Path | None = None,
        *,
        logs: Sequence[str] | str | Path | None = None,
        objective: str = "auto",
        in_scope_recall: float | None = None,
        oos_share: float | None = None,
    ) -> CalibrationReport:
        """Re-tune the out-of-scope threshold on held-out labelled data (see :func:`calibrate_classifier`), or on
        unlabelled ``logs`` of real traffic, for their estimated out-of-scope share or ``oos_share``
        (:func:`fewintent.model.traffic.calibrate_on_logs`).

        Example:
            >>> report = clf.calibrate("valid.jsonl")  # doctest: +SKIP
            >>> clf.calibrate(logs="messages.txt").oos_share  # doctest: +SKIP
        """
        if logs is not None or data is None:
            return calibrate_on_logs(self, logs, objective=objective, oos_share=oos_share, labelled=data)
        self.meta.pop("calibration", None)  # a share chosen from logs no longer describes the threshold
        if not isinstance(data, IntentSet):
            data = read_intent_file(data, oos_label=self.oos_label, for_training=False)
        return calibrate_classifier(
            self, data, objective=objective, in_scope_recall=in_scope_recall, oos_share=oos_share
        )

    def overlaps(self, data: IntentSet, *, progress: Progress | None = None) -> OverlapReport:
        """Confusable intents, near-duplicate examples under different intents and weak intents in ``data``,
        seen through this classifier's encoder (no head needed)."""
        return find_overlaps(self.encode(data.texts, progress), data)

    def discover(self, texts: Sequence[str], **options: Any) -> DiscoveryResult:
        """Candidate new intents among the out-of-scope ``texts`` and the in-scope ones worth labelling next
        (see :func:`fewintent.model.discovery.discover` for the options)."""
        return discover(self, texts, **options)

    # ----------------------------------------------------------------- editing
    def add_intent(self, name: str, examples: Sequence[str]) -> None:
        """Add an intent (or replace its examples) without touching the others' prototypes."""
        if not isinstance(name, str) or not name.strip():
            raise FewIntentError(f"an intent needs a non-empty name (a string), got {name!r:.40}")
        name = check_intent_name(name.strip(), known=[x for x in self.labels if x != name.strip()])
        if name.casefold() == self.oos_label.casefold() or (self.config.multi_label and "+" in name):
            why = "is the out-of-scope label" if "+" not in name else "joins two intents in multi-label files"
            raise FewIntentError(f"'{name}' {why} and cannot be an intent")
        examples = check_texts(examples)  # a bare string is refused, not split into characters
        clean = list(dict.fromkeys(" ".join(t.split()) for t in examples if t.strip()))
        if not clean:
            raise FewIntentError(f"intent '{name}' needs at least one non-empty example")
        emb = self.encode(clean)
        name_row = self._name_rows([name])  # encoded outside the lock, numbered inside
        with self._write_lock:
            self._table = self._build_table(*self.table.rows_with(name, emb, name_row))

    def remove_intent(self, name: str) -> None:
        if not isinstance(name, str):
            raise FewIntentError(f"an intent name is a string, got {type(name).__name__}")
        name = known_spelling(name, self.table.labels)
        with self._write_lock:
            t = self.table
            if name not in t.labels:
                raise UnknownIntentError(f"unknown intent '{name}' (known: {', '.join(t.labels)})")
            if len(t.labels) <= 2:
                raise EditConflictError(f"cannot remove '{name}': a classifier needs at least 2 intents")
            self._table = self._build_table(*t.rows_without(name))

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | Path, *, card_extra: dict[str, Any] | None = None) -> Path:
        """Write the model directory atomically (see :mod:`fewintent.model.persistence`)."""
        return save_model(self, Path(path), card_extra=card_extra)

    save_pretrained = save

    @classmethod
    def export(
        cls, model_dir: str | Path, output: str | Path, *, format: str = "onnx", quantize: str | None = None
    ) -> IntentClassifier:
        """Write a saved model again with an ONNX encoder (``quantize="int8"``: ~4x smaller, faster on CPU); the
        result loads like any model directory (predict, evaluate, serve, live edits). Needs ``fewintent[onnx]``.

        Example:
            >>> IntentClassifier.export("models/shop", "models/shop-int8", quantize="int8")  # doctest: +SKIP
        """
        if format != "onnx":
            raise FewIntentError(f"unknown export format '{format}': use onnx")
        return export_model(Path(model_dir), Path(output), cls, quantize=quantize)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto") -> IntentClassifier:
        """Load a model directory written by :meth:`save`; refuses foreign or corrupt directories."""
        if not isinstance(path, (str, Path)):
            raise FewIntentError(f"a model directory is a path, got {type(path).__name__}")
        return load_model(Path(path), cls, device=device)

    from_pretrained = load

    @property
    def tuned_intents(self) -> list[str]:
        """The intents whose examples the encoder was trained on (``adapt(tune=True)``), in label order; intents
        added or replaced later were not (their head rows are refitted on the tuned encoder, not re-tuned)."""
        return self.table.tuned_intents()

"""Cross-validation on the training file itself, for teams without a test set: encode once, refit per fold.

Each example is predicted by a classifier built from the other folds with the same adapt settings, so the
accuracy estimates what ``adapt`` gives on new messages (with a little less data: ``(K-1)/K`` of it per fold).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fewintent.data.intentset import IntentSet
from fewintent.errors import FewIntentError
from fewintent.model.evaluation import score_label_sets
from fewintent.model.rows import intent_rows

if TYPE_CHECKING:
    from fewintent.model.protocols import Classifier, Progress


@dataclass
class CrossValidationResult:
    """The ``evaluate TRAIN_FILE --cv K --json`` object."""

    folds: int
    n: int
    top1_accuracy: float
    """Held-out accuracy of the best intent, fallback off."""
    accuracy: float
    """Held-out accuracy with the out-of-scope fallback on (a rejected example counts as wrong)."""
    in_scope_kept: float
    """Share of held-out examples the fold's OOS threshold kept in scope."""
    threshold: float
    """The OOS threshold ``adapt`` chooses on the whole file (what the saved model would use)."""
    per_intent: dict[str, dict[str, float]] = field(default_factory=dict)
    """precision / recall / f1 / support of each intent (fallback off)."""
    confused_pairs: list[dict[str, Any]] = field(default_factory=list)
    """The most frequent (gold, predicted) mistakes, with example texts."""
    warnings: list[str] = field(default_factory=list)
    """What makes these numbers less telling (folds reduced, intents held out with no example left to train on)."""
    micro_f1: float | None = None
    """A multi-label model's F1 over (message, intent) pairs (None for single-label; accuracies are then the share
    of messages whose set of intents is exactly right)."""
    macro_f1: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fold_of(labels: np.ndarray, folds: int) -> np.ndarray:
    """Stratified, deterministic folds: the i-th example of each intent goes to fold ``i mod folds``."""
    rank = np.zeros_like(labels)
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        rank[where] = np.arange(len(where))
    return rank % folds


def cross_validate(
    clf: Classifier,
    data: IntentSet,
    folds: int | str = 5,
    *,
    progress: Progress | None = None,
    top_confusions: int = 10,
) -> CrossValidationResult:
    """K-fold (or ``"loo"``: leave-one-out) cross-validation of ``clf``'s settings on ``data``.

    ``clf`` is an unfitted classifier (``IntentClassifier.unfitted(...)``) carrying the encoder, adapter, head
    and OOS settings to evaluate; it ends fitted on the whole of ``data``.

    Example:
        >>> clf = IntentClassifier.unfitted(adapter="auto")  # doctest: +SKIP
        >>> cross_validate(clf, read_intent_file("train.jsonl"), 5).top1_accuracy  # doctest: +SKIP
    """
    labels = data.labels
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[i] for i in data.intents], dtype=np.int64)
    counts = np.array([data.counts()[label] for label in labels], dtype=np.int64)  # multi-label: each intent
    if not (folds == "loo" or (isinstance(folds, int) and not isinstance(folds, bool) and folds >= 2)):
        raise FewIntentError(f"--cv takes a number of folds (2 or more) or 'loo', got {folds!r}")
    # The first fold holds out one example of every intent: an intent trains in it only with two or more.
    trainable = int((counts >= 2).sum())
    if trainable < 2:
        raise FewIntentError(
            f"{data.source}: cross-validation holds out one example of each intent and needs at least two intents "
            f"with two or more examples to train on; {trainable} ha{'s' if trainable == 1 else 've'}: add examples"
        )
    warnings: list[str] = []
    most = int(counts.max())
    k = most if folds == "loo" else min(int(folds), most)  # folds beyond the largest intent would be empty
    if folds != "loo" and k < int(folds):
        warnings.append(f"{folds} folds asked, {k} run: no intent has more than {most} examples to spread over them")
    singles = [labels[i] for i in range(len(labels)) if int(counts[i]) == 1]
    if singles:
        shown = ", ".join(singles[:5]) + (" ..." if len(singles) > 5 else "")
        warnings.append(
            f"{len(singles)} intent(s) have one example ({shown}): held out, no example of them is left to train "
            "on, so they always count as errors"
        )
    emb = clf.encode(data.texts + data.oos_texts, progress)  # once, for every fold
    support, oos = emb[: len(data.texts)], emb[len(data.texts) :]
    if data.is_multi_label:
        return _cross_validate_sets(clf, data, support, oos, fold_of(y, k), k, warnings)
    fold = fold_of(y, k)
    top1 = np.empty(len(y), dtype=np.int64)
    kept = np.empty(len(y), dtype=bool)
    for f in range(k):
        train, held = fold != f, fold == f
        if not bool(held.any()):
            continue
        present = sorted(set(y[train].tolist()))
        remap = np.full(len(labels), -1, dtype=np.int64)
        remap[present] = np.arange(len(present))
        clf.fit_embeddings([labels[i] for i in present], support[train], remap[y[train]], oos)
        table = clf.table
        predictions = clf.decide([""] * int(held.sum()), table, support[held], top_k=1)
        names = [p.intent_ranking[0].name for p in predictions]
        top1[held] = [index[n] for n in names]
        kept[held] = [not p.is_oos for p in predictions]
    clf.fit_embeddings(labels, support, y, oos)  # the model the file gives, for its threshold (and to keep)
    gold, pred = y, top1
    right = gold == pred
    return CrossValidationResult(
        folds=k,
        n=len(gold),
        top1_accuracy=float(right.mean()),
        accuracy=float((right & kept).mean()),
        in_scope_kept=float(kept.mean()),
        threshold=clf.threshold,
        per_intent=_per_intent(labels, gold, pred),
        confused_pairs=_confusions(labels, data.texts, gold, pred, top_confusions),
        warnings=warnings,
    )


def _cross_validate_sets(
    clf: Classifier,
    data: IntentSet,
    support: np.ndarray,
    oos: np.ndarray,
    fold: np.ndarray,
    k: int,
    warnings: list[str],
) -> CrossValidationResult:
    """Cross-validation of a multi-label model: each fold's predicted intent sets against the held-out ones."""
    if not clf.config.multi_label:
        raise FewIntentError(f"{data.source} gives several intents per message: cross-validate the multi-label head")
    labels = data.labels
    sets = intent_rows(data, labels)[1]
    y = sets.argmax(axis=1)
    predicted: list[set[str]] = [set() for _ in range(len(support))]
    for f in range(k):
        train, held = fold != f, fold == f
        present = np.flatnonzero(sets[train].any(axis=0))
        if not bool(held.any()) or len(present) < 2:
            continue
        kept = sets[train][:, present]
        clf.fit_embeddings([labels[i] for i in present], support[train], kept.argmax(axis=1), oos, sets=kept)
        for at, p in zip(np.flatnonzero(held), clf.decide([""] * int(held.sum()), clf.table, support[held])):
            predicted[int(at)] = {x.name for x in p.intents or []}
    clf.fit_embeddings(labels, support, y, oos, sets=sets)  # the model the file gives
    scores = score_label_sets([set(s) for s in data.sets()], predicted, labels)
    return CrossValidationResult(
        folds=k,
        n=len(support),
        top1_accuracy=scores.exact_match,
        accuracy=scores.exact_match,
        in_scope_kept=float(np.mean([bool(p) for p in predicted])),
        threshold=clf.threshold,
        per_intent=scores.per_intent,
        warnings=warnings,
        micro_f1=scores.micro_f1,
        macro_f1=scores.macro_f1,
    )


def _per_intent(labels: list[str], gold: np.ndarray, pred: np.ndarray) -> dict[str, dict[str, float]]:
    out = {}
    for i, name in enumerate(labels):
        tp = int(((gold == i) & (pred == i)).sum())
        predicted, actual = int((pred == i).sum()), int((gold == i).sum())
        p = tp / predicted if predicted else 0.0
        r = tp / actual if actual else 0.0
        out[name] = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "support": actual}
    return out


def _confusions(
    labels: list[str], texts: list[str], gold: np.ndarray, pred: np.ndarray, top: int
) -> list[dict[str, Any]]:
    pairs: Counter[tuple[int, int]] = Counter()
    examples: dict[tuple[int, int], list[str]] = defaultdict(list)
    for text, g, p in zip(texts, gold, pred):
        if g != p:
            pairs[(int(g), int(p))] += 1
            if len(examples[(int(g), int(p))]) < 3:
                examples[(int(g), int(p))].append(text)
    return [
        {"gold": labels[g], "predicted": labels[p], "count": c, "examples": examples[(g, p)]}
        for (g, p), c in pairs.most_common(top)
    ]

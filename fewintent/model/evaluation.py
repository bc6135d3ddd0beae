"""Scoring a classifier on labelled data: accuracy with OOS as a class, in-scope accuracy, OOS quality, F1, MCC."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fewintent.data.intentset import IntentSet

if TYPE_CHECKING:
    from fewintent.model.classifier import IntentClassifier, Progress


@dataclass
class EvaluationResult:
    """The ``evaluate --json`` object; ``oos_*`` are None when the data has no out-of-scope rows."""

    n: int
    accuracy: float
    in_scope_accuracy: float | None
    top1_accuracy: float | None
    """In-scope accuracy of the best intent with the OOS fallback off (the closed-set number papers report)."""
    oos_recall: float | None
    oos_precision: float | None
    oos_f1: float | None
    macro_f1: float
    mcc: float
    unknown_intents: list[str] = field(default_factory=list)
    confused_pairs: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _safe_div(a: float, b: float) -> float:
    return a / b if b else 0.0


def multiclass_mcc(gold: Sequence[str], pred: Sequence[str]) -> float:
    """Matthews correlation coefficient for K classes (Gorodkin 2004), as scikit-learn computes it."""
    classes = sorted(set(gold) | set(pred))
    idx = {c: i for i, c in enumerate(classes)}
    cm = np.zeros((len(classes), len(classes)), dtype=np.float64)
    for g, p in zip(gold, pred):
        cm[idx[g], idx[p]] += 1
    t, p_ = cm.sum(1), cm.sum(0)
    c, s = np.trace(cm), cm.sum()
    denom = np.sqrt(s * s - (p_ * p_).sum()) * np.sqrt(s * s - (t * t).sum())
    return float((c * s - (t * p_).sum()) / denom) if denom else 0.0


def macro_f1(gold: Sequence[str], pred: Sequence[str]) -> float:
    """Unweighted mean F1 over every class that is gold or predicted (scikit-learn's default)."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for g, p in zip(gold, pred):
        if g == p:
            tp[g] += 1
        else:
            fp[p] += 1
            fn[g] += 1
    scores = [_safe_div(2 * tp[c], 2 * tp[c] + fp[c] + fn[c]) for c in set(gold) | set(pred)]
    return float(np.mean(scores)) if scores else 0.0


def score_predictions(
    gold: Sequence[str],
    pred: Sequence[str],
    oos_label: str,
    *,
    top1: Sequence[str] | None = None,
    top_confusions: int = 10,
) -> EvaluationResult:
    """All metrics from gold and predicted label lists (OOS appears as ``oos_label`` in both).

    ``top1`` is the best in-scope intent per row regardless of the OOS threshold, for ``top1_accuracy``.
    """
    n = len(gold)
    correct = sum(g == p for g, p in zip(gold, pred))
    in_scope = [(g, p) for g, p in zip(gold, pred) if g != oos_label]
    n_oos = n - len(in_scope)
    predicted_oos = sum(p == oos_label for p in pred)
    true_oos = sum(g == oos_label and p == oos_label for g, p in zip(gold, pred))
    recall = _safe_div(true_oos, n_oos) if n_oos else None
    precision = _safe_div(true_oos, predicted_oos) if n_oos else None
    f1 = (
        _safe_div(2 * recall * precision, recall + precision) if recall is not None and precision is not None else None
    )
    confusions = Counter((g, p) for g, p in zip(gold, pred) if g != p)
    return EvaluationResult(
        n=n,
        accuracy=_safe_div(correct, n),
        in_scope_accuracy=_safe_div(sum(g == p for g, p in in_scope), len(in_scope)) if in_scope else None,
        top1_accuracy=(
            _safe_div(sum(g == t for g, t in zip(gold, top1) if g != oos_label), len(in_scope))
            if top1 is not None and in_scope
            else None
        ),
        oos_recall=recall,
        oos_precision=precision,
        oos_f1=f1,
        macro_f1=macro_f1(gold, pred),
        mcc=multiclass_mcc(gold, pred),
        confused_pairs=[
            {"gold": g, "predicted": p, "count": c} for (g, p), c in confusions.most_common(top_confusions)
        ],
    )


def evaluate(clf: IntentClassifier, data: IntentSet, *, progress: Progress | None = None) -> EvaluationResult:
    """Predict every row of ``data`` and score it; OOS rows are expected to come back as the OOS label."""
    texts = data.texts + data.oos_texts
    gold = data.intents + [clf.oos_label] * len(data.oos_texts)
    predictions = clf.predict(texts, top_k=1, progress=progress)
    pred = [p.intent.name for p in predictions]
    top1 = [p.intent_ranking[0].name for p in predictions]
    result = score_predictions(gold, pred, clf.oos_label, top1=top1)
    known = set(clf.labels)
    result.unknown_intents = sorted({g for g in data.intents if g not in known})
    return result

"""Scoring a classifier on labelled data: accuracy with OOS as a class, in-scope accuracy, OOS quality, F1, MCC."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fewintent.data.intentset import IntentSet
from fewintent.errors import FewIntentError

if TYPE_CHECKING:
    from fewintent.model.protocols import Classifier, Progress


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
    oos_auroc: float | None = None
    """How well the OOS score ranks OOS rows below in-scope ones (1 = perfectly; None without OOS rows)."""
    oos_aupr: float | None = None
    """Average precision of detecting OOS rows by a low OOS score (None without OOS rows)."""
    sweep: list[dict[str, Any]] = field(default_factory=list)
    """With ``sweep_points``: in-scope kept / OOS recall / precision / F1 at other thresholds (``current`` marked)."""
    unknown_intents: list[str] = field(default_factory=list)
    confused_pairs: list[dict[str, Any]] = field(default_factory=list)
    """The most frequent (gold, predicted) mistakes, the OOS label included, with up to three example texts."""
    per_intent: dict[str, dict[str, float]] = field(default_factory=dict)
    """precision / recall / f1 / support of each intent and of the OOS label (``rasa test nlu``'s intent report)."""
    errors: list[dict[str, Any]] = field(default_factory=list, repr=False)
    """Every misclassified row: text, intent (gold), predicted, confidence (``evaluate --errors FILE``; not in
    :meth:`to_dict`)."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("errors")
        return out


@dataclass
class MultiLabelResult:
    """The ``evaluate --json`` object of a multi-label model: F1 over (message, intent) pairs instead of accuracy.
    A message with no intent is out of scope; ``oos_*`` score that (None when the data has no such rows)."""

    n: int
    micro_f1: float
    macro_f1: float
    exact_match: float
    """Share of messages whose set of intents is exactly right."""
    count_accuracy: float
    """Share of messages given the right number of intents."""
    micro_precision: float
    micro_recall: float
    oos_recall: float | None
    oos_precision: float | None
    oos_f1: float | None
    per_intent: dict[str, dict[str, float]] = field(default_factory=dict)
    unknown_intents: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_label_sets(gold: Sequence[set[str]], pred: Sequence[set[str]], labels: Sequence[str]) -> MultiLabelResult:
    """Multi-label scores of predicted intent sets against the gold ones (empty sets: out of scope)."""
    per: dict[str, dict[str, float]] = {}
    for label in labels:
        tp = sum(label in g and label in p for g, p in zip(gold, pred))
        fp = sum(label not in g and label in p for g, p in zip(gold, pred))
        fn = sum(label in g and label not in p for g, p in zip(gold, pred))
        prec, rec = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn)
        per[label] = {"precision": prec, "recall": rec, "f1": _safe_div(2 * tp, 2 * tp + fp + fn), "support": tp + fn}
    tp = sum(len(g & p) for g, p in zip(gold, pred))
    fp = sum(len(p - g) for g, p in zip(gold, pred))
    fn = sum(len(g - p) for g, p in zip(gold, pred))
    empty_gold, empty_pred = [not g for g in gold], [not p for p in pred]
    oos_tp = sum(a and b for a, b in zip(empty_gold, empty_pred))
    has_oos = any(empty_gold)
    oos_p, oos_r = _safe_div(oos_tp, sum(empty_pred)), _safe_div(oos_tp, sum(empty_gold))
    n = len(gold)
    return MultiLabelResult(
        n=n,
        micro_f1=_safe_div(2 * tp, 2 * tp + fp + fn),
        macro_f1=float(np.mean([v["f1"] for v in per.values() if v["support"]])) if per else 0.0,
        exact_match=_safe_div(sum(g == p for g, p in zip(gold, pred)), n),
        count_accuracy=_safe_div(sum(len(g) == len(p) for g, p in zip(gold, pred)), n),
        micro_precision=_safe_div(tp, tp + fp),
        micro_recall=_safe_div(tp, tp + fn),
        oos_recall=oos_r if has_oos else None,
        oos_precision=oos_p if has_oos else None,
        oos_f1=_safe_div(2 * oos_p * oos_r, oos_p + oos_r) if has_oos else None,
        per_intent=per,
    )


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


def auroc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Area under the ROC curve: the chance a positive scores above a negative (ties count half).

    Computed from ranks (Mann-Whitney U), exact and O(n log n).
    """
    pos = np.asarray(positive_scores, dtype=np.float64)
    neg = np.asarray(negative_scores, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    scores = np.concatenate([pos, neg])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(scores.size, dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    i = 0
    while i < scores.size:
        j = i
        while j + 1 < scores.size and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def precision_recall_curve(
    positive_scores: np.ndarray, negative_scores: np.ndarray, *, max_points: int = 101
) -> dict[str, list[float]]:
    """Precision and recall of "positive" (here: out of scope) at every cut, thinned to ``max_points``.

    A query counts as positive when its score is at least the cut; the curve runs from high cuts (low recall)
    to low cuts (recall 1).
    """
    pos = np.asarray(positive_scores, dtype=np.float64)
    neg = np.asarray(negative_scores, dtype=np.float64)
    scores = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(is_pos[order])
    fp = np.cumsum(1 - is_pos[order])
    # keep the last index of each run of equal scores: a cut cannot split ties
    last = np.r_[np.diff(scores[order]) != 0, True]
    tp, fp = tp[last], fp[last]
    recall = tp / max(pos.size, 1)
    precision = tp / np.maximum(tp + fp, 1)
    if recall.size > max_points:
        keep = np.unique(np.linspace(0, recall.size - 1, max_points).round().astype(int))
        recall, precision = recall[keep], precision[keep]
    return {"recall": [round(float(r), 4) for r in recall], "precision": [round(float(p), 4) for p in precision]}


def average_precision(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Area under the precision-recall curve of "positive" (higher score = more positive), step-wise (AP)."""
    curve = precision_recall_curve(positive_scores, negative_scores, max_points=10**9)
    recall, precision = np.r_[0.0, curve["recall"]], np.r_[1.0, curve["precision"]]
    return float(np.sum(np.diff(recall) * precision[1:])) if len(positive_scores) else float("nan")


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
    per: dict[str, dict[str, float]] = {}
    for label in sorted(set(gold) | set(pred)):
        tp = sum(g == label and p == label for g, p in zip(gold, pred))
        fp = sum(g != label and p == label for g, p in zip(gold, pred))
        fn = sum(g == label and p != label for g, p in zip(gold, pred))
        per[label] = {
            "precision": _safe_div(tp, tp + fp),
            "recall": _safe_div(tp, tp + fn),
            "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
            "support": tp + fn,
        }
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
        per_intent=per,
    )


def evaluate(
    clf: Classifier,
    data: IntentSet | str | Path,
    *,
    progress: Progress | None = None,
    sweep_points: int = 0,
) -> EvaluationResult | MultiLabelResult:
    """Predict every row of ``data`` (an IntentSet or a labelled file) and score it; OOS rows are expected to come
    back as the OOS label.

    ``sweep_points`` > 0 (and OOS rows present) adds ``sweep``: the trade-off at that many other thresholds.

    Example:
        >>> evaluate(clf, "data/demo_company_test.jsonl").accuracy  # doctest: +SKIP
    """
    if isinstance(data, (str, Path)):
        from fewintent.data.io import read_intent_file

        data = read_intent_file(data, oos_label=clf.oos_label, for_training=False)
    elif not isinstance(data, IntentSet):
        raise FewIntentError(f"evaluate takes an IntentSet or a labelled file's path, got {type(data).__name__}")
    texts = data.texts + data.oos_texts
    if clf.config.multi_label:
        predictions = clf.predict(texts, top_k=1, progress=progress)
        gold_sets = [set(s) for s in data.sets()] + [set()] * len(data.oos_texts)
        ml = score_label_sets(gold_sets, [{x.name for x in p.intents or []} for p in predictions], clf.labels)
        ml.unknown_intents = sorted({g for s in gold_sets for g in s} - set(clf.labels))
        return ml
    gold = data.intents + [clf.oos_label] * len(data.oos_texts)
    predictions = clf.predict(texts, top_k=1, progress=progress)
    pred = [p.intent.name for p in predictions]
    top1 = [p.intent_ranking[0].name for p in predictions]
    result = score_predictions(gold, pred, clf.oos_label, top1=top1)
    result.errors = [
        {"text": p.text, "intent": g, "predicted": p.intent.name, "confidence": p.intent.confidence}
        for g, p in zip(gold, predictions)
        if g != p.intent.name
    ]
    for pair in result.confused_pairs:
        pair["examples"] = [
            e["text"] for e in result.errors if (e["intent"], e["predicted"]) == (pair["gold"], pair["predicted"])
        ][:3]
    if data.oos_texts and data.texts:
        scores = np.array([p.oos_score for p in predictions], dtype=np.float64)
        n_in = len(data.texts)
        # OOS is the positive class, detected by a low score
        result.oos_auroc = auroc(-scores[n_in:], -scores[:n_in])
        result.oos_aupr = average_precision(-scores[n_in:], -scores[:n_in])
        if sweep_points:
            from fewintent.model.calibration import oos_counts, sweep

            current = {**oos_counts(scores[:n_in], scores[n_in:], clf.threshold), "current": True}
            rows = sweep(scores[:n_in], scores[n_in:], sweep_points) + [current]
            result.sweep = sorted(rows, key=lambda r: -r["threshold"])
    known = set(clf.labels)
    result.unknown_intents = sorted({g for g in data.intents if g not in known})
    return result

"""Out-of-scope thresholds calibrated without test data: from the support set, and from OOS examples if given."""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fewintent.errors import FewIntentError, FewIntentWarning
from fewintent.heads.prototypes import class_means, l2_normalize
from fewintent.model.rows import intent_rows

if TYPE_CHECKING:
    from fewintent.data.intentset import IntentSet
    from fewintent.model.config import ClassifierConfig
    from fewintent.model.oos import HeadFitter, OosScorer
    from fewintent.model.protocols import Classifier


def leave_one_out_similarities(
    embeddings: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    fixed: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of each support example to each prototype as if it were a new query (its own class rebuilt without
    it), and the mask of the examples scored.

    Examples of single-example intents have no leave-one-out prototype and are skipped. ``fixed`` rows
    (embeddings, labels: the intents' names) are part of every prototype and never scored themselves; with
    ``rows`` (a mask), only those examples are scored (the others still count in the prototypes).
    """
    counts = np.bincount(labels, minlength=n_classes).astype(embeddings.dtype)
    sums = class_means(embeddings, labels, n_classes) * counts[:, None]
    if fixed is not None:
        np.add.at(sums, fixed[1], fixed[0].astype(sums.dtype))
    keep = counts[labels] >= 2
    if rows is not None:
        keep &= rows
    e, y = embeddings[keep], labels[keep]
    sims = e @ l2_normalize(sums).T  # scores against the full prototypes
    rest = sums[y] - e  # own class without this example
    own = np.sum(rest * e, axis=1) / np.maximum(np.linalg.norm(rest, axis=1) * np.linalg.norm(e, axis=1), 1e-8)
    sims[np.arange(len(y)), y] = own
    return sims, keep


def leave_one_out_scores(
    embeddings: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    fixed: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Top cosine score each support example would get if it were a new query (:func:`leave_one_out_similarities`):
    the spread of these scores estimates how in-scope queries will score at test time."""
    sims, keep = leave_one_out_similarities(embeddings, labels, n_classes, fixed, rows=rows)
    return sims.max(axis=1) if bool(keep.any()) else np.empty(0)


def support_threshold(
    score: type[OosScorer],
    examples: tuple[np.ndarray, np.ndarray, int],
    fit_head: HeadFitter,
    names: tuple[np.ndarray, np.ndarray] | None,
    tuned: np.ndarray | None,
    oos_scores: np.ndarray | None,
    config: ClassifierConfig,
) -> tuple[float, float]:
    """The out-of-scope threshold and confidence temperature a new model gets from its own examples: how the
    examples (embeddings, labels, number of labels) score held out from the model as deployed (names included,
    never scored: a name is no message; after tuning, only the examples the encoder never saw, whose in-sample
    scores sit far higher than a new message's), plus its out-of-scope examples' ``oos_scores`` if any."""
    support, y, n = examples
    unseen = None if tuned is None else ~tuned
    in_scores = score.held_out(support, y, n, fit_head, names, unseen)
    scale = float(config.scale or 0.0)
    if in_scores.size == 0 and not score.cosine:
        raise FewIntentError(
            f"the '{score.name}' out-of-scope score needs at least 2 examples per intent; "
            "add examples or use --oos-score prototype"
        )
    if in_scores.size == 0:
        why = (
            "every intent has a single example"
            if tuned is None or not bool(tuned.any())
            else "no example was held out of tuning beside a second example of its intent"
        )
        warnings.warn(
            f"{why}, so the out-of-scope threshold cannot be calibrated on them; using the default "
            f"{config.fallback_threshold:.2f} (add a second example per intent, or set it with `fewintent "
            "calibrate` / clf.threshold)",
            FewIntentWarning,
            stacklevel=5,
        )
        return float(config.fallback_threshold or 0.0), scale
    threshold = calibrate_threshold(in_scores, oos_scores, in_scope_recall=float(config.in_scope_recall or 0.0))
    # unbounded scores: confidence moves by their spread, as cosines do by 1/scale
    return float(threshold), scale if score.cosine else 2.0 / max(float(np.std(in_scores)), 1e-6)


def calibrate_threshold(
    in_scope_scores: np.ndarray,
    oos_scores: np.ndarray | None = None,
    *,
    in_scope_recall: float,
) -> float:
    """Pick the similarity below which a query is out of scope.

    Without OOS examples: the ``1 - in_scope_recall`` quantile of the leave-one-out in-scope scores, so about
    that share of real in-scope queries is kept. With OOS examples: the cut that best separates the two
    (Youden's J: in-scope kept + OOS rejected), never keeping fewer in-scope queries than half the target.
    """
    if in_scope_scores.size == 0:
        raise ValueError("no in-scope scores to calibrate on (the classifier falls back to its base's threshold)")
    quantile_cut = float(np.quantile(in_scope_scores, 1.0 - in_scope_recall))
    if oos_scores is None or oos_scores.size == 0:
        return quantile_cut
    candidates = np.unique(np.concatenate([in_scope_scores, oos_scores]))
    floor = float(np.quantile(in_scope_scores, 1.0 - in_scope_recall / 2))
    candidates = candidates[candidates <= max(floor, quantile_cut)]
    if candidates.size == 0:
        return quantile_cut
    kept = (in_scope_scores[None, :] >= candidates[:, None]).mean(1)
    rejected = (oos_scores[None, :] < candidates[:, None]).mean(1)
    return float(candidates[np.argmax(kept + rejected)])


def oos_counts(in_scope_scores: np.ndarray, oos_scores: np.ndarray, threshold: float) -> dict[str, float | None]:
    """What a threshold does on labelled scores: in-scope rows kept, OOS recall / precision / F1 (OOS = below)."""
    kept = float(np.mean(in_scope_scores >= threshold)) if in_scope_scores.size else None
    caught = int(np.sum(oos_scores < threshold))
    flagged = caught + int(np.sum(in_scope_scores < threshold))
    recall = caught / oos_scores.size if oos_scores.size else None
    precision = (caught / flagged if flagged else 0.0) if oos_scores.size else None
    f1 = None
    if recall is not None and precision is not None:
        f1 = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
    return {
        "threshold": threshold,
        "in_scope_recall": kept,
        "oos_recall": recall,
        "oos_precision": precision,
        "oos_f1": f1,
    }


def best_f1_threshold(in_scope_scores: np.ndarray, oos_scores: np.ndarray, oos_weight: float = 1.0) -> float:
    """The cut with the best OOS F1 on labelled scores (ties: the one that keeps more in-scope messages).

    ``oos_weight`` counts each OOS row that many times (see ``oos_share`` in :func:`calibrate_classifier`).
    """
    scores = np.unique(np.concatenate([in_scope_scores, oos_scores]))
    # cut just above each score (so that score is rejected), and below the lowest (nothing rejected)
    cuts = np.r_[scores[0] - 1e-6, (scores[:-1] + scores[1:]) / 2, scores[-1] + 1e-6]
    ins = np.sort(in_scope_scores)
    oos = np.sort(oos_scores)
    caught = np.searchsorted(oos, cuts, side="left") * oos_weight  # OOS rows below each cut
    false = np.searchsorted(ins, cuts, side="left")
    precision = np.where(caught + false > 0, caught / np.maximum(caught + false, 1e-12), 0.0)
    recall = caught / max(oos.size * oos_weight, 1e-12)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    best = np.flatnonzero(f1 == f1.max())
    return float(cuts[best[0]])


def recall_threshold(in_scope_scores: np.ndarray, in_scope_recall: float) -> float:
    """The cut that keeps at least ``in_scope_recall`` of these in-scope scores (held-out labelled rows)."""
    return float(np.quantile(in_scope_scores, 1.0 - in_scope_recall, method="lower"))


def sweep(in_scope_scores: np.ndarray, oos_scores: np.ndarray, points: int = 11) -> list[dict[str, float | None]]:
    """The trade-off at evenly spread quantiles of the in-scope scores (in-scope recall from 100% down)."""
    qs = np.linspace(0.0, 0.5, points)
    cuts = sorted({float(np.quantile(in_scope_scores, q)) for q in qs})
    return [oos_counts(in_scope_scores, oos_scores, c) for c in cuts]


def check_threshold(value: Any, *, cosine: bool = True, highest: float | None = None) -> float:
    """An OOS threshold is a finite number, a cosine similarity in [-1, 1] for the cosine scores (NaN would
    silently turn the fallback off), and at most the score's ``highest`` value (above it, every message would be
    out of scope)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FewIntentError(f"the out-of-scope threshold must be a number, got {value!r:.40}")
    value = float(value)
    if not math.isfinite(value):
        raise FewIntentError(f"the out-of-scope threshold must be a finite number, got {value}")
    if cosine and not -1.0 <= value <= 1.0:
        raise FewIntentError(f"the out-of-scope threshold must be a cosine similarity in [-1, 1], got {value}")
    if highest is not None and value > highest:
        raise FewIntentError(
            f"the out-of-scope threshold {value} is above the highest score there can be ({highest}): every message "
            "would be out of scope; the model's score is not a cosine (see its oos_score)"
        )
    return value


OBJECTIVES = ("auto", "f1", "recall")
MIN_IN_SCOPE_ROWS = 10
"""Fewer held-out in-scope rows than this move the threshold by chance (two rows moved the demo's from 0.432 to
0.693 and cost it 42 points of accuracy on its own valid file): ``calibrate`` refuses and keeps the threshold."""
MIN_OOS_ROWS = 3
"""The ``f1`` objective trades in-scope against out-of-scope rows: it needs at least this many of the latter."""


def _check_enough_rows(data: IntentSet, objective: str, oos_label: str) -> None:
    n_in, n_oos = len(data.texts), len(data.oos_texts)
    if n_in < MIN_IN_SCOPE_ROWS:
        raise FewIntentError(
            f"{data.source}: {n_in} in-scope row(s) are too few to calibrate on (at least {MIN_IN_SCOPE_ROWS}, "
            "of the model's own intents, held out from training); the threshold is unchanged"
        )
    if objective in ("f1", "auto") and 0 < n_oos < MIN_OOS_ROWS:  # none at all: f1's own refusal says so
        raise FewIntentError(
            f"{data.source}: the f1 objective needs at least {MIN_OOS_ROWS} rows labelled '{oos_label}' (the file has "
            f"{n_oos}); add more, or use --objective recall to set the threshold from the in-scope rows alone"
        )


@dataclass
class CalibrationReport:
    """What ``fewintent calibrate`` did: the objective, the threshold before and after, and their effect."""

    objective: str
    threshold_before: float
    threshold: float
    n_in_scope: int
    n_oos: int
    before: dict[str, Any]
    after: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate_classifier(
    clf: Classifier,
    data: IntentSet,
    *,
    objective: str = "auto",
    in_scope_recall: float | None = None,
    oos_share: float | None = None,
) -> CalibrationReport:
    """Re-tune ``clf``'s OOS threshold on held-out labelled data, without re-adapting (the head is untouched).

    ``objective``: ``f1`` (the best OOS F1 on the file: needs rows labelled with the OOS label), ``recall``
    (keep ``in_scope_recall`` of the file's in-scope rows; default the model's own target), or ``auto`` (``f1``
    when the file has OOS rows, else ``recall``). The new threshold is set by hand: it survives intent edits.

    F1 depends on how common OOS messages are: ``oos_share`` (e.g. 0.2) reweights the file's OOS rows so they
    make up that share of its messages, for traffic whose mix differs from the file's (None: the file's own mix).
    """
    if objective not in OBJECTIVES:
        raise FewIntentError(f"unknown calibration objective '{objective}': use {', '.join(OBJECTIVES)}")
    multi_label = clf.table.head.multi_label
    if multi_label and (objective not in ("auto", "f1") or in_scope_recall is not None or oos_share is not None):
        raise FewIntentError(
            "a multi-label model is calibrated for micro-F1 on its intents (--objective f1 or auto); "
            "--in-scope-recall, --objective recall and --oos-share are for single-label models"
        )
    known = set(clf.labels)
    unknown = sorted({i for intents in data.sets() for i in intents if i not in known})
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise FewIntentError(
            f"{data.source}: {len(unknown)} intent(s) the model does not know ({shown}); calibrate on the model's "
            f"own intents, with out-of-scope rows labelled '{clf.oos_label}'"
        )
    if multi_label:
        return calibrate_multi_label(clf, data)
    if not data.texts:
        raise FewIntentError(f"{data.source}: no in-scope rows to calibrate on (only '{clf.oos_label}' rows)")
    _check_enough_rows(data, objective, clf.oos_label)
    predictions = clf.predict(data.texts + data.oos_texts, top_k=1)
    scores = np.array([p.oos_score for p in predictions], dtype=np.float64)
    ins, oos = scores[: len(data.texts)], scores[len(data.texts) :]
    if objective == "auto":
        objective = "f1" if oos.size else "recall"
    if objective == "f1":
        if not oos.size:
            raise FewIntentError(f"{data.source}: the f1 objective needs rows labelled '{clf.oos_label}'")
        weight = 1.0
        if oos_share is not None:
            if not 0.0 < oos_share < 1.0:
                raise FewIntentError(f"oos_share must be between 0 and 1 (exclusive), got {oos_share}")
            weight = oos_share / (1.0 - oos_share) * ins.size / oos.size
        threshold = best_f1_threshold(ins, oos, weight)
    else:
        recall = float(clf.config.in_scope_recall or 0.0) if in_scope_recall is None else in_scope_recall
        if not 0.5 <= recall <= 1.0:
            raise FewIntentError(f"in-scope recall must be between 0.5 and 1, got {recall}")
        threshold = recall_threshold(ins, recall)
    if clf.table.scorer.cosine:
        threshold = float(np.clip(threshold, -1.0, 1.0))
    before = clf.threshold
    clf.threshold = threshold
    return CalibrationReport(
        objective,
        before,
        threshold,
        int(ins.size),
        int(oos.size),
        oos_counts(ins, oos, before),
        oos_counts(ins, oos, threshold),
    )


MARGIN_GRID = np.linspace(-4.0, 4.0, 81)
"""Margins (log-odds over every intent's cut) a multi-label calibration picks its threshold from."""


def calibrate_multi_label(clf: Classifier, data: IntentSet) -> CalibrationReport:
    """A multi-label model's threshold (what :func:`calibrate_classifier` does for one, after checking its options
    and intents): the margin over every intent's cut with the best micro-F1 over (message, intent) pairs on held-out
    labelled data (ties: the margin nearest today's). A message where no intent passes is out of scope, so rows with
    no intent count as they are."""
    _check_enough_rows(data, "recall", clf.oos_label)
    table, emb = clf.embed(data.texts + data.oos_texts)
    margins = table.logits(emb, table.similarities(emb))
    truth = np.zeros(margins.shape, dtype=bool)  # the out-of-scope rows, last, carry no intent
    truth[: len(data.texts)] = intent_rows(data, clf.labels)[1]

    def effect(threshold: float) -> dict[str, Any]:
        passed = margins >= threshold
        tp, fp, fn = (passed & truth).sum(), (passed & ~truth).sum(), (~passed & truth).sum()
        none, gold_none = ~np.any(passed, axis=1), ~np.any(truth, axis=1)
        return {
            "threshold": float(threshold),
            "micro_f1": float(2 * tp / max(2 * tp + fp + fn, 1)),
            "exact_match": float((passed == truth).all(axis=1).mean()),
            "oos_recall": float(none[gold_none].mean()) if gold_none.any() else None,
        }

    before = clf.threshold
    best = max(MARGIN_GRID, key=lambda t: (effect(t)["micro_f1"], -abs(t - before)))
    clf.threshold = float(best)
    return CalibrationReport(
        "micro-f1", before, float(best), len(data.texts), len(data.oos_texts), effect(before), effect(best)
    )

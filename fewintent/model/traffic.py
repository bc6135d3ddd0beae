"""Out-of-scope thresholds for real traffic, from its unlabelled logs: how much of it is out of scope, and the cut
that is best for that share.

A threshold set from the support set alone keeps a fixed share of in-scope messages, whatever the traffic; the
best cut moves with how much of the traffic is out of scope. The logs' OOS scores are a mixture of in-scope
messages (which score like the support's held-out examples: known) and out-of-scope ones (unknown): fitting that
mixture gives the share and the out-of-scope score distribution, and the threshold maximises the expected MCC
(or OOS F1) under them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fewintent.data.io import read_messages
from fewintent.errors import FewIntentError
from fewintent.model.calibration import MIN_IN_SCOPE_ROWS, CalibrationReport, leave_one_out_similarities
from fewintent.model.oos import head_fitter

if TYPE_CHECKING:
    from fewintent.model.protocols import Classifier

LOG_OBJECTIVES = ("mcc", "f1")
MIN_LOG_MESSAGES = 200
"""Fewer distinct logged messages than this leave the out-of-scope share to chance: ``calibrate --logs`` refuses.
On ``valid`` (scripts/valid_oos_logs.py, MiniLM, CLINC150 and BANKING77-OOS at 10-50% out of scope) the estimate
strayed by 0.05-0.16 on average from 100 messages, 0.03-0.07 from 200."""
_EM_STEPS = 500
MAX_SHIFT = 0.05
"""How far (in score) the logs' in-scope messages may sit from the support's held-out examples."""
_SHIFT_STEP = 0.0025


@dataclass
class LogCalibrationReport(CalibrationReport):
    """A calibration from unlabelled logs: ``before`` / ``after`` are what the two thresholds are expected to do
    under the mixture (in-scope kept, OOS recall / precision / F1, MCC), not counts on labelled rows."""

    oos_share: float = 0.0
    """The out-of-scope share the threshold was chosen for."""
    share_estimated: bool = True
    """Estimated from the logs (False: stated by the user, ``oos_share=``)."""
    n_logs: int = 0


@dataclass(frozen=True)
class ShareFit:
    """A two-component mixture over the logs' OOS scores: in-scope messages score like the support's held-out
    examples (a fixed kernel density), out-of-scope ones like a free Gaussian below them."""

    share: float
    oos_mean: float
    oos_std: float
    bandwidth: float
    shift: float = 0.0
    """How much higher the logs' in-scope messages score than the support's held-out examples."""


def _bandwidth(x: np.ndarray) -> float:
    """Silverman's rule of thumb (robust spread), floored so identical scores still give a density."""
    iqr = float(np.subtract(*np.quantile(x, [0.75, 0.25])))
    spread = min(float(np.std(x)), iqr / 1.34) if iqr > 0 else float(np.std(x))
    return max(0.9 * spread * len(x) ** -0.2, 1e-3)


def _normal_pdf(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def _normal_cdf(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)((x - mean) / (std * math.sqrt(2.0))))


def fit_oos_share(in_scope_scores: np.ndarray, log_scores: np.ndarray, share: float | None = None) -> ShareFit:
    """EM for the share of ``log_scores`` that is out of scope (``share`` given: only the OOS component is fitted).

    The in-scope component is a kernel density over ``in_scope_scores`` (held-out support scores), moved as a
    whole by a shift fitted on the logs (within :data:`MAX_SHIFT`: real messages score a little higher or lower
    than the support's own examples); the out-of-scope one is a Gaussian whose mean is kept at or below the
    in-scope median (OOS messages are the ones that fit no intent). Scores are binned on a fine grid (well below
    the kernel's width), so the cost does not grow with the logs. Where the mixture explains the logs no better
    than in-scope messages alone (BIC), the estimated share is 0."""
    x = np.asarray(log_scores, dtype=np.float64)
    s = np.asarray(in_scope_scores, dtype=np.float64)
    h = _bandwidth(s)
    step = _SHIFT_STEP / 2
    lo = min(x.min(), s.min()) - MAX_SHIFT - 5 * h
    size = int((max(x.max(), s.max()) + MAX_SHIFT + 5 * h - lo) / step) + 2
    grid = lo + step * np.arange(size)
    bins, counts = np.unique(np.clip(np.rint((x - lo) / step).astype(np.int64), 0, size - 1), return_counts=True)
    x, w = grid[bins], counts.astype(np.float64)
    density = np.zeros(size)
    for start in range(0, s.size, 256):  # (grid, in-scope) in chunks: bounded memory
        density += _normal_pdf(grid[:, None] - s[None, start : start + 256], 0.0, h).sum(1)
    density /= s.size
    offsets = np.arange(-round(MAX_SHIFT / step), round(MAX_SHIFT / step) + 1, 2)  # shifts in grid steps
    f_shifted = density[np.clip(bins[:, None] - offsets[None, :], 0, size - 1)]  # (bins, shifts)
    log_shifted = np.log(f_shifted + 1e-300)
    alone = w @ log_shifted  # log-likelihood of in-scope messages alone, at each shift
    j = int(np.argmax(alone))
    floor_std, n = h, float(w.sum())
    pi = 0.3 if share is None else share
    mean, std = float(np.quantile(x, 0.1)), max(float(np.sqrt(w @ (x - x @ w / n) ** 2 / n)), floor_std)
    for _ in range(_EM_STEPS):
        g = pi * _normal_pdf(x, mean, std)
        mix = g + (1.0 - pi) * f_shifted[:, j]
        r = g / np.maximum(mix, 1e-300)
        total = float(w @ r)
        if total < 1e-9:  # nothing looks out of scope
            break
        new_pi = pi if share is not None else min(max(total / n, 0.0), 1.0)
        j = int(np.argmax((w * (1 - r)) @ log_shifted))  # the shift that best explains what looks in scope
        ceiling = float(np.median(s)) + offsets[j] * step
        new_mean = min(float((w * r) @ x) / total, ceiling)
        new_std = max(math.sqrt(float((w * r) @ (x - new_mean) ** 2) / total), floor_std)
        done = abs(new_pi - pi) < 1e-7 and abs(new_mean - mean) < 1e-7 and abs(new_std - std) < 1e-7
        pi, mean, std = new_pi, new_mean, new_std
        if done:
            break
    mixed = float(w @ np.log(np.maximum(pi * _normal_pdf(x, mean, std) + (1 - pi) * f_shifted[:, j], 1e-300)))
    if share is None and mixed - float(alone.max()) < 1.5 * math.log(n):  # 3 parameters more: not worth them
        return ShareFit(0.0, mean, std, h, float(offsets[int(np.argmax(alone))] * step))
    return ShareFit(pi, mean, std, h, float(offsets[j] * step))


@dataclass(frozen=True)
class HeldOut:
    """The in-scope side of the mixture: how the model's own examples score held out from it, whether each was
    still named right there, and how many intents the model has."""

    scores: np.ndarray
    correct: np.ndarray
    n_labels: int


def expected_counts(held: HeldOut, fit: ShareFit, threshold: float) -> dict[str, float | None]:
    """What a threshold is expected to do on traffic with ``fit.share`` out of scope (the mixture's estimate):
    in-scope kept, OOS recall / precision / F1 and the MCC with OOS as one more class."""
    return _expected(held, fit, np.array([threshold]), row=0)


def _expected(held: HeldOut, fit: ShareFit, cuts: np.ndarray, row: int | None = None) -> Any:
    pi, k = fit.share, max(held.n_labels, 1)
    order = np.argsort(held.scores + fit.shift, kind="stable")
    s = (held.scores + fit.shift)[order]
    below = np.searchsorted(s, cuts, side="left")
    false = below / s.size  # in-scope messages below each cut (answered out of scope)
    right_above = np.r_[np.cumsum(held.correct[order][::-1])[::-1], 0][below] / s.size  # kept and named right
    caught = _normal_cdf(cuts, fit.oos_mean, fit.oos_std)  # OOS messages below each cut
    tp, fn, fp = pi * caught, pi * (1 - caught), (1 - pi) * false
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-300), 0.0)
    f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1e-300), 0.0)
    # the MCC over intents + OOS (``evaluate``'s), intents taken as equally common and errors as spread evenly
    p_oos = tp + fp
    p_in = 1 - p_oos
    correct = pi * caught + (1 - pi) * right_above
    agree = p_oos * pi + p_in * (1 - pi) / k
    denom = np.sqrt(np.maximum((1 - p_oos**2 - p_in**2 / k) * (1 - pi**2 - (1 - pi) ** 2 / k), 0.0))
    mcc = np.where(denom > 0, (correct - agree) / np.maximum(denom, 1e-300), 0.0)
    if row is None:
        return {"mcc": mcc, "f1": f1}
    return {
        "threshold": float(cuts[row]),
        "in_scope_recall": float(1 - false[row]),
        "oos_recall": float(caught[row]) if pi > 0 else None,
        "oos_precision": float(precision[row]) if pi > 0 else None,
        "oos_f1": float(f1[row]) if pi > 0 else None,
        "mcc": float(mcc[row]),
    }


def share_threshold(held: HeldOut, fit: ShareFit, objective: str = "mcc") -> float:
    """The cut with the best expected ``objective`` (``mcc``, intents + OOS, or OOS ``f1``) under the fitted
    mixture; ties keep more in-scope messages. Candidates: every in-scope score and a fine grid over the OOS
    component."""
    s = held.scores + fit.shift
    grid = fit.oos_mean + fit.oos_std * np.linspace(-3.0, 4.0, 281)
    cuts = np.unique(np.concatenate([s, grid, [float(s.min()) - 1e-6]]))
    value = _expected(held, fit, cuts)[objective]
    return float(cuts[np.flatnonzero(value >= value.max() - 1e-12)[0]])


def support_held_out(clf: Classifier) -> HeldOut:
    """How the model's own examples score held out from it, as its support-only threshold was set (names in every
    fitted set, never scored; after ``--tune`` only the examples the encoder never saw), and whether the nearest
    prototype without them still names them right (taken as right where the score's rows differ)."""
    table = clf.table
    names = (
        None if table.name_support is None or table.name_labels is None else (table.name_support, table.name_labels)
    )
    n = len(table.labels)
    unseen = None if table.tuned is None else ~table.tuned
    support, y = table.support, table.support_labels
    # the settings the deployed head was fitted with
    fit_head = head_fitter(type(table.head), table.head.params)
    scores = type(table.scorer).held_out(support, y, n, fit_head, names, unseen).astype(np.float64)
    sims, keep = leave_one_out_similarities(support, y, n, names, rows=unseen)
    correct = np.ones(scores.size, dtype=bool)
    if int(keep.sum()) == scores.size and scores.size:
        correct = sims.argmax(axis=1) == y[keep]
    return HeldOut(scores, correct, n)


def check_logs(logs: Sequence[str], source: str = "logs") -> list[str]:
    """The non-blank messages of ``logs``; one line refusing logs too small or too alike to estimate a share from
    (fewer than :data:`MIN_LOG_MESSAGES` messages, or distinct ones)."""
    texts = [t for t in logs if isinstance(t, str) and t.strip()]
    distinct = len({" ".join(t.split()).casefold() for t in texts})
    if len(texts) < MIN_LOG_MESSAGES:
        raise FewIntentError(
            f"{source}: {len(texts)} message(s) are too few to estimate the out-of-scope share from (at least "
            f"{MIN_LOG_MESSAGES}); the threshold is unchanged"
        )
    if distinct < MIN_LOG_MESSAGES:
        raise FewIntentError(
            f"{source}: its {len(texts)} messages are too alike to estimate the out-of-scope share from (only "
            f"{distinct} distinct, at least {MIN_LOG_MESSAGES}); the threshold is unchanged"
        )
    return texts


def calibrate_on_logs(
    clf: Classifier,
    logs: Sequence[str] | str | Path | None,
    *,
    objective: str = "mcc",
    oos_share: float | None = None,
    labelled: object = None,
) -> LogCalibrationReport:
    """Re-tune ``clf``'s OOS threshold for its real traffic, from unlabelled ``logs`` (messages, or a file of one a
    line): estimate the share that is out of scope (or take ``oos_share``) and pick the threshold with the best
    expected ``objective`` (``mcc``: intents + OOS, as ``evaluate`` counts it; or OOS ``f1``) under it. The share
    and the threshold are recorded in ``clf.meta["calibration"]`` (saved in config.json and the model card).

    Example:
        >>> clf.calibrate(logs="messages.txt").oos_share  # doctest: +SKIP
    """
    if logs is None:
        raise FewIntentError("calibrate on a labelled file or on unlabelled logs (logs=..., --logs FILE)")
    if labelled is not None:
        raise FewIntentError("calibrate on a labelled file or on unlabelled logs, not both")
    if clf.table.head.multi_label:
        raise FewIntentError(
            "calibrate --logs sets a single-label model's out-of-scope threshold; a multi-label model says out of "
            "scope when no intent passes its own threshold (calibrate it on a labelled file)"
        )
    objective = "mcc" if objective == "auto" else objective
    if objective not in LOG_OBJECTIVES:
        raise FewIntentError(f"unknown objective '{objective}' for logs: use {', '.join(LOG_OBJECTIVES)}")
    if oos_share is not None and not (isinstance(oos_share, (int, float)) and 0.0 < oos_share < 1.0):
        raise FewIntentError(f"oos_share must be between 0 and 1 (exclusive), got {oos_share!r:.20}")
    source = "logs"
    if isinstance(logs, (str, Path)):
        source, logs = str(logs), read_messages(logs)
    texts = check_logs(logs, source)
    scores = np.array([p.oos_score for p in clf.predict(texts, top_k=1)], dtype=np.float64)
    return calibrate_on_log_scores(clf, scores, source=source, objective=objective, oos_share=oos_share)


def calibrate_on_log_scores(
    clf: Classifier,
    scores: np.ndarray,
    *,
    source: str = "logs",
    objective: str = "mcc",
    oos_share: float | None = None,
) -> LogCalibrationReport:
    """:func:`calibrate_on_logs` from the logs' OOS scores (``Prediction.oos_score``; the benchmark's cached
    embeddings give them without encoding again)."""
    held = support_held_out(clf)
    if held.scores.size < MIN_IN_SCOPE_ROWS:
        raise FewIntentError(
            f"the model has {held.scores.size} held-out example score(s), too few to know how in-scope messages score "
            f"(at least {MIN_IN_SCOPE_ROWS}: add examples, two or more per intent); calibrate on a labelled file"
        )
    if float(np.ptp(scores)) < 1e-6:
        raise FewIntentError(f"{source}: every message scores the same; they are too alike to estimate from")
    fit = fit_oos_share(held.scores, scores, oos_share)
    # no sign of out-of-scope messages: the best expected MCC would turn the fallback off; keep the threshold
    threshold = share_threshold(held, fit, objective) if fit.share > 0 else clf.threshold
    if clf.table.scorer.cosine:
        threshold = float(np.clip(threshold, -1.0, 1.0))
    before = clf.threshold
    clf.threshold = threshold
    clf.meta["calibration"] = {
        "from": "logs",
        "messages": int(scores.size),
        "oos_share": round(fit.share, 4),
        "share_estimated": oos_share is None,
        "objective": objective,
        "threshold": threshold,
    }
    return LogCalibrationReport(
        objective,
        before,
        threshold,
        int(held.scores.size),
        0,
        expected_counts(held, fit, before),
        expected_counts(held, fit, threshold),
        oos_share=fit.share,
        share_estimated=oos_share is None,
        n_logs=int(scores.size),
    )

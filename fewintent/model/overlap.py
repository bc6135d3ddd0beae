"""Which intents a model will confuse, before any traffic: overlapping intents, near-duplicate examples filed
under different intents, and intents likely to underperform. Each finding is a line a person can act on."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fewintent.data.intentset import IntentSet, shorten
from fewintent.errors import FewIntentError

NEAR_DUPLICATE = 0.95
"""Cosine above which two examples say the same thing."""
TOO_UNIFORM = 0.85
"""Mean cosine between an intent's own examples above which they barely vary (the intent will be brittle)."""
FEW_EXAMPLES = 3
MAX_EXAMPLES = 10_000
"""Above this many examples the pairwise comparison is skipped (its memory grows with the square)."""


@dataclass
class OverlapReport:
    confusable: list[dict[str, Any]] = field(default_factory=list)
    """Intent pairs whose examples sit closer to the other intent: ``{a, b, share, examples: [[text_a, text_b]]}``."""
    near_duplicates: list[dict[str, Any]] = field(default_factory=list)
    """Example pairs under different intents with cosine >= NEAR_DUPLICATE."""
    weak: list[dict[str, Any]] = field(default_factory=list)
    """Intents likely to underperform: too few examples, or examples that barely vary."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """One actionable sentence per finding."""
        out = []
        for c in self.confusable:
            a, b = (shorten(t, 60) for t in c["examples"][0])
            out.append(
                f"'{c['a']}' and '{c['b']}' overlap: {100 * c['share']:.0f}% of their examples are nearest to the "
                f"other intent (e.g. '{a}' ~ '{b}'); merge them or add examples that tell them apart"
            )
        for d in self.near_duplicates:
            out.append(
                f"near-duplicate examples under different intents ({d['similarity']:.2f}): "
                f"'{shorten(d['text_a'], 60)}' ({d['intent_a']}) ~ '{shorten(d['text_b'], 60)}' ({d['intent_b']}); "
                "keep one, under the right intent"
            )
        for w in self.weak:
            out.append(f"'{w['intent']}' may underperform: {w['reason']}")
        return out


def find_overlaps(emb: np.ndarray, data: IntentSet, *, top: int = 10) -> OverlapReport:
    """Findings from the embeddings ``emb`` of ``data.texts`` (L2-normalised, the model's own encoder)."""
    if len(data.texts) > MAX_EXAMPLES:
        raise FewIntentError(
            f"{data.source}: {len(data.texts)} examples is more than the {MAX_EXAMPLES} the overlap check compares "
            "pairwise; use --no-overlap"
        )
    labels = data.labels
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[i] for i in data.intents], dtype=np.int64)
    emb = np.asarray(emb, dtype=np.float32)
    sims = emb @ emb.T
    np.fill_diagonal(sims, -2.0)
    nearest = sims.argmax(axis=1)
    report = OverlapReport()
    # confusable pairs: share of each pair's examples whose nearest neighbour is in the other intent
    counts = np.bincount(y, minlength=len(labels)).astype(np.float64)
    cross = np.zeros((len(labels), len(labels)))
    np.add.at(cross, (y, y[nearest]), 1.0)
    np.fill_diagonal(cross, 0.0)
    pair_share = (cross + cross.T) / np.maximum(counts[:, None] + counts[None, :], 1)
    pairs = [
        (float(pair_share[a, b]), a, b)
        for a in range(len(labels))
        for b in range(a + 1, len(labels))
        if pair_share[a, b] >= 0.2
    ]
    for share, a, b in sorted(pairs, reverse=True)[:top]:
        idx = [i for i in range(len(y)) if int(y[i]) == a and int(y[nearest[i]]) == b]
        idx += [i for i in range(len(y)) if int(y[i]) == b and int(y[nearest[i]]) == a]
        examples = [[data.texts[i], data.texts[int(nearest[i])]] for i in idx[:3]]
        report.confusable.append({"a": labels[a], "b": labels[b], "share": round(share, 3), "examples": examples})
    # near-duplicates across intents
    different = y[:, None] != y[None, :]
    close = np.argwhere(np.triu((sims >= NEAR_DUPLICATE) & different, k=1))
    for i, j in close[:top].tolist():
        report.near_duplicates.append(
            {
                "text_a": data.texts[i],
                "intent_a": data.intents[i],
                "text_b": data.texts[j],
                "intent_b": data.intents[j],
                "similarity": round(float(sims[i, j]), 3),
            }
        )
    # weak intents
    for label, k in enumerate(counts.astype(int).tolist()):
        if k < FEW_EXAMPLES:
            report.weak.append({"intent": labels[label], "reason": f"only {k} example(s); add 5-10 varied ones"})
            continue
        own = np.flatnonzero(y == label)
        block = sims[np.ix_(own, own)]
        mean = float((block.sum() + 2.0 * len(own)) / (len(own) * (len(own) - 1)))  # undo the -2 diagonal
        if mean >= TOO_UNIFORM:
            report.weak.append(
                {
                    "intent": labels[label],
                    "reason": f"its examples barely vary (mean similarity {mean:.2f}); add differently worded ones",
                }
            )
    return report

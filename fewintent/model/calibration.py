"""Out-of-scope thresholds calibrated without test data: from the support set, and from OOS examples if given."""

from __future__ import annotations

import numpy as np
import torch

from fewintent.heads.proto import class_means

DEFAULT_IN_SCOPE_RECALL = 0.95
FALLBACK_THRESHOLD = 0.30
"""OOS threshold when the support set cannot calibrate one (every intent has a single example): the 5% quantile
of the best cosine of ``valid`` queries to 1-shot prototypes, frozen all-MiniLM-L6-v2, averaged over BANKING77 /
CLINC150 / HWU64 (0.47 / 0.29 / 0.22; 0.33 on average, rounded down so in-scope messages are kept)."""


def leave_one_out_scores(embeddings: torch.Tensor, labels: torch.Tensor, n_classes: int) -> np.ndarray:
    """Top cosine score each support example would get if it were a new query (its own class rebuilt without it).

    Examples of single-example intents have no leave-one-out prototype and are skipped. The spread of these
    scores estimates how in-scope queries will score at test time.
    """
    counts = torch.bincount(labels, minlength=n_classes).to(embeddings.dtype)
    sums = class_means(embeddings, labels, n_classes) * counts.unsqueeze(-1)
    keep = counts[labels] >= 2
    if not bool(keep.any()):
        return np.empty(0)
    e, y = embeddings[keep], labels[keep]
    protos = torch.nn.functional.normalize(sums, dim=-1)
    sims = e @ protos.T  # scores against the full prototypes
    own = torch.nn.functional.cosine_similarity(sums[y] - e, e, dim=-1)  # own class without this example
    sims[torch.arange(len(y)), y] = own
    return sims.max(dim=1).values.numpy()


def calibrate_threshold(
    in_scope_scores: np.ndarray,
    oos_scores: np.ndarray | None = None,
    *,
    in_scope_recall: float = DEFAULT_IN_SCOPE_RECALL,
) -> float:
    """Pick the similarity below which a query is out of scope.

    Without OOS examples: the ``1 - in_scope_recall`` quantile of the leave-one-out in-scope scores, so about
    that share of real in-scope queries is kept. With OOS examples: the cut that best separates the two
    (Youden's J: in-scope kept + OOS rejected), never keeping fewer in-scope queries than half the target.
    """
    if in_scope_scores.size == 0:
        return FALLBACK_THRESHOLD  # every intent has one example: nothing to calibrate on
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

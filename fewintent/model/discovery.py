"""Improve a bot from its traffic: group out-of-scope messages into candidate new intents, and pick the
in-scope messages most worth labelling next.

Clustering is scikit-learn's HDBSCAN on a PCA projection of the embeddings (tree-based neighbour search: memory
grows with the number of messages, not its square); name hints are each cluster's most characteristic words
(class-based TF-IDF). Nothing here changes the model: a person reviews the output and feeds it back with
``fewintent adapt`` or ``POST /intents``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fewintent.errors import FewIntentError
from fewintent.heads.prototypes import l2_normalize

if TYPE_CHECKING:
    from fewintent.model.protocols import Classifier, Progress

PCA_DIMS = 32
"""Dimensions the embeddings are projected to before clustering (density estimates degrade in 384 dims)."""
LOOK_MARGIN = 0.7
"""An in-scope answer is worth a human look when its best intent leads the runner-up by less than this (in
confidence): a 0.95 answer with a 0.02 runner-up is not, however few messages there are to pick from."""


@dataclass
class Cluster:
    """A candidate new intent: messages the model sends out of scope that look alike."""

    id: int
    size: int
    name_hint: str
    examples: list[str]
    """The messages closest to the cluster's centre."""
    texts: list[str]
    """Every distinct message assigned to the cluster (``size`` counts its repeats too)."""


@dataclass
class LabelCandidate:
    """An in-scope message the model is unsure about (its two best intents are close), with its guess: label it to
    improve the model most."""

    text: str
    intent: str
    confidence: float


@dataclass
class DiscoveryResult:
    clusters: list[Cluster]
    to_label: list[LabelCandidate]
    n_messages: int = 0
    n_out_of_scope: int = 0
    """Messages answered out of scope (clustered with those under ``min_confidence``)."""
    unclustered: list[str] = field(default_factory=list)
    """Out-of-scope messages that fell in no cluster (noise, or intents with too few messages yet)."""

    def to_dict(self) -> dict[str, Any]:
        """The ``discover --json`` object: ``clusters`` and ``to_label``."""
        return {
            "clusters": [asdict(c) for c in self.clusters],
            "to_label": [asdict(c) for c in self.to_label],
        }

    def to_jsonl_rows(self) -> list[dict[str, Any]]:
        """Rows a person edits and feeds back to ``fewintent adapt``: each cluster's messages under a draft intent
        name (rename, merge or delete them), then the messages to label with ``"intent": null`` and the model's
        ``guess`` beside it: a reader skips a row without an intent, so a file appended unedited never trains on
        guesses."""
        rows: list[dict[str, Any]] = []
        for c in self.clusters:
            rows += [{"text": t, "intent": f"new_{c.id}_{c.name_hint}", "cluster": c.id} for t in c.texts]
        rows += [
            {"text": c.text, "intent": None, "guess": c.intent, "confidence": c.confidence, "to_label": True}
            for c in self.to_label
        ]
        return rows


def discover(
    clf: Classifier,
    texts: Sequence[str],
    *,
    min_cluster_size: int = 5,
    n_examples: int = 3,
    n_to_label: int = 20,
    min_confidence: float = 0.0,
    seed: int = 0,
    progress: Progress | None = None,
) -> DiscoveryResult:
    """Cluster the messages ``clf`` answers out of scope; rank the in-scope ones worth labelling (at most
    ``n_to_label``, only answers whose two best intents are within :data:`LOOK_MARGIN`, most uncertain first).

    ``min_confidence``: in-scope answers less confident than this are clustered too (a new intent close to
    existing ones is often answered in scope with a low confidence rather than sent out of scope).

    Example:
        >>> result = discover(clf, open("chat_logs.txt").read().splitlines())  # doctest: +SKIP
        >>> [(c.name_hint, c.size) for c in result.clusters]  # doctest: +SKIP
    """
    if min_cluster_size < 2:
        raise FewIntentError("min_cluster_size must be at least 2")
    texts = list(texts)
    if not texts:
        raise FewIntentError("no messages to discover intents in")
    # A message sent many times is one point with that weight: copies at distance zero break the density estimate
    # (50 copies gave no cluster, 30 among others split in two) and would crowd the list of messages to label.
    first = _first_of_each(texts)
    keep = np.flatnonzero(first == np.arange(len(texts)))
    weight = np.bincount(first, minlength=len(texts))[keep]
    texts = [texts[i] for i in keep]
    table, emb = clf.embed(texts, progress=progress)
    if progress is not None and len(first) > len(texts):
        progress(len(first) - len(texts))  # the repeats: encoded once
    predictions = clf.decide(texts, table, emb, top_k=2)
    unsure = [p.is_oos or p.intent.confidence < min_confidence for p in predictions]
    oos = [i for i, u in enumerate(unsure) if u]
    clusters, noise = _clusters(emb[oos], [texts[i] for i in oos], weight[oos], min_cluster_size, n_examples, seed)
    worth_a_look = [i for i, u in enumerate(unsure) if not u and margin(predictions[i]) < LOOK_MARGIN]
    to_label = rank_to_label(emb, predictions, worth_a_look, n_to_label)
    to_label.sort(key=lambda c: c.confidence)  # the spread picked them; a person reads the most uncertain first
    n_oos = int(sum(w for p, w in zip(predictions, weight) if p.is_oos))
    return DiscoveryResult(clusters, to_label, len(first), n_oos, noise)


def _first_of_each(texts: Sequence[str]) -> np.ndarray:
    """For each message, the index of its first occurrence (the same words, ignoring case and spacing)."""
    seen: dict[str, int] = {}
    return np.array([seen.setdefault(" ".join(t.casefold().split()), i) for i, t in enumerate(texts)], dtype=np.int64)


def _clusters(
    emb: np.ndarray, texts: list[str], weight: np.ndarray, min_size: int, n_examples: int, seed: int
) -> tuple[list[Cluster], list[str]]:
    """HDBSCAN over distinct messages; a message repeated at least ``min_size`` times that falls in no cluster is a
    cluster of its own. Sizes count repeats."""
    labels = np.full(len(texts), -1, dtype=np.int64)
    if len(texts) >= 2 * min_size:
        from sklearn.cluster import HDBSCAN
        from sklearn.decomposition import PCA

        x = emb.astype(np.float64)
        if x.shape[1] > PCA_DIMS and len(x) > PCA_DIMS:
            x = PCA(PCA_DIMS, random_state=seed).fit_transform(x)
        labels = HDBSCAN(min_cluster_size=min_size, min_samples=min(min_size, 5), copy=True).fit_predict(x)
    heavy = np.flatnonzero((labels < 0) & (weight >= min_size))
    labels[heavy] = labels.max(initial=-1) + 1 + np.arange(len(heavy))
    found = sorted({int(label) for label in labels if label >= 0})
    members = {c: np.flatnonzero(labels == c) for c in found}
    hints = _name_hints([[texts[i] for i in members[c]] for c in found])
    clusters = []
    normed = l2_normalize(emb)
    for c, hint in zip(found, hints):
        idx = members[c]
        centre = l2_normalize((normed[idx] * weight[idx, None]).sum(0))
        closest = idx[np.argsort(-(normed[idx] @ centre))[:n_examples]]
        size = int(weight[idx].sum())
        clusters.append(Cluster(0, size, hint, [texts[i] for i in closest], [texts[i] for i in idx]))
    clusters.sort(key=lambda c: -c.size)
    for i, cluster in enumerate(clusters):
        cluster.id = i
    noise = [texts[i] for i in np.flatnonzero(labels < 0)]
    return clusters, noise


def _name_hints(docs: list[list[str]], words: int = 3) -> list[str]:
    """Each cluster's most characteristic words: TF-IDF of the cluster's text against the other clusters'."""
    if not docs:
        return []
    from sklearn.feature_extraction.text import TfidfVectorizer

    joined = [" ".join(d) for d in docs]
    try:
        tfidf = TfidfVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_]{2,}\b", sublinear_tf=True)
        matrix = tfidf.fit_transform(joined)
    except ValueError:  # only stop words or digits: no vocabulary
        return ["cluster"] * len(docs)
    vocab = np.asarray(tfidf.get_feature_names_out())
    hints = []
    for row in range(matrix.shape[0]):
        scores = matrix.getrow(row).toarray().ravel()
        top = [vocab[i] for i in np.argsort(-scores)[:words] if scores[i] > 0]
        hints.append(re.sub(r"\W+", "_", "_".join(top)) or "cluster")
    return hints


def margin(prediction: Any) -> float:
    """How far the best intent leads the runner-up, in confidence (1 with a single intent)."""
    ranking = prediction.intent_ranking
    return float(ranking[0].confidence - (ranking[1].confidence if len(ranking) > 1 else 0.0))


def rank_to_label(emb: np.ndarray, predictions: list[Any], candidates: list[int], n: int) -> list[LabelCandidate]:
    """The least certain in-scope messages (smallest margin between the two best intents), spread out: from the
    most uncertain quarter, greedily the one farthest from those already picked (cosine)."""
    if not candidates or n <= 0:
        return []
    pool = sorted(candidates, key=lambda i: margin(predictions[i]))[: max(4 * n, n)]
    vectors = l2_normalize(emb[pool])
    chosen = [0]
    nearest = vectors @ vectors[0]
    while len(chosen) < min(n, len(pool)):
        # farthest from every chosen one; ties go to the more uncertain (earlier in the pool)
        nxt = int(np.argmin(nearest))
        if nxt in chosen:
            break
        chosen.append(nxt)
        nearest = np.maximum(nearest, vectors @ vectors[nxt])
    out = []
    for k in chosen:
        p = predictions[pool[k]]
        out.append(LabelCandidate(p.text, p.intent_ranking[0].name, round(p.intent_ranking[0].confidence, 4)))
    return out

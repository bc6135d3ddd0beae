"""Deterministic N-way K-shot episodes on held-out domains, built once and handed to every method unchanged.

The benchmark builds its own episodes (rather than using the meta-training sampler) so that its episodes
depend only on the data, the seed and the episode spec: the same list for every method, every run, and
every version of the meta-training code. Support examples come from the held-out domains' ``train`` split
(what a user would write), queries from their ``test`` split: the held-out-domain adapters never saw these
domains in any split, and ``test`` is the one split that no threshold, early stopping or hyper-parameter
anywhere reads (meta-training validates on ``valid``), so the queries stay untouched whatever a training run
does; support and queries never share a text.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass

from fewintent.bench.data import Row
from fewintent.data.intentset import DEFAULT_OOS_LABEL, IntentSet
from fewintent.errors import FewIntentError

ALL_WAYS = "all"


@dataclass(frozen=True)
class BenchEpisode:
    """One benchmark task: a domain, its intents, support and query rows (as texts and gold intents).

    Not the meta-training :class:`fewintent.data.episodes.Episode` (integer labels, drawn by ``EpisodeSampler`` from
    the training splits): this one is fixed by the data and the seed alone and scores a whole classifier."""

    domain: str
    labels: tuple[str, ...]
    support: tuple[tuple[str, str], ...]
    query: tuple[tuple[str, str], ...]

    def support_set(self) -> IntentSet:
        return IntentSet.from_pairs(self.support, source=f"episode[{self.domain}]")

    @property
    def query_texts(self) -> list[str]:
        return [t for t, _ in self.query]

    @property
    def query_intents(self) -> list[str]:
        return [i for _, i in self.query]


@dataclass(frozen=True)
class EpisodeSpec:
    ways: int | str  # an integer, or "all" = every intent of the domain
    shots: int
    queries: int = 15  # per intent, fewer when the test split has fewer

    @property
    def label(self) -> str:
        return f"{self.ways}-way {self.shots}-shot"


def _by_domain_intent(rows: Sequence[Row], domains: Sequence[str]) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {d: {} for d in domains}
    for r in rows:
        if r.domain in out and r.intent != DEFAULT_OOS_LABEL:
            out[r.domain].setdefault(r.intent, []).append(r.text)
    for d in out:  # sorted, de-duplicated texts: the episodes do not depend on file order
        out[d] = {i: sorted(set(t)) for i, t in sorted(out[d].items())}
    return out


def build_episodes(
    support_rows: Sequence[Row],
    query_rows: Sequence[Row],
    domains: Sequence[str],
    spec: EpisodeSpec,
    n_episodes: int,
    seed: int,
) -> list[BenchEpisode]:
    """``n_episodes`` episodes over ``domains`` (taken in turn, so each gets its share), seeded and stable.

    A domain with fewer intents than ``spec.ways`` is skipped (e.g. HWU64 ``alarm`` has 3 intents: it
    appears only in the all-intents episodes). Support and query texts of an intent never overlap.
    """
    sup = _by_domain_intent(support_rows, domains)
    qry = _by_domain_intent(query_rows, domains)
    eligible = []
    for d in domains:
        intents = [i for i in sup[d] if len(sup[d][i]) >= spec.shots and qry[d].get(i)]
        ways = len(intents) if spec.ways == ALL_WAYS else int(spec.ways)
        if len(intents) >= max(ways, 2):
            eligible.append((d, intents, ways))
    if not eligible:
        raise FewIntentError(f"no held-out domain among {', '.join(domains)} has enough intents for {spec.label}")
    rng = random.Random(f"episodes/{','.join(domains)}/{spec.ways}/{spec.shots}/{spec.queries}/{seed}")
    episodes = []
    for e in range(n_episodes):
        domain, intents, ways = eligible[e % len(eligible)]
        labels = tuple(sorted(rng.sample(intents, ways)))
        support: list[tuple[str, str]] = []
        query: list[tuple[str, str]] = []
        for label in labels:
            shots = rng.sample(sup[domain][label], spec.shots)
            taken = set(shots)
            pool = [t for t in qry[domain][label] if t not in taken]
            support += [(t, label) for t in shots]
            query += [(t, label) for t in rng.sample(pool, min(spec.queries, len(pool)))]
        episodes.append(BenchEpisode(domain, labels, tuple(support), tuple(query)))
    return episodes


def episodes_fingerprint(episodes: Sequence[BenchEpisode]) -> str:
    """sha256 over every episode's intents, support and query rows: equal fingerprints, identical episodes."""
    h = hashlib.sha256()
    for ep in episodes:
        h.update(json.dumps([ep.domain, ep.labels, ep.support, ep.query]).encode())
    return h.hexdigest()

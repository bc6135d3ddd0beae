"""N-way K-shot Q-query episodes that look like a chatbot's task: a dataset, then a domain, then intents.

Episode ``i`` is a pure function of ``(seed, rank, i)``, so a run is reproducible, a resumed run sees the same
episodes as an uninterrupted one, and each data-parallel rank draws its own.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from fewintent.data.corpus import Corpus
from fewintent.data.intentset import name_example
from fewintent.errors import FewIntentError

IntRange = int | tuple[int, int] | Sequence[int]


class DatasetWeighting(str, Enum):
    """How often each dataset is picked for an episode."""

    UNIFORM = "uniform"
    """Every dataset equally often."""
    SQRT = "sqrt"
    """In proportion to the square root of its number of intents (big datasets more often, not overwhelmingly)."""
    INTENTS = "intents"
    """In proportion to its number of intents."""


@dataclass
class Episode:
    """One few-shot task: support and query texts with labels ``0..ways-1`` into ``intents``."""

    support: list[str]
    support_labels: list[int]
    query: list[str]
    query_labels: list[int]
    intents: list[str]
    dataset: str
    domain: str | None
    """The domain the intents were drawn from; None when drawn from the whole dataset."""

    @property
    def ways(self) -> int:
        return len(self.intents)

    @property
    def shots(self) -> int:
        return min(self.support_labels.count(i) for i in range(self.ways))


def _as_range(value: IntRange, what: str) -> tuple[int, int]:
    lo, hi = (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))
    if lo < 1 or hi < lo:
        raise FewIntentError(f"{what} must be a positive number or a range lo..hi with lo <= hi, got {value}")
    return lo, hi


class EpisodeSampler:
    """Draws episodes: dataset (weighted) -> a domain (with probability ``domain_prob``) or the whole dataset ->
    ``ways`` intents -> ``shots`` support and ``queries`` query examples per intent.

    ``ways`` and ``shots`` are a number or an inclusive range ``(lo, hi)`` drawn per episode. A scope with fewer
    eligible intents than the drawn ``ways`` gives a narrower episode (never fewer than ``min_ways``); an intent
    is eligible when it has at least ``shots + 1`` examples, and gives ``min(queries, n - shots)`` queries.
    ``intent_names`` adds each intent's name as one more support example (what ``adapt`` does by default).

    Example:
        >>> sampler = EpisodeSampler(corpora, ways=5, shots=5, queries=5, seed=0)  # doctest: +SKIP
        >>> ep = sampler.episode(0)  # doctest: +SKIP
        >>> ep.ways, ep.shots  # doctest: +SKIP
        (5, 5)
    """

    def __init__(
        self,
        corpora: Mapping[str, Corpus],
        *,
        ways: IntRange = 5,
        shots: IntRange = 5,
        queries: int = 5,
        domain_prob: float = 0.5,
        weighting: DatasetWeighting | str = DatasetWeighting.SQRT,
        exclude_domains: Sequence[tuple[str, str]] = (),
        min_ways: int = 2,
        seed: int = 0,
        intent_names: bool = False,
    ) -> None:
        self.ways = _as_range(ways, "ways")
        self.shots = _as_range(shots, "shots")
        if queries < 1:
            raise FewIntentError(f"queries must be at least 1, got {queries}")
        if not 0.0 <= domain_prob <= 1.0:
            raise FewIntentError(f"domain_prob must be in [0, 1], got {domain_prob}")
        self.queries = queries
        self.domain_prob = domain_prob
        self.weighting = DatasetWeighting(weighting)
        self.min_ways = max(2, min_ways)
        self.seed = seed
        self.intent_names = intent_names
        held_out: dict[str, set[str]] = {}
        for ds, dom in exclude_domains:
            held_out.setdefault(ds, set()).add(dom)
        self.corpora = {name: c.without_domains(held_out.get(name, set())) for name, c in sorted(corpora.items())}
        # Sorted views, so draws depend only on the data and the seed, never on file or dict order.
        self._intents = {n: sorted(c.by_intent) for n, c in self.corpora.items()}
        self._domains = {n: c.domains() for n, c in self.corpora.items()}
        if not any(self._eligible(n, self._intents[n], self.shots[0]) for n in self.corpora):
            raise FewIntentError(
                f"no dataset has {self.min_ways} intents with {self.shots[0] + 1}+ examples: lower --shots or add data"
            )

    def _eligible(self, name: str, intents: Sequence[str], shots: int) -> list[str]:
        by_intent = self.corpora[name].by_intent
        ok = [i for i in intents if len(by_intent[i]) > shots]
        return ok if len(ok) >= self.min_ways else []

    def _weight(self, name: str) -> float:
        n = len(self._intents[name])
        if self.weighting is DatasetWeighting.UNIFORM:
            return 1.0
        return math.sqrt(n) if self.weighting is DatasetWeighting.SQRT else float(n)

    def episode(self, index: int, rank: int = 0) -> Episode:
        """Episode number ``index`` of this sampler's stream for data-parallel ``rank``; always the same one."""
        rng = random.Random(f"fewintent-episode:{self.seed}:{rank}:{index}")
        ways = rng.randint(*self.ways)
        shots = rng.randint(*self.shots)
        names = [n for n in self.corpora if self._eligible(n, self._intents[n], shots)]
        if not names:  # this many shots is too many everywhere; fall back to the smallest
            shots = self.shots[0]
            names = [n for n in self.corpora if self._eligible(n, self._intents[n], shots)]
        name = rng.choices(names, weights=[self._weight(n) for n in names])[0]
        domain: str | None = None
        pool = self._eligible(name, self._intents[name], shots)
        domains = self._domains[name]
        if len(domains) > 1 and rng.random() < self.domain_prob:
            usable = [d for d, intents in domains.items() if self._eligible(name, intents, shots)]
            if usable:
                domain = rng.choice(usable)
                pool = self._eligible(name, domains[domain], shots)
        elif len(domains) == 1:
            domain = next(iter(domains))
        intents = rng.sample(pool, min(ways, len(pool)))
        support: list[str] = []
        support_labels: list[int] = []
        query: list[str] = []
        query_labels: list[int] = []
        by_intent = self.corpora[name].by_intent
        for label, intent in enumerate(intents):
            texts = by_intent[intent]
            n_query = min(self.queries, len(texts) - shots)
            picked = rng.sample(texts, shots + n_query)
            support += picked[:shots]
            support_labels += [label] * shots
            name_text = name_example(intent) if self.intent_names else None
            if name_text is not None:  # the intent's name as one more support example, as deployment does
                support.append(name_text)
                support_labels.append(label)
            query += picked[shots:]
            query_labels += [label] * n_query
        return Episode(support, support_labels, query, query_labels, intents, name, domain)

    def __iter__(self) -> Iterator[Episode]:
        index = 0
        while True:
            yield self.episode(index)
            index += 1

    def fixed(self, n: int) -> list[Episode]:
        """The first ``n`` episodes: a fixed validation set, identical at every evaluation and across resumes."""
        return [self.episode(i) for i in range(n)]

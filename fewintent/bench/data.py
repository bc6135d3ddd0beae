"""The benchmark's view of the corpora: splits as product ``IntentSet``s, and which dataset each leave-one-out
adapter must not have seen. Finding and reading the files is ``fewintent.data.corpus``'s (one search order:
``--data-dir``, ``$FEWINTENT_DATASETS``, the downloaded corpora, ``../shared/datasets``); nothing is copied.
"""

from __future__ import annotations

import random
from pathlib import Path

from fewintent.data.corpus import Row, read_rows
from fewintent.data.intentset import DEFAULT_OOS_LABEL, IntentSet
from fewintent.data.locations import DOWNLOAD_COMMAND, find_corpus, first_root, not_found
from fewintent.errors import FewIntentError

__all__ = ["Corpora", "Row", "default_data_dir", "source_dataset"]

FULLWAY_DATASETS = ("banking77", "clinc150", "hwu64")
SHOTS = (5, 10)

# Held-out domains of the episodic protocol (README, "Benchmark"): never seen by the held-out-domain adapters.
HELDOUT_DOMAINS: dict[str, tuple[str, ...]] = {
    "clinc150": ("banking", "credit_cards", "travel"),
    "hwu64": ("alarm", "iot", "music"),
}

# The dataset a result on X must have been meta-trained without (BANKING77-OOS is built from BANKING77).
SOURCE_DATASET = {"banking77_oos": "banking77"}


def source_dataset(dataset: str) -> str:
    """The corpus whose leave-one-out adapter is honest for ``dataset`` (``banking77_oos`` -> ``banking77``)."""
    return SOURCE_DATASET.get(dataset.split(":")[0], dataset.split(":")[0])


BENCHMARK_CORPORA = ("banking77", "clinc150", "hwu64", "banking77_oos")


def default_data_dir() -> Path:
    """The first folder of the corpus search path that exists (the download folder when none does)."""
    return first_root()


class Corpora:
    """Reads each ``<dataset>/<split>.jsonl`` once, with the ``domain`` field kept; ``data_dir`` is searched first,
    then the rest of the search path."""

    def __init__(self, data_dir: str | Path | None = None) -> None:
        self.dir = Path(data_dir).expanduser() if data_dir is not None else first_root()
        if not self.dir.is_dir():
            raise FewIntentError(
                f"{self.dir}: no such data directory; get the corpora with "
                f"`{DOWNLOAD_COMMAND} {' '.join(BENCHMARK_CORPORA)}`, or pass --data-dir"
            )
        self._cache: dict[tuple[str, str], list[Row]] = {}

    def path(self, dataset: str, split: str) -> Path:
        folder = find_corpus(dataset, self.dir)
        return (folder or self.dir / dataset) / f"{split}.jsonl"

    def has(self, dataset: str, split: str) -> bool:
        return self.path(dataset, split).is_file()

    def rows(self, dataset: str, split: str) -> list[Row]:
        key = (dataset, split)
        if key not in self._cache:
            if find_corpus(dataset, self.dir) is None:
                raise not_found(dataset, self.dir)
            self._cache[key] = read_rows(self.path(dataset, split), dataset)
        return self._cache[key]

    def support(self, dataset: str, split: str) -> IntentSet:
        """A training split as the product reads it (duplicates dropped, OOS rows apart)."""
        rows = self.rows(dataset, split)
        return IntentSet.from_pairs(((r.text, r.intent) for r in rows), source=str(self.path(dataset, split)))

    def labelled(self, dataset: str, *splits: str) -> IntentSet:
        """Evaluation rows of one or more splits concatenated, every row kept (OOS rows as out-of-scope texts)."""
        pairs = [(r.text, r.intent) for s in splits for r in self.rows(dataset, s)]
        return IntentSet.from_pairs(pairs, source=f"{dataset}[{'+'.join(splits)}]", for_training=False)

    def sample_per_intent(self, dataset: str, split: str, k: int, seed: int) -> IntentSet:
        """``k`` examples per intent drawn with a fixed seed (for corpora without a standard ``train_k`` file)."""
        by_intent: dict[str, list[str]] = {}
        for r in self.rows(dataset, split):
            if r.intent != DEFAULT_OOS_LABEL:
                by_intent.setdefault(r.intent, []).append(r.text)
        rng = random.Random(f"{dataset}/{split}/{k}/{seed}")
        pairs = []
        for intent in sorted(by_intent):
            texts = sorted(set(by_intent[intent]))
            pairs += [(t, intent) for t in rng.sample(texts, min(k, len(texts)))]
        return IntentSet.from_pairs(pairs, source=f"{dataset}[{split}, {k} per intent, seed {seed}]")

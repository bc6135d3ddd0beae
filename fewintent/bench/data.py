"""The benchmark corpora on disk: splits, domains, and which dataset each leave-one-out adapter must not have seen.

Files are read from the user's data directory (``../shared/datasets`` by default) and never copied.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from fewintent.data.intentset import DEFAULT_OOS_LABEL, IntentSet
from fewintent.data.io import jsonl_records
from fewintent.errors import FewIntentError

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


@dataclass(frozen=True)
class Row:
    text: str
    intent: str
    domain: str


def default_data_dir() -> Path:
    """``../shared/datasets`` next to the working directory's project root, as the datasets README says."""
    here = Path.cwd()
    for base in (here, *here.parents):
        candidate = base.parent / "shared" / "datasets"
        if (base / "pyproject.toml").is_file() and candidate.is_dir():
            return candidate
    return here.parent / "shared" / "datasets"


class Corpora:
    """Reads ``DIR/<dataset>/<split>.jsonl`` once each, with the ``domain`` field kept."""

    def __init__(self, data_dir: str | Path) -> None:
        self.dir = Path(data_dir).expanduser()
        if not self.dir.is_dir():
            raise FewIntentError(
                f"{self.dir}: no such data directory; pass --data-dir pointing at the shared datasets"
            )
        self._cache: dict[tuple[str, str], list[Row]] = {}

    def path(self, dataset: str, split: str) -> Path:
        return self.dir / dataset / f"{split}.jsonl"

    def has(self, dataset: str, split: str) -> bool:
        return self.path(dataset, split).is_file()

    def rows(self, dataset: str, split: str) -> list[Row]:
        key = (dataset, split)
        if key not in self._cache:
            p = self.path(dataset, split)
            if not p.is_file():
                raise FewIntentError(f"{p}: missing; the benchmark needs {dataset}/{split}.jsonl in --data-dir")
            out = []
            for lineno, r in jsonl_records(p):
                try:
                    out.append(Row(str(r["text"]), str(r["intent"]), str(r.get("domain", dataset))))
                except KeyError as e:
                    raise FewIntentError(f"{p}:{lineno}: expected {{'text', 'intent'}} ({e})") from e
            self._cache[key] = out
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

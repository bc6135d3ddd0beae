"""The one corpus reader: the public intent datasets by name, found in one order (``locations.py``: ``--data-dir``,
``$FEWINTENT_DATASETS``, the downloaded ones, ``../shared/datasets``), with their domains.

A *corpus* here is one split of one dataset with a domain per intent (a CLINC150 domain, an HWU64 scenario, or
the whole dataset for single-domain ones). Meta-training samples episodes from corpora; it never reads a ``test``
split. The benchmark reads its splits as ``Row``s through ``read_rows``. A Hugging Face hub copy is read only when
its hub id is asked for (``PolyAI/banking77``); a registered name never goes to the hub.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fewintent.data.intentset import DEFAULT_OOS_LABEL
from fewintent.data.io import jsonl_records, load_hf_intents, read_intent_file_with_records
from fewintent.data.locations import DOWNLOAD_COMMAND, find_corpus, not_found, search_path
from fewintent.data.sources import CORPORA as DOWNLOADABLE
from fewintent.errors import FewIntentError

SPLITS_FOR_TRAINING = ("train", "train_5", "train_10", "valid")


@dataclass(frozen=True)
class Row:
    """One line of a corpus split: ``{"text", "intent", "domain"}`` (the domain defaults to the dataset's name)."""

    text: str
    intent: str
    domain: str


def split_path(name: str, split: str, data_dir: str | Path | None = None) -> Path:
    """``<folder of name>/<split>.jsonl`` on the search path; a missing corpus names the download command."""
    folder = find_corpus(name, data_dir)
    if folder is None:
        raise not_found(name, data_dir)
    return folder / f"{split}.jsonl"


def read_rows(path: Path, dataset: str) -> list[Row]:
    """Every row of one corpus split file, in file order (nothing dropped: the benchmark scores every line)."""
    if not path.is_file():
        raise FewIntentError(f"{path}: missing; expected {dataset}/{path.name} (`{DOWNLOAD_COMMAND} {dataset}`)")
    out = []
    for lineno, r in jsonl_records(path):
        try:
            out.append(Row(str(r["text"]), str(r["intent"]), str(r.get("domain", dataset))))
        except KeyError as e:
            raise FewIntentError(f"{path}:{lineno}: expected {{'text', 'intent'}} ({e})") from e
    return out


@dataclass(frozen=True)
class CorpusSpec:
    """A public corpus's Hugging Face hub dataset, read only when its hub id is asked for explicitly.

    The hub copies carry no domain column (``domain_column`` None): read from the hub, the whole dataset is one
    domain. The ``--data-dir`` JSONL files carry ``domain`` on every line.
    """

    name: str
    hf_id: str
    hf_config: str | None
    text_column: str
    intent_column: str
    hf_splits: dict[str, str] = field(default_factory=dict)
    """Our split name -> the hub's split name (a missing key means the same name)."""
    domain_column: str | None = None
    description: str = ""


CORPORA: dict[str, CorpusSpec] = {
    "banking77": CorpusSpec(
        "banking77", "PolyAI/banking77", None, "text", "label", description="BANKING77: 77 intents, 1 domain"
    ),
    "clinc150": CorpusSpec(
        "clinc150",
        "clinc_oos",
        "plus",
        "text",
        "intent",
        hf_splits={"valid": "validation"},
        description="CLINC150: 150 intents in 10 domains, plus out-of-scope",
    ),
    "hwu64": CorpusSpec(
        "hwu64", "DeepPavlov/hwu64", None, "utterance", "label", description="HWU64: 64 intents in 18 scenarios"
    ),
    "snips": CorpusSpec(
        "snips", "DeepPavlov/snips", None, "utterance", "label", description="SNIPS: 7 intents, 1 domain"
    ),
}


@dataclass
class Corpus:
    """In-scope examples of one dataset split, each intent in one domain.

    Example:
        >>> c = load_corpus("clinc150", "train", data_dir="../shared/datasets")  # doctest: +SKIP
        >>> sorted(c.domains())[:2]  # doctest: +SKIP
        ['auto_and_commute', 'banking']
    """

    name: str
    split: str
    by_intent: dict[str, list[str]]
    domain_of: dict[str, str]

    def domains(self) -> dict[str, list[str]]:
        """Domain -> its intents, in a stable (sorted) order."""
        out: dict[str, list[str]] = {}
        for intent in sorted(self.by_intent):
            out.setdefault(self.domain_of[intent], []).append(intent)
        return dict(sorted(out.items()))

    def without_domains(self, domains: set[str]) -> Corpus:
        keep = {i: t for i, t in self.by_intent.items() if self.domain_of[i] not in domains}
        return Corpus(self.name, self.split, keep, {i: self.domain_of[i] for i in keep})

    def only_domains(self, domains: set[str]) -> Corpus:
        keep = {i: t for i, t in self.by_intent.items() if self.domain_of[i] in domains}
        return Corpus(self.name, self.split, keep, {i: self.domain_of[i] for i in keep})

    @property
    def n_examples(self) -> int:
        return sum(len(t) for t in self.by_intent.values())

    def summary(self) -> dict[str, int | str]:
        return {
            "name": self.name,
            "split": self.split,
            "intents": len(self.by_intent),
            "domains": len(self.domains()),
            "examples": self.n_examples,
        }


def parse_domain_list(values: str | list[str] | None) -> list[tuple[str, str]]:
    """``"clinc150:banking,hwu64:alarm"`` (or a list of such items) -> ``[("clinc150", "banking"), ...]``."""
    if not values:
        return []
    items = values.split(",") if isinstance(values, str) else [x for v in values for x in str(v).split(",")]
    out = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        ds, sep, dom = item.partition(":")
        if not sep or not ds or not dom:
            raise FewIntentError(f"'{item}': a held-out domain is written dataset:domain, e.g. clinc150:banking")
        out.append((ds, dom))
    return out


def _file_for(data_dir: Path, name: str, split: str) -> Path | None:
    for ext in (".jsonl", ".csv", ".yml", ".yaml"):
        p = data_dir / name / f"{split}{ext}"
        if p.is_file():
            return p
    return None


def _read_with_domains(path: Path, default_domain: str, oos_label: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    data, records = read_intent_file_with_records(path, oos_label=oos_label)
    domain_of = {intent: default_domain for intent in data.labels}
    # The domain field (an extra key of the JSONL contract) is read from the same, already validated, records
    # (none for CSV and Rasa files).
    votes: dict[str, Counter[str]] = {}
    for _, row in records:
        intent = str(row.get("intent", "")).strip()
        if row.get("domain") and intent in domain_of:
            votes.setdefault(intent, Counter())[str(row["domain"])] += 1
    for intent, counter in votes.items():
        domain_of[intent] = counter.most_common(1)[0][0]
    return data.by_intent(), domain_of


def load_corpus(
    name_or_path: str | Path,
    split: str = "train",
    *,
    data_dir: str | Path | None = None,
    oos_label: str = DEFAULT_OOS_LABEL,
    allow_test: bool = False,
) -> Corpus:
    """Load one split of a corpus (a folder found on the search path, a hub id, or a user's intent file).

    A user's file is one corpus named after its stem; JSONL rows may carry a ``domain`` field, otherwise the
    whole file is one domain. ``test`` splits are refused unless ``allow_test`` (benchmarks only): meta-training
    and early stopping must never see them.
    """
    if split.startswith("test") and not allow_test:
        raise FewIntentError(f"refusing to read the '{split}' split for training; use train or valid")
    p = Path(str(name_or_path)).expanduser()
    if p.is_file():
        by_intent, domain_of = _read_with_domains(p, p.stem, oos_label)
        return Corpus(p.stem, split, by_intent, domain_of)
    name = str(name_or_path)
    folder = find_corpus(name, data_dir)
    if folder is not None:
        f = _file_for(folder.parent, name, split)
        if f is None:
            raise FewIntentError(f"{folder}: no '{split}' split (expected {split}.jsonl)")
        by_intent, domain_of = _read_with_domains(f, name, oos_label)
        return Corpus(name, split, by_intent, domain_of)
    hub = next((spec for spec in CORPORA.values() if spec.hf_id == name), None)
    if hub is not None:
        return _load_from_hub(hub, split, oos_label)
    if name in DOWNLOADABLE:
        raise not_found(name, data_dir)
    folders = "; ".join(f"{d}: {_folders(d)}" for d in search_path(data_dir) if d.is_dir()) or "none found"
    raise FewIntentError(
        f"no dataset '{name}': give an intent file, a corpus folder (folders: {folders}), a hub id such as "
        f"{CORPORA['banking77'].hf_id}, or one of {', '.join(DOWNLOADABLE)} (`{DOWNLOAD_COMMAND} NAME`)"
    )


def _folders(d: Path) -> str:
    return ", ".join(sorted(p.name for p in d.iterdir() if p.is_dir())) if d.is_dir() else f"{d} does not exist"


def _load_from_hub(spec: CorpusSpec, split: str, oos_label: str) -> Corpus:
    kwargs: dict[str, Any] = {"name": spec.hf_config} if spec.hf_config else {}
    data = load_hf_intents(
        spec.hf_id,
        split=spec.hf_splits.get(split, split),
        text_column=spec.text_column,
        intent_column=spec.intent_column,
        oos_label=oos_label,
        **kwargs,
    )
    return Corpus(spec.name, split, data.by_intent(), {intent: spec.name for intent in data.labels})


def load_corpora(
    names: list[str],
    split: str = "train",
    *,
    data_dir: str | Path | None = None,
    exclude: list[str] | None = None,
    exclude_domains: list[tuple[str, str]] | None = None,
    oos_label: str = DEFAULT_OOS_LABEL,
) -> dict[str, Corpus]:
    """Several corpora, with excluded datasets left out and excluded ``(dataset, domain)`` pairs removed.

    Naming an excluded domain that does not exist is an error: a typo must not silently leak a held-out domain.
    """
    excluded = set(exclude or [])
    out: dict[str, Corpus] = {}
    for name in names:
        if name in excluded:
            continue
        corpus = load_corpus(name, split, data_dir=data_dir, oos_label=oos_label)
        drop = {dom for ds, dom in exclude_domains or [] if ds == corpus.name}
        unknown = drop - set(corpus.domains())
        if unknown:
            raise FewIntentError(
                f"{corpus.name} has no domain(s) {', '.join(sorted(unknown))} "
                f"(its domains: {', '.join(corpus.domains())})"
            )
        out[corpus.name] = corpus.without_domains(drop)
    if not out:
        raise FewIntentError("no dataset left to train on after --exclude")
    return out

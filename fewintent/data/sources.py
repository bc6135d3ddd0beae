"""The public corpora: which files of which repository (at a pinned commit) each is built from, and the converters.

A converter is a pure function from the source files' bytes (keyed by their path in the repository) to the
corpus's JSON Lines files (keyed by file name), in the schema of the reference corpora:
``{"text", "intent", "domain"}`` per line (NLU++: ``{"text", "intents", "domain", "fold"}``), ``"oos"`` as the
out-of-scope intent. Downloading, hashing and writing live in ``download.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from fewintent.data.intentset import DEFAULT_OOS_LABEL
from fewintent.errors import FewIntentError

Converter = Callable[[Mapping[str, bytes]], dict[str, bytes]]


@dataclass(frozen=True)
class Repo:
    """A GitHub repository at the commit the corpora are built from."""

    owner: str
    name: str
    commit: str

    @property
    def key(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True)
class SourceFile:
    repo: str
    """``owner/name`` of its repository (a key of ``REPOS``)."""
    path: str
    """Its path inside the repository."""

    @property
    def key(self) -> str:
        return f"{self.repo}/{self.path}"


@dataclass(frozen=True)
class CorpusSource:
    """One corpus: its source files, its converter and its licence."""

    name: str
    title: str
    licence: str
    citation: str
    files: tuple[SourceFile, ...]
    convert: Converter


REPOS: dict[str, Repo] = {
    r.key: r
    for r in (
        Repo("jianguoz", "Few-Shot-Intent-Detection", "fa9553312b1dba54b1be0aae2d30b13171f898e5"),
        Repo("clinc", "oos-eval", "828f8093932c8fe6ca7936c3d2e52903b1c523de"),
        Repo("PolyAI-LDN", "task-specific-datasets", "57ec275d8078af65b7731c2a98be812d844a6d6b"),
        Repo("google-research-datasets", "dstc8-schema-guided-dialogue", "e852981ae34990f4358979625854259302feaa78"),
    )
}
FSID = "jianguoz/Few-Shot-Intent-Detection"
CLINC = "clinc/oos-eval"
POLYAI = "PolyAI-LDN/task-specific-datasets"
SGD = "google-research-datasets/dstc8-schema-guided-dialogue"


def _lines(data: bytes, where: str) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FewIntentError(f"{where}: not UTF-8 text ({e.reason})") from e
    return text.splitlines()


def _jsonl(rows: Iterable[dict[str, object]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def seq_in_rows(texts: bytes, labels: bytes, domain: Callable[[str], str], where: str) -> list[dict[str, object]]:
    """``seq.in`` (one utterance a line) and ``label`` (its intent) -> rows; the text is stripped of outer spaces."""
    t, lab = _lines(texts, f"{where}/seq.in"), _lines(labels, f"{where}/label")
    if len(t) != len(lab):
        raise FewIntentError(f"{where}: seq.in has {len(t)} lines but label has {len(lab)}")
    return [{"text": x.strip(), "intent": y, "domain": domain(y)} for x, y in zip(t, lab)]


def _fsid_splits(
    folder: str, splits: Mapping[str, str], domain: Callable[[str], str]
) -> tuple[tuple[SourceFile, ...], Converter]:
    """A corpus of ``Datasets/<folder>/<split>/{seq.in,label}`` folders; ``splits``: output name -> source folder."""
    files = tuple(
        SourceFile(FSID, f"Datasets/{folder}/{src}/{part}") for src in splits.values() for part in ("seq.in", "label")
    )

    def convert(data: Mapping[str, bytes]) -> dict[str, bytes]:
        out = {}
        for name, src in splits.items():
            base = f"Datasets/{folder}/{src}"
            out[f"{name}.jsonl"] = _jsonl(seq_in_rows(data[f"{base}/seq.in"], data[f"{base}/label"], domain, base))
        return out

    return files, convert


def _constant(domain: str) -> Callable[[str], str]:
    return lambda intent: DEFAULT_OOS_LABEL if intent == DEFAULT_OOS_LABEL else domain


FEW_SHOT_SPLITS = {s: s for s in ("train", "valid", "test", "train_5", "train_10")}


def _banking77() -> CorpusSource:
    files, convert = _fsid_splits("BANKING77", FEW_SHOT_SPLITS, _constant("banking"))
    return CorpusSource(
        "banking77", "BANKING77: 77 intents, 1 domain", "CC BY 4.0", "Casanueva et al. 2020", files, convert
    )


def _hwu64() -> CorpusSource:
    files, convert = _fsid_splits("HWU64", FEW_SHOT_SPLITS, lambda intent: intent.split("_")[0])
    return CorpusSource("hwu64", "HWU64: 64 intents in 18 scenarios", "CC BY 4.0", "Liu et al. 2019", files, convert)


def _snips() -> CorpusSource:
    files, convert = _fsid_splits("SNIPS", {s: s for s in ("train", "valid", "test")}, _constant("snips"))
    return CorpusSource("snips", "SNIPS: 7 intents, 1 domain", "CC0 1.0", "Coucke et al. 2018", files, convert)


def _banking77_oos() -> CorpusSource:
    splits = {s: s for s in ("train", "valid", "test")}
    splits.update({f"{k}_oos_{s}": f"{k}-oos/{s}" for k in ("id", "ood") for s in ("valid", "test")})
    files, convert = _fsid_splits("BANKING77-OOS", splits, _constant("banking"))
    return CorpusSource(
        "banking77_oos",
        "BANKING77-OOS: 50 in-scope intents, in-domain and out-of-domain OOS",
        "CC BY 4.0",
        "Zhang et al. 2021",
        files,
        convert,
    )


def clinc_domains(domains_json: bytes) -> dict[str, str]:
    """``data/domains.json`` of oos-eval (domain -> intents) -> intent -> domain."""
    return {intent: dom for dom, intents in json.loads(domains_json).items() for intent in intents}


def _clinc150() -> CorpusSource:
    splits = dict(FEW_SHOT_SPLITS) | {f"oos_{s}": f"oos/{s}" for s in ("train", "valid", "test")}
    domains_file = SourceFile(CLINC, "data/domains.json")
    files, _ = _fsid_splits("CLINC150", splits, str)

    def convert(data: Mapping[str, bytes]) -> dict[str, bytes]:
        domain_of = clinc_domains(data[domains_file.path]) | {DEFAULT_OOS_LABEL: DEFAULT_OOS_LABEL}

        def domain(intent: str) -> str:
            if intent not in domain_of:
                raise FewIntentError(f"CLINC150: intent '{intent}' is in no domain of data/domains.json")
            return domain_of[intent]

        return _fsid_splits("CLINC150", splits, domain)[1](data)

    return CorpusSource(
        "clinc150",
        "CLINC150: 150 intents in 10 domains, plus out-of-scope",
        "CC BY 3.0",
        "Larson et al. 2019",
        (*files, domains_file),
        convert,
    )


NLUPP_DOMAINS = ("banking", "hotels")
NLUPP_FOLDS = 20


def nlupp_rows(fold_json: bytes, domain: str, fold: int) -> list[dict[str, object]]:
    """One NLU++ fold file -> rows with the intents sorted (an empty list = out of scope), whitespace collapsed."""
    rows = []
    for example in json.loads(fold_json):
        text = " ".join(str(example["text"]).split())
        rows.append({"text": text, "intents": sorted(example.get("intents", [])), "domain": domain, "fold": fold})
    return rows


def _nlupp() -> CorpusSource:
    def path(domain: str, fold: int) -> str:
        return f"nlupp/data/{domain}/fold{fold}.json"

    def convert(data: Mapping[str, bytes]) -> dict[str, bytes]:
        return {
            f"{d}.jsonl": _jsonl(r for k in range(NLUPP_FOLDS) for r in nlupp_rows(data[path(d, k)], d, k))
            for d in NLUPP_DOMAINS
        }

    files = tuple(SourceFile(POLYAI, path(d, k)) for d in NLUPP_DOMAINS for k in range(NLUPP_FOLDS))
    return CorpusSource(
        "nlupp",
        "NLU++: multi-label, 62 labels in 2 domains, 20 folds each",
        "CC BY 4.0",
        "Casanueva et al. 2022",
        files,
        convert,
    )


SGD_SPLITS = {"train": ("train", 127), "valid": ("dev", 20), "test": ("test", 34)}


def sgd_rows(dialogues: Iterable[bytes], seen: set[str] | None = None) -> list[dict[str, object]]:
    """User turns that state exactly one intent (one ``INFORM_INTENT`` action): the text (whitespace collapsed),
    that intent, and the service's domain (``Restaurants_1`` -> ``restaurants``). A text already taken (compared
    lower-cased, across the split: ``seen``) is taken once."""
    seen = set() if seen is None else seen
    rows = []
    for content in dialogues:
        for dialogue in json.loads(content):
            for turn in dialogue["turns"]:
                if turn["speaker"] != "USER":
                    continue
                stated = [
                    (a["values"][0], f["service"])
                    for f in turn["frames"]
                    for a in f["actions"]
                    if a["act"] == "INFORM_INTENT"
                ]
                if len(stated) != 1:
                    continue
                text = " ".join(turn["utterance"].split())
                if text.lower() in seen:
                    continue
                seen.add(text.lower())
                intent, service = stated[0]
                rows.append({"text": text, "intent": intent, "domain": service.split("_")[0].lower()})
    return rows


def _sgd() -> CorpusSource:
    paths = {name: [f"{src}/dialogues_{i:03d}.json" for i in range(1, n + 1)] for name, (src, n) in SGD_SPLITS.items()}

    def convert(data: Mapping[str, bytes]) -> dict[str, bytes]:
        return {f"{name}.jsonl": _jsonl(sgd_rows(data[p] for p in ps)) for name, ps in paths.items()}

    files = tuple(SourceFile(SGD, p) for ps in paths.values() for p in ps)
    return CorpusSource(
        "sgd",
        "Schema-Guided Dialogue: user turns stating one intent, 16-18 service domains",
        "CC BY-SA 4.0",
        "Rastogi et al. 2020",
        files,
        convert,
    )


CORPORA: dict[str, CorpusSource] = {
    c.name: c for c in (_banking77(), _clinc150(), _hwu64(), _snips(), _banking77_oos(), _nlupp(), _sgd())
}
"""Every corpus ``fewintent datasets download`` knows, by name."""

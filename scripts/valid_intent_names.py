"""The `valid`-split measurement that chose intent names as examples (``AdaptArguments.intent_names``), re-runnable.

For each full-way corpus, the leave-one-out adapter (``minilm-meta-no-<dataset>``) and the frozen encoder adapt on
``train_5`` / ``train_10`` with and without the intents' names, through ``IntentClassifier.fit_embeddings`` (the
code ``fewintent adapt`` runs), and are scored top-1 on ``valid``. Then the out-of-scope side: AUROC, OOS F1 and
in-scope accuracy at the support-only threshold on CLINC150 ``valid`` + ``oos_valid`` and BANKING77-OOS ``valid``
+ ``{id,ood}_oos_valid``. Never reads a ``test`` split. One JSON line per measurement:

    python scripts/valid_intent_names.py --data-dir ../shared/datasets > names_valid.jsonl
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np

from fewintent.bench.data import Corpora
from fewintent.data import IntentSet
from fewintent.model import IntentClassifier
from fewintent.model.evaluation import auroc


def _fit(clf: IntentClassifier, support: IntentSet, names: bool) -> np.ndarray:
    """Fit on ``support`` (with or without names); returns the label index of each intent in label order."""
    labels = tuple(support.labels)
    index = {label: i for i, label in enumerate(labels)}
    clf.config = replace(clf.config, intent_names=names)
    y = np.array([index[i] for i in support.intents])
    clf.fit_embeddings(labels, clf.encoder.encode(support.texts), y)
    return y


def top1(corpora: Corpora, dataset: str) -> None:
    valid = corpora.labelled(dataset, "valid")
    for adapter in (f"minilm-meta-no-{dataset}", "none"):
        clf = IntentClassifier.unfitted(adapter=adapter, device="cpu")
        emb = clf.encoder.encode(valid.texts).numpy()
        for k in (5, 10):
            support = corpora.support(dataset, f"train_{k}")
            for names in (False, True):
                _fit(clf, support, names)
                table = clf.table
                gold = np.array([table.labels.index(i) for i in valid.intents])
                pred = table.logits(emb, table.similarities(emb)).argmax(-1)
                acc = float((pred == gold).mean())
                row = {"dataset": dataset, "shots": k, "adapter": adapter, "intent_names": names}
                print(json.dumps({**row, "valid_top1": round(100 * acc, 2)}), flush=True)


def out_of_scope(corpora: Corpora, name: str, adapter: str, support: IntentSet, valid: IntentSet) -> None:
    clf = IntentClassifier.unfitted(adapter=adapter, device="cpu")
    emb = clf.encoder.encode(valid.texts + valid.oos_texts).numpy()
    n_in = len(valid.texts)
    for names in (False, True):
        _fit(clf, support, names)
        table = clf.table
        sims = table.similarities(emb)
        pred = table.logits(emb, sims).argmax(-1)
        scores = table.oos_scores(emb, sims)
        rejected = scores < table.threshold
        gold = np.array([table.labels.index(i) for i in valid.intents])
        caught = int(rejected[n_in:].sum())
        recall, precision = caught / len(valid.oos_texts), caught / max(int(rejected.sum()), 1)
        in_scope = float(((pred[:n_in] == gold) & ~rejected[:n_in]).mean())
        row = {
            "set": name,
            "intent_names": names,
            "auroc": round(100 * auroc(scores[:n_in], scores[n_in:]), 2),
            "oos_f1": round(100 * 2 * recall * precision / max(recall + precision, 1e-9), 2),
            "in_scope_accuracy": round(100 * in_scope, 2),
        }
        print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/datasets")
    parser.add_argument("--seed", type=int, default=0, help="BANKING77-OOS support sample (the benchmark's seed)")
    args = parser.parse_args()
    corpora = Corpora(args.data_dir)
    for dataset in ("banking77", "clinc150", "hwu64"):
        top1(corpora, dataset)
    out_of_scope(
        corpora,
        "clinc150",
        "minilm-meta-no-clinc150",
        corpora.support("clinc150", "train_10"),
        corpora.labelled("clinc150", "valid", "oos_valid"),
    )
    support = corpora.sample_per_intent("banking77_oos", "train", 10, args.seed)
    for kind in ("id", "ood"):
        valid = corpora.labelled("banking77_oos", "valid", f"{kind}_oos_valid")
        out_of_scope(corpora, f"banking77_oos:{kind}", "minilm-meta-no-banking77", support, valid)


if __name__ == "__main__":
    main()

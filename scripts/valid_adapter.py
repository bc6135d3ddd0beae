"""Does a meta-learned adapter beat its frozen base on a left-out corpus's ``valid`` split? Re-runnable.

The rule for shipping an adapter: on the ``valid`` split of a corpus the adapter never saw, the product's own path
(``IntentClassifier`` with the linear head and intent names, as ``fewintent adapt`` builds it) must score higher
top-1 at 5 and 10 shots than the frozen base, without losing out-of-scope AUROC (CLINC150 ``valid`` +
``oos_valid``). Each encoder encodes every text once. Never reads a ``test`` split. One JSON line per measurement:

    python scripts/valid_adapter.py --base mpnet --adapter runs/mpnet-meta-no-clinc150 --dataset clinc150

``--dataset banking77_oos`` scores BANKING77-OOS in-domain ``valid`` (its ``valid`` + ``id_oos_valid``: intents
of the same bank the support never names), with supports of 5 and 10 per intent drawn from its ``train`` with each
``--seeds`` seed (the corpus has no standard few-shot files); its honest adapter is the one that left BANKING77 out:

    python scripts/valid_adapter.py --adapter runs/minilm-meta-no-banking77-rank --dataset banking77_oos --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from fewintent.bench.data import Corpora
from fewintent.data import IntentSet
from fewintent.model import IntentClassifier
from fewintent.model.evaluation import auroc

OOS_VALID = {"clinc150": "oos_valid", "banking77_oos": "id_oos_valid"}


def _supports(corpora: Corpora, dataset: str, seeds: list[int]) -> dict[tuple[int, int | None], IntentSet]:
    """(shots, seed) -> support: the standard ``train_K`` files (seed None), or seeded samples of ``train``."""
    if corpora.has(dataset, "train_5"):
        return {(k, None): corpora.support(dataset, f"train_{k}") for k in (5, 10)}
    return {(k, s): corpora.sample_per_intent(dataset, "train", k, s) for k in (5, 10) for s in seeds}


def measure(corpora: Corpora, base: str, adapter: str, dataset: str, seeds: list[int]) -> None:
    clf = IntentClassifier.unfitted(base=base, adapter=adapter, device="cpu")
    valid = corpora.labelled(dataset, "valid", *([OOS_VALID[dataset]] if dataset in OOS_VALID else []))
    supports = _supports(corpora, dataset, seeds)
    texts = list(dict.fromkeys(valid.texts + valid.oos_texts + [t for s in supports.values() for t in s.texts]))
    emb = dict(zip(texts, clf.encoder.encode(texts)))
    queries = torch.stack([emb[t] for t in valid.texts + valid.oos_texts]).numpy()
    n_in = len(valid.texts)
    for (k, seed), support in supports.items():
        labels = tuple(support.labels)
        y = np.array([labels.index(i) for i in support.intents])
        clf.fit_embeddings(labels, torch.stack([emb[t] for t in support.texts]), y)
        table = clf.table
        sims = table.similarities(queries)
        pred = table.logits(queries, sims).argmax(-1)[:n_in]
        gold = np.array([labels.index(i) for i in valid.intents])
        row = {"base": base, "adapter": adapter, "dataset": dataset, "shots": k, "seed": seed}
        row["valid_top1"] = round(100 * float((pred == gold).mean()), 2)
        if valid.oos_texts:
            scores = table.oos_scores(queries, sims)
            row["oos_auroc"] = round(100 * auroc(scores[:n_in], scores[n_in:]), 2)
            rejected = scores < table.threshold
            caught = int(rejected[n_in:].sum())
            recall, precision = caught / len(valid.oos_texts), caught / max(int(rejected.sum()), 1)
            row["oos_f1"] = round(100 * 2 * recall * precision / max(recall + precision, 1e-9), 2)
            row["in_scope_kept"] = round(100 * float(1 - rejected[:n_in].mean()), 2)
        print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/datasets")
    parser.add_argument("--base", default="minilm")
    parser.add_argument("--adapter", action="append", required=True, help="an adapter to compare (repeatable)")
    parser.add_argument("--dataset", required=True, help="the corpus the adapters left out")
    parser.add_argument("--seeds", default="0,1,2", help="support samples where the corpus has no train_K files")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpora = Corpora(args.data_dir)
    for adapter in ["none", *args.adapter]:
        measure(corpora, args.base, adapter, args.dataset, [int(x) for x in args.seeds.split(",")])


if __name__ == "__main__":
    main()

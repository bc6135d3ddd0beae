"""Out-of-scope thresholds from unlabelled logs, measured on ``valid`` only (issue 32), re-runnable.

For each corpus: a 10-shot support from ``train``, the base's leave-one-out adapter (that corpus left out), the
product's own path (``IntentClassifier.unfitted`` + ``fit_embeddings`` on cached embeddings, ``decide``). The
``valid`` in-scope rows and the out-of-scope pool are split in two halves per seed: one half is the evaluation
sample, the other the unlabelled logs (labels dropped), each subsampled to an out-of-scope share of 10/30/50%
(the OOS part is subsampled; where the pool is short, the in-scope part instead). Per share it reports OOS F1 and
MCC (OOS as a class, ``evaluate``'s) of:

- ``support``: the support-only threshold (what ``adapt`` sets);
- ``logs``: ``calibrate_on_log_scores`` on the logs half (share estimated), objective MCC;
- ``logs-f1``: the same with the F1 objective;
- ``stated``: the true share stated (``oos_share=``), objective MCC;
- ``oracle``: the best threshold on the evaluation half itself, for F1 and for MCC separately (a ceiling only).

Corpora: CLINC150 (``valid`` + its OOS pool ``oos_valid`` + ``oos_train``: 100 OOS rows alone leave 50 per half)
and BANKING77-OOS in-domain (``valid`` + ``id_oos_valid``). Never reads a ``test`` split.

    python scripts/valid_oos_logs.py --base minilm --out wip/oos_logs_minilm.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fewintent.bench.data import Corpora
from fewintent.bench.shares import share_counts
from fewintent.data.intentset import DEFAULT_OOS_LABEL
from fewintent.encoder.registry import registered
from fewintent.errors import FewIntentWarning
from fewintent.model import IntentClassifier
from fewintent.model.calibration import calibrate_threshold
from fewintent.model.evaluation import score_predictions
from fewintent.model.traffic import calibrate_on_log_scores, fit_oos_share, support_held_out

SHARES = (0.1, 0.3, 0.5)
RECALL_GRID = (0.85, 0.9, 0.925, 0.95, 0.97, 0.99)
"""``in_scope_recall`` targets of the support-only threshold, compared across corpora and shares."""
LOG_SIZES = (100, 200, 400)
"""Logs subsampled to these sizes: how far the estimated share strays with fewer messages."""
CORPORA = {
    # name: (dataset, support split or None = sample 10 per intent from train, in-scope splits, OOS splits, left out)
    "clinc150": ("clinc150", "train_10", ("valid",), ("oos_valid", "oos_train"), "clinc150"),
    "banking77_oos_id": ("banking77_oos", None, ("valid",), ("id_oos_valid",), "banking77"),
}


class Embeddings:
    """Each text encoded once, cached on disk by base, adapter and the texts' hash."""

    def __init__(self, clf: IntentClassifier, tag: str, cache: Path) -> None:
        self.clf, self.tag, self.cache = clf, tag, cache

    def __call__(self, texts: list[str]) -> np.ndarray:
        unique = list(dict.fromkeys(texts))
        digest = hashlib.sha256("\n".join(unique).encode()).hexdigest()[:16]
        path = self.cache / f"{self.tag}-{digest}.npy"
        if path.is_file():
            emb = np.load(path)
        else:
            start = time.perf_counter()
            emb = self.clf.encode(unique)
            print(f"encoded {len(unique)} texts in {time.perf_counter() - start:.0f} s", flush=True)
            self.cache.mkdir(parents=True, exist_ok=True)
            np.save(path, emb)
        rows = {t: i for i, t in enumerate(unique)}
        return emb[[rows[t] for t in texts]]


def _metrics(gold: list[str], top1: list[str], scores: np.ndarray, threshold: float) -> dict[str, float]:
    pred = [DEFAULT_OOS_LABEL if s < threshold else t for s, t in zip(scores, top1)]
    r = score_predictions(gold, pred, DEFAULT_OOS_LABEL)
    return {"oos_f1": 100 * (r.oos_f1 or 0.0), "mcc": 100 * r.mcc, "in_acc": 100 * (r.in_scope_accuracy or 0.0)}


def _oracle(gold: list[str], top1: list[str], scores: np.ndarray) -> dict[str, float]:
    cuts = np.unique(np.quantile(scores, np.linspace(0.0, 0.9, 181)))
    rows = [_metrics(gold, top1, scores, float(c)) for c in cuts]
    return {"oos_f1": max(r["oos_f1"] for r in rows), "mcc": max(r["mcc"] for r in rows)}


def run_corpus(name: str, base: str, corpora: Corpora, seeds: list[int], cache: Path) -> dict[str, Any]:
    dataset, support_split, in_splits, oos_splits, left_out = CORPORA[name]
    spec = registered(base)
    adapter_name = spec.leave_out_adapter if spec else None
    adapter = adapter_name.format(dataset=left_out) if adapter_name else "none"
    if adapter != "none" and not (Path(__file__).parents[1] / "fewintent" / "adapters" / adapter).is_dir():
        adapter = "none"
    clf = IntentClassifier.unfitted(base=base, adapter=adapter)
    emb = Embeddings(clf, f"{base}-{adapter}-{dataset}", cache)
    support = (
        corpora.support(dataset, support_split)
        if support_split
        else corpora.sample_per_intent(dataset, "train", 10, seed=0)
    )
    labels = tuple(support.labels)
    index = {label: i for i, label in enumerate(labels)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewIntentWarning)
        clf.fit_embeddings(labels, emb(support.texts), np.array([index[i] for i in support.intents]))
    support_threshold = clf.threshold
    valid = corpora.labelled(dataset, *in_splits)
    oos_texts = list(dict.fromkeys(corpora.labelled(dataset, *oos_splits).oos_texts))
    in_texts, in_gold = valid.texts, valid.intents
    q_in, q_oos = emb(in_texts), emb(oos_texts)
    table = clf.table
    s_in = table.oos_scores(q_in, table.similarities(q_in)).astype(np.float64)
    s_oos = table.oos_scores(q_oos, table.similarities(q_oos)).astype(np.float64)
    top1 = [labels[int(i)] for i in table.logits(q_in, table.similarities(q_in)).argmax(-1)]
    held = support_held_out(clf).scores
    qs = [0.05, 0.1, 0.25, 0.5]
    bias = {
        "held_out_quantiles": [round(float(np.quantile(held, q)), 4) for q in qs],
        "valid_in_scope_quantiles": [round(float(np.quantile(s_in, q)), 4) for q in qs],
        "valid_oos_quantiles": [round(float(np.quantile(s_oos, q)), 4) for q in (0.5, 0.75, 0.9, 0.95)],
        "quantiles": qs,
    }
    print(f"{name}: adapter {adapter}, support threshold {support_threshold:.4f}, {json.dumps(bias)}", flush=True)
    cells: dict[str, list[dict[str, Any]]] = {str(s): [] for s in SHARES}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        perm_in, perm_oos = rng.permutation(len(in_texts)), rng.permutation(len(oos_texts))
        halves_in = perm_in[: len(perm_in) // 2], perm_in[len(perm_in) // 2 :]
        halves_oos = perm_oos[: len(perm_oos) // 2], perm_oos[len(perm_oos) // 2 :]
        for share in SHARES:
            picked = []
            for h_in, h_oos in zip(halves_in, halves_oos):
                n_in, n_oos = share_counts(len(h_in), len(h_oos), share)
                picked.append((h_in[:n_in], h_oos[:n_oos]))
            (e_in, e_oos), (l_in, l_oos) = picked  # evaluation half, logs half
            gold = [in_gold[i] for i in e_in] + [DEFAULT_OOS_LABEL] * len(e_oos)
            t1 = [top1[i] for i in e_in] + [labels[0]] * len(e_oos)  # an OOS row's intent never matters
            scores = np.r_[s_in[e_in], s_oos[e_oos]]
            logs = np.r_[s_in[l_in], s_oos[l_oos]]
            row: dict[str, Any] = {"seed": seed, "n_eval": len(gold), "n_logs": len(logs)}
            row["true_share"] = len(e_oos) / len(gold)
            row["support"] = _metrics(gold, t1, scores, support_threshold)
            for key, objective, stated in (("logs", "mcc", None), ("logs-f1", "f1", None), ("stated", "mcc", share)):
                report = calibrate_on_log_scores(clf, logs, objective=objective, oos_share=stated)
                row[key] = {**_metrics(gold, t1, scores, report.threshold), "threshold": report.threshold}
                if stated is None:
                    row[key]["share"] = report.oos_share
            row["oracle"] = _oracle(gold, t1, scores)
            # the support-only threshold at each in_scope_recall target (what _build_table computes from them)
            row["recall"] = {
                str(r): _metrics(gold, t1, scores, calibrate_threshold(held, None, in_scope_recall=r))
                for r in RECALL_GRID
            }
            row["log_sizes"] = {}
            for size in LOG_SIZES:
                if size < len(logs):
                    sub = rng.choice(logs, size, replace=False)
                    row["log_sizes"][str(size)] = fit_oos_share(held, sub).share
            cells[str(share)].append(row)
    clf.threshold = support_threshold
    return {"adapter": adapter, "support_threshold": support_threshold, "bias": bias, "cells": cells}


def summary(result: dict[str, Any]) -> None:
    for name, corpus in result["corpora"].items():
        print(f"\n{name} ({result['base']}, adapter {corpus['adapter']}), mean over seeds {result['seeds']}")
        head = f"{'share':>6} {'est.':>6} | " + " | ".join(
            f"{m:>14}" for m in ("support", "logs", "logs-f1", "stated", "oracle")
        )
        print(head + "\n" + " " * 15 + " | ".join(f"{'F1':>6} {'MCC':>7}" for _ in range(5)))
        for share, rows in corpus["cells"].items():
            est = np.mean([r["logs"]["share"] for r in rows])
            vals = []
            for m in ("support", "logs", "logs-f1", "stated", "oracle"):
                f1 = np.mean([r[m]["oos_f1"] for r in rows])
                mcc = np.mean([r[m]["mcc"] for r in rows])
                vals.append(f"{f1:6.1f} {mcc:7.1f}")
            print(f"{float(share):6.2f} {est:6.3f} | " + " | ".join(vals))


def recall_summary(result: dict[str, Any]) -> None:
    """Support-only MCC / OOS F1 per in_scope_recall target, per corpus and share, and their mean."""
    print(f"\nsupport-only threshold by in_scope_recall ({result['base']}): MCC / OOS F1, mean over seeds")
    cells = [(name, share) for name, c in result["corpora"].items() for share in c["cells"]]
    print(f"{'target':>7} " + " ".join(f"{n[:6]}@{float(s):.1f}".rjust(13) for n, s in cells) + f"{'mean':>13}")
    for target in RECALL_GRID:
        vals = []
        for name, share in cells:
            rows = result["corpora"][name]["cells"][share]
            mcc = np.mean([x["recall"][str(target)]["mcc"] for x in rows])
            vals.append((mcc, np.mean([x["recall"][str(target)]["oos_f1"] for x in rows])))
        mean = (np.mean([v[0] for v in vals]), np.mean([v[1] for v in vals]))
        print(f"{target:>7} " + " ".join(f"{m:6.1f}/{f:5.1f}".rjust(13) for m, f in [*vals, mean]))
    print("\nestimated share by log size (mean abs error over seeds)")
    for name, c in result["corpora"].items():
        for share, rows in c["cells"].items():
            errs = {}
            for size in map(str, LOG_SIZES):
                got = [abs(x["log_sizes"][size] - x["true_share"]) for x in rows if size in x["log_sizes"]]
                if got:
                    errs[size] = float(np.mean(got))
            full = np.mean([abs(x["logs"]["share"] - x["true_share"]) for x in rows])
            sizes = ", ".join(f"{k}: {v:.3f}" for k, v in errs.items())
            print(f"{name} @{share}: {sizes}, all ({rows[0]['n_logs']}): {full:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="minilm")
    parser.add_argument("--data-dir", default="../shared/datasets")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--corpora", default=",".join(CORPORA))
    parser.add_argument("--cache", type=Path, default=Path("wip/emb-cache"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    corpora = Corpora(args.data_dir)
    seeds = [int(s) for s in args.seeds.split(",")]
    result: dict[str, Any] = {"base": args.base, "seeds": seeds, "corpora": {}}
    for name in args.corpora.split(","):
        result["corpora"][name] = run_corpus(name, args.base, corpora, seeds, args.cache)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    summary(result)
    recall_summary(result)


if __name__ == "__main__":
    main()

"""The `valid`-split measurement of one encoder base's constants (``BaseConstants`` in the registry), re-runnable.

Everything goes through the product's own path: ``IntentClassifier.unfitted(base=..., adapter="none")`` (the frozen
encoder), ``fit_embeddings`` on cached embeddings (each corpus's texts are encoded once), intents' names as
examples unless said otherwise, the linear head. Never reads a ``test`` split. The same rules for every base:

- ``head_c``: mean ``valid`` top-1 (OOS fallback off) over {BANKING77, CLINC150, HWU64} x {train_5, train_10}
  for C in a log grid; the best mean, the smallest C within 0.05 points of it.
- ``fallback_threshold``: the 5% quantile of each in-scope ``valid`` query's best cosine to 1-shot prototypes
  (the first ``train_5`` example of each intent), with and without the intents' names; the mean over the three
  corpora rounded down to 2 decimals (names off: how all-MiniLM-L6-v2's 0.30 was set).
- ``in_scope_recall``: CLINC150 ``valid`` + ``oos_valid``, ``train_10`` support, threshold from the support only
  (no OOS examples); in-scope accuracy, OOS recall / precision / F1 and MCC (OOS as a class) per target; the best
  MCC. The linear head uses the C chosen above.
- ``scale``: the softmax temperature over prototype cosines (prototype head, ``train_10``, names on) with the
  lowest mean negative log-likelihood of the true intent on in-scope ``valid`` queries.

    python scripts/valid_base_constants.py --base mpnet --data-dir ../shared/datasets --out /tmp/mpnet.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import fewintent
from fewintent.bench.data import FULLWAY_DATASETS, SHOTS, Corpora
from fewintent.data import IntentSet
from fewintent.data.intentset import DEFAULT_OOS_LABEL
from fewintent.errors import FewIntentWarning
from fewintent.heads.decision import log_softmax
from fewintent.model import IntentClassifier
from fewintent.model.evaluation import score_predictions

C_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
C_TIE = 0.05  # points of mean top-1 within which the smaller C wins
RECALL_GRID = (0.80, 0.85, 0.90, 0.925, 0.95, 0.97)
RECALL_BEYOND = (0.98, 0.99, 1.0)  # reported, not chosen from: where the MCC goes past the grid's edge
MIXED_OOS_SHARE = 0.18
"""A second MCC with ``oos_valid`` rows repeated to about this share of the traffic (CLINC150's mixed evaluation
split is 1,000 OOS of 5,500 rows; ``valid`` is 100 of 3,100): reported, not chosen from."""
SCALE_GRID = (5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0)
FALLBACK_QUANTILE = 0.05
CONSTANTS = ("head_c", "fallback_threshold", "scale", "in_scope_recall")


class Embeddings:
    """Each text of a corpus encoded once by the classifier's encoder, kept on disk under ``cache`` (by base, corpus
    and the texts' hash) so a re-run only refits heads."""

    def __init__(self, clf: IntentClassifier, cache: Path | None) -> None:
        self.clf, self.cache = clf, cache
        self._rows: dict[str, dict[str, int]] = {}
        self._emb: dict[str, torch.Tensor] = {}

    def load(self, corpus: str, texts: list[str]) -> None:
        unique = list(dict.fromkeys(texts))
        digest = hashlib.sha256("\n".join(unique).encode()).hexdigest()[:16]
        path = self.cache / f"{self.clf.encoder.name}-{corpus}-{digest}.pt" if self.cache else None
        if path is not None and path.is_file():
            emb = torch.load(path)
        else:
            start = time.perf_counter()
            emb = self.clf.encoder.encode(unique)
            print(f"encoded {len(unique)} {corpus} texts in {time.perf_counter() - start:.0f} s", flush=True)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(emb, path)
        self._rows[corpus] = {t: i for i, t in enumerate(unique)}
        self._emb[corpus] = emb

    def __call__(self, corpus: str, texts: list[str]) -> np.ndarray:
        rows = self._rows[corpus]
        return self._emb[corpus][[rows[t] for t in texts]].numpy()


def _fit(clf: IntentClassifier, emb: Embeddings, corpus: str, support: IntentSet, **settings: Any) -> None:
    """``fit_embeddings`` on ``support`` with ``settings`` replacing fields of the classifier's config."""
    clf.config = replace(clf.config, **settings)
    labels = tuple(support.labels)
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[i] for i in support.intents])
    with warnings.catch_warnings():  # 1-shot supports warn that the threshold falls back: that is the point here
        warnings.simplefilter("ignore", FewIntentWarning)
        clf.fit_embeddings(labels, emb(corpus, support.texts), y)


def _gold(clf: IntentClassifier, intents: list[str]) -> np.ndarray:
    return np.array([clf.table.labels.index(i) for i in intents])


def head_c(clf: IntentClassifier, emb: Embeddings, data: dict[str, Any]) -> dict[str, Any]:
    cells: dict[str, dict[str, float]] = {}
    for corpus in FULLWAY_DATASETS:
        valid = data[corpus]["valid"]
        q = emb(corpus, valid.texts)
        for k in SHOTS:
            row = cells.setdefault(f"{corpus}/{k}", {})
            for c in C_GRID:
                _fit(clf, emb, corpus, data[corpus][f"train_{k}"], head="linear", head_c=c, intent_names=True)
                table = clf.table
                pred = table.logits(q, table.similarities(q)).argmax(-1)
                row[str(c)] = round(100 * float((pred == _gold(clf, valid.intents)).mean()), 2)
    mean = {str(c): round(float(np.mean([cells[k][str(c)] for k in cells])), 3) for c in C_GRID}
    best = max(mean.values())
    chosen = min(c for c in C_GRID if mean[str(c)] >= best - C_TIE)
    return {"grid": list(C_GRID), "cells": cells, "mean": mean, "chosen": chosen}


def fallback_threshold(clf: IntentClassifier, emb: Embeddings, data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for names in (False, True):
        per: dict[str, float] = {}
        for corpus in FULLWAY_DATASETS:
            first: dict[str, str] = {}
            for text, intent in zip(data[corpus]["train_5"].texts, data[corpus]["train_5"].intents):
                first.setdefault(intent, text)
            one_shot = IntentSet.from_pairs([(t, i) for i, t in first.items()])
            # the prototype OOS score does not depend on the head: the prototype head spares 1-shot L-BFGS fits
            _fit(clf, emb, corpus, one_shot, head="prototype", intent_names=names)
            q = emb(corpus, data[corpus]["valid"].texts)
            scores = clf.table.oos_scores(q, clf.table.similarities(q))
            per[corpus] = round(float(np.quantile(scores, FALLBACK_QUANTILE)), 4)
        mean = float(np.mean(list(per.values())))
        key = "names_on" if names else "names_off"
        out[key] = {"per_corpus": per, "mean": round(mean, 4), "rounded_down": math.floor(mean * 100) / 100}
    out["chosen"] = out["names_off"]["rounded_down"]
    out["rule"] = "names_off (how all-MiniLM-L6-v2's 0.30 was set)"
    return out


def in_scope_recall(clf: IntentClassifier, emb: Embeddings, data: dict[str, Any], c: float) -> dict[str, Any]:
    valid = data["clinc150"]["valid_oos"]
    texts = valid.texts + valid.oos_texts
    q = emb("clinc150", texts)
    n_in, n_oos = len(valid.texts), len(valid.oos_texts)
    gold = valid.intents + [DEFAULT_OOS_LABEL] * n_oos
    repeat = round(MIXED_OOS_SHARE / (1 - MIXED_OOS_SHARE) * n_in / n_oos)
    rows: dict[str, dict[str, float]] = {}
    for target in RECALL_GRID + RECALL_BEYOND:
        support = data["clinc150"]["train_10"]
        _fit(clf, emb, "clinc150", support, head="linear", head_c=c, intent_names=True, in_scope_recall=target)
        predictions = clf.decide(texts, clf.table, q, top_k=1)
        pred = [p.intent.name for p in predictions]
        r = score_predictions(gold, pred, DEFAULT_OOS_LABEL)
        mixed = score_predictions(
            gold + gold[n_in:] * (repeat - 1), pred + pred[n_in:] * (repeat - 1), DEFAULT_OOS_LABEL
        )
        kept = float(np.mean([not p.is_oos for p in predictions[:n_in]]))
        rows[str(target)] = {
            "threshold": round(clf.threshold, 4),
            "in_scope_kept": round(100 * kept, 2),
            "in_scope_accuracy": round(100 * (r.in_scope_accuracy or 0.0), 2),
            "oos_recall": round(100 * (r.oos_recall or 0.0), 2),
            "oos_precision": round(100 * (r.oos_precision or 0.0), 2),
            "oos_f1": round(100 * (r.oos_f1 or 0.0), 2),
            "mcc": round(100 * r.mcc, 2),
            "mcc_mixed": round(100 * mixed.mcc, 2),
        }
    chosen = max(RECALL_GRID, key=lambda t: rows[str(t)]["mcc"])
    return {
        "grid": list(RECALL_GRID),
        "beyond_grid": list(RECALL_BEYOND),
        "head_c": c,
        "mixed_oos_share": round(repeat * n_oos / (n_in + repeat * n_oos), 4),
        "rows": rows,
        "chosen": chosen,
    }


def _nll(logits: np.ndarray, gold: np.ndarray) -> float:
    return -float(np.mean(log_softmax(logits)[np.arange(len(gold)), gold]))


def scale(clf: IntentClassifier, emb: Embeddings, data: dict[str, Any]) -> dict[str, Any]:
    fine = [float(s) for s in np.arange(2.0, 100.5, 0.5)]
    nll: dict[str, dict[str, float]] = {}
    fine_nll = np.zeros(len(fine))
    for corpus in FULLWAY_DATASETS:
        _fit(clf, emb, corpus, data[corpus]["train_10"], head="prototype", intent_names=True)
        valid = data[corpus]["valid"]
        q = emb(corpus, valid.texts)
        table, gold = clf.table, _gold(clf, valid.intents)
        sims = table.similarities(q)
        nll[corpus] = {str(s): round(_nll(sims * s, gold), 4) for s in SCALE_GRID}
        fine_nll += np.array([_nll(sims * s, gold) for s in fine]) / len(FULLWAY_DATASETS)
    mean = {str(s): round(float(np.mean([nll[k][str(s)] for k in nll])), 4) for s in SCALE_GRID}
    chosen = min(SCALE_GRID, key=lambda s: mean[str(s)])
    return {
        "grid": list(SCALE_GRID),
        "nll": nll,
        "mean": mean,
        "chosen": chosen,
        "continuous_optimum": fine[int(fine_nll.argmin())],
    }


def _table(title: str, columns: list[str], rows: list[tuple[str, list[Any]]]) -> None:
    print(f"\n{title}")
    width = max(len(name) for name, _ in rows)
    print(" " * width + "".join(f"{c:>10}" for c in columns))
    for name, values in rows:
        print(f"{name:<{width}}" + "".join(f"{v:>10}" for v in values))


def show(report: dict[str, Any]) -> None:
    hc = report["head_c"]
    cs = [str(c) for c in hc["grid"]]
    rows = [(cell, [v[c] for c in cs]) for cell, v in hc["cells"].items()] + [("mean", [hc["mean"][c] for c in cs])]
    _table(f"head_c: valid top-1 % by C (chosen {hc['chosen']:g})", [f"C={float(c):g}" for c in cs], rows)
    fb = report["fallback_threshold"]
    rows = [
        (k, [*fb[k]["per_corpus"].values(), fb[k]["mean"], fb[k]["rounded_down"]]) for k in ("names_off", "names_on")
    ]
    _table(
        f"fallback_threshold: 5% quantile of best 1-shot cosine (chosen {fb['chosen']})",
        [*FULLWAY_DATASETS, "mean", "floor"],
        rows,
    )
    ir = report["in_scope_recall"]
    keys = ["threshold", "in_scope_kept", "in_scope_accuracy", "oos_recall", "oos_precision", "oos_f1", "mcc"]
    keys.append("mcc_mixed")
    beyond = {str(t) for t in ir["beyond_grid"]}
    rows = [(t + ("*" if t in beyond else ""), [ir["rows"][t][k] for k in keys]) for t in ir["rows"]]
    title = f"in_scope_recall: CLINC150 valid+oos_valid, train_10, C={ir['head_c']:g} (chosen {ir['chosen']})"
    mixed = f"mcc@{100 * ir['mixed_oos_share']:.0f}%"
    _table(title, ["thr", "kept", "in_acc", "oos_rec", "oos_prec", "oos_f1", "mcc", mixed], rows)
    print("(* beyond the grid, not chosen from; mcc@N%: OOS rows repeated to N% of the rows, not chosen from)")
    sc = report["scale"]
    ss = [str(s) for s in sc["grid"]]
    rows = [(corpus, [v[s] for s in ss]) for corpus, v in sc["nll"].items()] + [("mean", [sc["mean"][s] for s in ss])]
    title = (
        f"scale: prototype-head NLL, train_10 (chosen {sc['chosen']:g}; 0.5-step optimum {sc['continuous_optimum']:g})"
    )
    _table(title, [f"s={float(s):g}" for s in ss], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="minilm", help="a registered base: minilm or mpnet")
    parser.add_argument("--data-dir", default="../shared/datasets")
    parser.add_argument("--out", type=Path, required=True, help="where the JSON of every measurement goes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--cache", type=Path, default=Path("/tmp/fewintent-valid-embeddings"), help="embedding cache ('' = none)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    corpora = Corpora(args.data_dir)
    clf = IntentClassifier.unfitted(base=args.base, adapter="none", device="cpu")
    emb = Embeddings(clf, args.cache if str(args.cache) not in ("", ".") else None)
    data: dict[str, Any] = {}
    for corpus in FULLWAY_DATASETS:
        splits = {"valid": corpora.labelled(corpus, "valid")}
        splits.update({f"train_{k}": corpora.support(corpus, f"train_{k}") for k in SHOTS})
        if corpus == "clinc150":
            splits["valid_oos"] = corpora.labelled(corpus, "valid", "oos_valid")
        data[corpus] = splits
        emb.load(corpus, [t for s in splits.values() for t in s.texts + s.oos_texts])
    report: dict[str, Any] = {"base": clf.encoder.name, "encoder_sha256": clf.encoder.sha256, "adapter": "none"}
    report["fewintent"] = str(Path(fewintent.__file__).parent)
    report["registry_constants"] = {k: getattr(clf.config, k) for k in CONSTANTS}
    report["head_c"] = head_c(clf, emb, data)
    report["fallback_threshold"] = fallback_threshold(clf, emb, data)
    report["in_scope_recall"] = in_scope_recall(clf, emb, data, report["head_c"]["chosen"])
    report["scale"] = scale(clf, emb, data)
    report["chosen"] = {k: report[k]["chosen"] for k in CONSTANTS}
    report["wall_s"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    show(report)
    print(f"\nchosen: {json.dumps(report['chosen'])}  ({report['wall_s']} s; {args.out})")


if __name__ == "__main__":
    main()

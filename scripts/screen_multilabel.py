"""The training-fold screen behind the multi-label head's recipe (``fewintent.heads.onevsrest``).

NLU++ has no validation split and every fold is a test fold in some split, so a recipe is chosen by
cross-validation *inside* each split's training folds: the training messages (those with no intent included) are
cut into 5 internal folds, each recipe is fitted on four (the intents' names always in) and predicts the fifth, and
micro-F1 is pooled over the five. The test folds are never read. Embeddings come from the encoder and adapter that
``fewintent adapt`` would use (``--base``), computed once and cached in ``--cache``.

Recipes (comma list): ``default`` (the head as shipped), ``no-oos-rows`` (messages with no intent left out of the
head's rows, as before 41feba2) and ``ownN`` (an intent with N or more positive examples gets its own cut, chosen
for its own F1; fewer share the micro-F1 cut, the rule before this screen). The mean over the four cells
(domain x setting) decides.

    python scripts/screen_multilabel.py --recipes default,no-oos-rows,own4,own16 --splits 4
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fewintent.bench.multilabel import DOMAINS, SETTINGS, splits
from fewintent.data.intentset import name_example
from fewintent.heads import onevsrest
from fewintent.heads.onevsrest import OneVsRestHead


def embeddings(data_dir: Path, base: str, cache: Path) -> dict[str, np.ndarray]:
    if cache.is_file():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    from fewintent.model.adapting import Trainer

    clf = Trainer(head="onevsrest", base=base).unfitted()
    out = {}
    for domain in DOMAINS:
        rows = read(data_dir, domain)
        labels = sorted({x for r in rows for x in r["intents"]})
        out[domain] = clf.encode([r["text"] for r in rows])
        out[domain + "_names"] = clf.encode([name_example(x) or x for x in labels])
    np.savez(cache, **out)  # type: ignore[arg-type]
    return out


def read(data_dir: Path, domain: str) -> list[dict]:
    return [json.loads(line) for line in (data_dir / "nlupp" / f"{domain}.jsonl").read_text().splitlines() if line]


def own_cuts(minimum: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The rule before the screen: an intent's own best-F1 cut once it has ``minimum`` positives."""
    grid = np.linspace(0.05, 0.95, 19)

    def choose(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
        passed = probs[None] >= grid[:, None, None]
        truth = y[None].astype(bool)
        tp, fp, fn = ((passed & truth).sum(1), (passed & ~truth).sum(1), (~passed & truth).sum(1))
        f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12)
        micro = 2 * tp.sum(1) / np.maximum(2 * tp.sum(1) + fp.sum(1) + fn.sum(1), 1e-12)
        return np.where(y.sum(0) >= minimum, grid[np.argmax(f1, axis=0)], grid[int(np.argmax(micro))])

    return choose


def fit_predict(recipe: str, x: np.ndarray, y: np.ndarray, names: np.ndarray, xt: np.ndarray) -> np.ndarray:
    if recipe == "no-oos-rows":
        x, y = x[y.any(1)], y[y.any(1)]
    xa = np.concatenate([x, names]).astype(np.float32)
    ya = np.concatenate([y, np.eye(len(names), dtype=bool)])
    messages = np.arange(len(xa)) < len(x)
    shipped = onevsrest.choose_thresholds
    m = re.fullmatch(r"own(\d+)", recipe)
    onevsrest.choose_thresholds = own_cuts(int(m.group(1))) if m else shipped  # type: ignore[assignment]
    try:
        head = OneVsRestHead.fit(xa, ya, ya.shape[1], None, None, messages)  # type: ignore[arg-type]
    finally:
        onevsrest.choose_thresholds = shipped  # type: ignore[assignment]
    return head.logits(xt.astype(np.float32), None) >= 0  # type: ignore[arg-type]


def micro_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp, fp, fn = (pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()
    return float(2 * tp / max(2 * tp + fp + fn, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    ap.add_argument("--base", default="minilm")
    ap.add_argument("--recipes", default="default,no-oos-rows")
    ap.add_argument("--splits", type=int, default=4, help="the first N splits of each cell")
    ap.add_argument("--cache", type=Path, default=None, help="embedding cache (.npz; default: nlupp-<base>.npz)")
    a = ap.parse_args()
    emb = embeddings(a.data_dir, a.base, a.cache or Path(f"nlupp-{a.base}.npz"))
    means: dict[str, list[float]] = {}
    for domain in DOMAINS:
        rows = read(a.data_dir, domain)
        labels = sorted({x for r in rows for x in r["intents"]})
        y = np.array([[label in r["intents"] for label in labels] for r in rows])
        fold = np.array([r["fold"] for r in rows])
        for setting in SETTINGS:
            for recipe in a.recipes.split(","):
                start, scores = time.time(), []
                for train in splits(setting)[: a.splits]:
                    idx = np.flatnonzero(np.isin(fold, train))
                    inner = np.random.default_rng(1).permutation(len(idx)) % 5
                    pred = np.zeros((len(idx), len(labels)), bool)
                    for f in range(5):
                        fit, held = idx[inner != f], idx[inner == f]
                        pred[inner == f] = fit_predict(recipe, emb[domain][fit], y[fit], emb[domain + "_names"],
                                                       emb[domain][held])  # fmt: skip
                    scores.append(micro_f1(pred, y[idx]))
                means.setdefault(recipe, []).append(float(np.mean(scores)))
                print(f"{domain} {setting}-fold {recipe}: internal micro-F1 {100 * np.mean(scores):.2f} "
                      f"({time.time() - start:.0f}s)", flush=True)  # fmt: skip
    for recipe, values in means.items():
        print(f"{recipe}: mean of the four cells {100 * np.mean(values):.2f}")


if __name__ == "__main__":
    main()

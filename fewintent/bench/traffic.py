"""The ``discovery`` protocol: improving a bot from its traffic (``fewintent discover`` and ``evaluate --cv``).

- Discovery: adapt on CLINC150 ``train_10`` restricted to 100 of its 150 intents (every third intent in sorted
  order is left out: 50 unseen), run ``discover`` on ``test`` (all 150 intents) + ``oos_test``; count the unseen
  intents that come back as a cluster with purity >= 0.8 and >= 5 messages; NMI / ARI on the unseen intents'
  messages (a message not in any cluster counts as a cluster of its own).
- What to label next: BANKING77 ``train_5`` plus 2 messages per intent from the rest of ``train``, chosen by
  ``discover``'s ``to_label`` ranking or at random (5 seeds); ``test`` accuracy of each.
- Cross-validation: ``evaluate --cv 5`` on BANKING77 ``train_10`` against the real ``test`` accuracy.

Every model goes through the product's code (``IntentClassifier``), with the leave-one-out adapter.
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np

from fewintent.bench.context import BenchContext, Skip
from fewintent.bench.methods import PRODUCT_METHOD, ProductMethod, build_method
from fewintent.bench.metrics import mean_ci95
from fewintent.bench.progress import Tracker
from fewintent.bench.rows import Rows, ok_rows
from fewintent.model import IntentClassifier
from fewintent.model.crossval import cross_validate
from fewintent.model.discovery import discover, rank_to_label

SEEDS = 5


def _classifier(ctx: BenchContext, dataset: str) -> IntentClassifier | Skip:
    """The product default (linear head, the leave-one-out adapter) on the run's shared encoder."""
    method = build_method(ctx, PRODUCT_METHOD, "fullway", dataset)
    if not isinstance(method, ProductMethod):
        return method if isinstance(method, Skip) else Skip(f"{method.name} is not the product")
    return IntentClassifier(ctx.pool.get(method.adapter_dir)[1], **method.settings)


def discovery(ctx: BenchContext) -> None:
    with Tracker("discovery", 3) as tracker:
        if ctx.config.wants("clinc150"):
            _write(ctx, tracker, _unseen_intents(ctx))
        tracker.advance()
        if ctx.config.wants("banking77"):
            _write(ctx, tracker, _to_label(ctx))
            tracker.advance()
            _write(ctx, tracker, _cross_validation(ctx))
        tracker.advance()


def _write(ctx: BenchContext, tracker: Tracker, row: dict[str, Any] | Skip) -> None:
    if isinstance(row, Skip):
        return
    ctx.store.add(row)
    shown = {k: v for k, v in row.items() if k not in ("protocol", "run")}
    tracker.log(f"discovery: {shown}")


def _unseen_intents(ctx: BenchContext) -> dict[str, Any] | Skip:
    clf = _classifier(ctx, "clinc150")
    if isinstance(clf, Skip):
        return clf
    train = ctx.corpora.support("clinc150", "train_10")
    unseen = set(sorted(train.labels)[2::3])
    clf.fit(train.subset([label for label in train.labels if label not in unseen]))
    test = ctx.corpora.labelled("clinc150", "test", "oos_test")
    texts = test.texts + test.oos_texts
    gold = dict(zip(test.texts, test.intents)) | {t: "oos" for t in test.oos_texts}
    start = time.perf_counter()
    result = discover(clf, texts)
    seconds = time.perf_counter() - start
    found = set()
    for c in result.clusters:
        labels = [gold[t] for t in c.texts]
        top = max(set(labels), key=labels.count)
        if top in unseen and labels.count(top) / len(labels) >= 0.8 and len(labels) >= 5:
            found.add(top)
    cluster_of = {t: c.id for c in result.clusters for t in c.texts}
    unseen_texts = [t for t, i in zip(test.texts, test.intents) if i in unseen]
    predicted = [cluster_of.get(t, -1 - k) for k, t in enumerate(unseen_texts)]
    truth = [gold[t] for t in unseen_texts]
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {
        "protocol": "discovery",
        "dataset": "clinc150",
        "method": "discover",
        "setting": "100 of 150 intents seen (every third intent in sorted order unseen)",
        "unseen_intents": len(unseen),
        "unseen_found": len(found),
        "nmi": round(float(normalized_mutual_info_score(truth, predicted)), 4),
        "ari": round(float(adjusted_rand_score(truth, predicted)), 4),
        "clusters": len(result.clusters),
        "messages": len(texts),
        "out_of_scope": result.n_out_of_scope,
        "seconds": round(seconds, 2),
    }


def _accuracy(clf: IntentClassifier, labels: list[str], emb: np.ndarray, y: np.ndarray, test: Any) -> float:
    """Top-1 accuracy on ``test`` (texts, embeddings, gold intents) of the classifier fitted on these embeddings."""
    clf.fit_embeddings(labels, emb, y)
    decided = clf.decide(test[0], clf.table, test[1], top_k=1)
    return float(np.mean([p.intent_ranking[0].name == g for p, g in zip(decided, test[2])]))


def _to_label(ctx: BenchContext) -> dict[str, Any] | Skip:
    clf = _classifier(ctx, "banking77")
    if isinstance(clf, Skip):
        return clf
    base = ctx.corpora.support("banking77", "train_5")
    seen = set(base.texts)
    pool = [r for r in ctx.corpora.rows("banking77", "train") if r.text not in seen]
    test = ctx.corpora.labelled("banking77", "test")
    labels = base.labels
    index = {label: i for i, label in enumerate(labels)}
    encode = lambda texts: np.asarray(clf.encoder.encode(texts), dtype=np.float32)  # noqa: E731
    base_emb, pool_emb, test_emb = encode(base.texts), encode([r.text for r in pool]), encode(test.texts)
    base_y = np.array([index[i] for i in base.intents])
    pool_y = np.array([index[r.intent] for r in pool])
    scored = (test.texts, test_emb, test.intents)
    start_acc = _accuracy(clf, labels, base_emb, base_y, scored)
    budget = 2 * len(labels)
    predictions = clf.decide([r.text for r in pool], clf.table, pool_emb, top_k=2)
    position = {r.text: k for k, r in enumerate(pool)}
    in_scope = [k for k, p in enumerate(predictions) if not p.is_oos]
    chosen = [position[c.text] for c in rank_to_label(pool_emb, predictions, in_scope, budget)]

    def accuracy_with(picked: list[int]) -> float:
        emb = np.concatenate([base_emb, pool_emb[picked]])
        return _accuracy(clf, labels, emb, np.concatenate([base_y, pool_y[picked]]), scored)

    ranked = accuracy_with(chosen)
    randoms = [accuracy_with(random.Random(seed).sample(range(len(pool)), budget)) for seed in range(SEEDS)]
    mean, ci = mean_ci95(randoms)
    return {
        "protocol": "discovery",
        "dataset": "banking77",
        "method": "to_label",
        "setting": f"train_5 + {budget} messages from train ({len(chosen)} ranked)",
        "accuracy_before": round(start_acc, 4),
        "accuracy_ranked": round(ranked, 4),
        "accuracy_random": round(mean, 4),
        "accuracy_random_ci95": round(ci, 4),
        "random_seeds": SEEDS,
    }


def _cross_validation(ctx: BenchContext) -> dict[str, Any] | Skip:
    clf = _classifier(ctx, "banking77")
    if isinstance(clf, Skip):
        return clf
    train = ctx.corpora.support("banking77", "train_10")
    cv = cross_validate(clf, train, 5)
    test = ctx.corpora.labelled("banking77", "test")
    predictions = clf.predict(test.texts, top_k=1)  # cross_validate leaves it fitted on the whole file
    top1 = np.mean([p.intent_ranking[0].name == g for p, g in zip(predictions, test.intents)])
    with_fallback = np.mean([p.intent.name == g for p, g in zip(predictions, test.intents)])
    return {
        "protocol": "discovery",
        "dataset": "banking77",
        "method": "evaluate --cv 5",
        "setting": "train_10",
        "cv_top1_accuracy": round(cv.top1_accuracy, 4),
        "test_top1_accuracy": round(float(top1), 4),
        "cv_accuracy_with_fallback": round(cv.accuracy, 4),
        "test_accuracy_with_fallback": round(float(with_fallback), 4),
    }


def discovery_table(rows: Rows) -> list[str]:
    ok = {r.method.partition("@")[0]: r.extra for r in ok_rows(rows, "discovery")}
    lines = []
    if "discover" in ok:
        r = ok["discover"]
        lines.append(
            f"- **Unseen intents** (CLINC150, {r['setting']}; `discover` on `test` + `oos_test`, "
            f"{r['messages']} messages, {r['seconds']:.1f} s): **{r['unseen_found']} of {r['unseen_intents']}** "
            f"found as a cluster with purity >= 0.8 and >= 5 messages; NMI {r['nmi']:.3f}, ARI {r['ari']:.3f} on "
            f"the unseen intents' messages; {r['clusters']} clusters from {r['out_of_scope']} out-of-scope answers."
        )
    if "to_label" in ok:
        r = ok["to_label"]
        lines.append(
            f"- **What to label next** (BANKING77 {r['setting']}): test accuracy {100 * r['accuracy_before']:.2f} "
            f"-> **{100 * r['accuracy_ranked']:.2f}** with the `to_label` ranking vs "
            f"{100 * r['accuracy_random']:.2f} ± {100 * r['accuracy_random_ci95']:.2f} at random "
            f"({r['random_seeds']} seeds)."
        )
    if "evaluate --cv 5" in ok:
        r = ok["evaluate --cv 5"]
        lines.append(
            f"- **Cross-validation** (`evaluate --cv 5` on BANKING77 {r['setting']}): top-1 "
            f"{100 * r['cv_top1_accuracy']:.2f} vs {100 * r['test_top1_accuracy']:.2f} on the real `test`; with "
            f"the fallback {100 * r['cv_accuracy_with_fallback']:.2f} vs "
            f"{100 * r['test_accuracy_with_fallback']:.2f}."
        )
    return lines

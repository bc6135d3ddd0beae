"""The ``multilabel`` protocol: NLU++ (Casanueva et al. 2022), messages with any number of intents, in the paper's
low-data settings and on every split of each.

- **20-fold**: adapt on fold ``k``, score the other 19 folds (``k`` = 0..19);
- **10-fold**: adapt on folds ``2j`` and ``2j+1``, score the other 18 (``j`` = 0..9).

Both domains (banking, hotels), every split; one row per (domain, setting, method) with micro-F1 (over
(message, intent) pairs) as the mean over splits ± its 95% CI, macro-F1, exact match and adapt seconds, each the
mean over splits, and the per-split micro-F1 in split order (paired comparisons). A message with no intent is out
of scope: it trains as such and is right when nothing is named. Nothing is chosen on the test folds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import numpy as np

from fewintent.bench.context import BenchContext, Skip
from fewintent.bench.methods import Method, Outcome, build_method, method_class
from fewintent.bench.metrics import mean_ci95
from fewintent.bench.progress import Tracker
from fewintent.bench.results import ResultRow
from fewintent.data.intentset import IntentSet
from fewintent.data.io import jsonl_records
from fewintent.errors import FewIntentError
from fewintent.model.evaluation import score_label_sets

NLUPP = "nlupp"
DOMAINS = ("banking", "hotels")
FOLDS = 20
SETTINGS = (20, 10)
"""``20``: train on one fold; ``10``: train on two consecutive folds."""

Sample = tuple[str, tuple[str, ...], int]
"""One NLU++ message: text, intents (empty: none), fold."""


def setting_name(setting: int) -> str:
    return f"{setting}-fold"


def splits(setting: int) -> list[tuple[int, ...]]:
    """The training folds of each split (the rest are its test folds), in the paper's order."""
    if setting == 20:
        return [(k,) for k in range(FOLDS)]
    if setting == 10:
        return [(2 * j, 2 * j + 1) for j in range(FOLDS // 2)]
    raise FewIntentError(f"NLU++ has 20-fold and 10-fold settings, not {setting}-fold")


def read_domain(ctx: BenchContext, domain: str) -> list[Sample]:
    """Every message of one NLU++ domain (``nlupp/<domain>.jsonl``: text, intents, fold)."""
    path = ctx.corpora.path(NLUPP, domain)
    if not path.is_file():
        raise FewIntentError(f"{path}: NLU++ not found; get it with `fewintent datasets download {NLUPP}`")
    out = []
    for line, obj in jsonl_records(path):
        intents, fold = obj.get("intents"), obj.get("fold")
        if not isinstance(obj.get("text"), str) or not isinstance(intents, list) or not isinstance(fold, int):
            raise FewIntentError(f"{path}:{line}: expected text, intents (a list) and fold (0-{FOLDS - 1})")
        out.append((obj["text"], tuple(intents), fold))
    return out


def split_data(samples: list[Sample], train_folds: tuple[int, ...], source: str) -> tuple[IntentSet, list[Sample]]:
    """The training folds as the product reads them (messages with no intent as out-of-scope examples) and the
    test folds' messages as they are."""
    train = [(text, list(intents)) for text, intents, fold in samples if fold in train_folds]
    support = IntentSet.from_pairs(cast(Any, train), source=source)  # a list of intents per text: multi-label
    return support, [s for s in samples if s[2] not in train_folds]


def _cells(ctx: BenchContext) -> Iterator[tuple[str, int]]:
    """The (domain, setting) cells asked for: ``--datasets nlupp`` (or none) is both domains, ``nlupp:hotels`` one."""
    asked = ctx.config.datasets
    for domain in DOMAINS:
        if not asked or NLUPP in asked or f"{NLUPP}:{domain}" in asked:
            yield from ((domain, setting) for setting in SETTINGS)


def _summary(values: list[Any]) -> Any:
    """One value when every split gave the same, else the list in split order."""
    return values[0] if all(v == values[0] for v in values) else values


def multilabel(ctx: BenchContext) -> None:
    """Every method on every split of the four NLU++ cells (domain x setting); one row per cell and method."""
    cfg = ctx.config
    cells = list(_cells(ctx))
    names = cfg.multilabel_methods

    def planned(name: str, setting: int) -> int:
        n = len(splits(setting))
        return min(n, 2) if cfg.quick else method_class(name).episodes(name, ctx, n)

    with Tracker("multilabel", sum(planned(m, s) for _, s in cells for m in names)) as tracker:
        for domain, setting in cells:
            samples = read_domain(ctx, domain)
            labels = sorted({x for _, intents, _ in samples for x in intents})
            dataset = f"{NLUPP}:{domain}:{setting_name(setting)}"
            base = ResultRow(protocol="multilabel", dataset=dataset, ways=len(labels))
            base = base.but(train_folds_per_split=FOLDS // setting, test_folds_per_split=FOLDS - FOLDS // setting)
            for name in names:
                if ctx.already_done(base.but(method=name)):
                    tracker.advance(planned(name, setting))
                    continue
                method = build_method(ctx, name, "multilabel", NLUPP)
                if isinstance(method, Method):
                    first = split_data(samples, splits(setting)[0], dataset)[0]
                    reason = method.refuse(first)
                    method = method if reason is None else Skip(reason)
                if isinstance(method, Skip):
                    row = base.but(method=name, status="skipped", note=method.reason)
                    ctx.store.add(row)
                    ctx.note_skip(row)
                    tracker.log(f"{dataset} {name}: skipped ({method.reason})")
                    tracker.advance(planned(name, setting))
                    continue
                key = method.warm_key()
                if key is not None:  # encode the domain's messages in one pass
                    ctx.pool.warm(key, [text for text, _, _ in samples])
                run = splits(setting)[: planned(name, setting)]
                row = base.but(**_measure(method, samples, labels, run, dataset, tracker))
                if len(run) < len(splits(setting)):
                    flag = "quick" if cfg.quick else method.budget_flag
                    row = row.but(note=f"first {len(run)} of the {len(splits(setting))} splits (--{flag})")
                ctx.store.add(row)
                tracker.log(
                    f"{dataset} {name}: micro-F1 {row.get('micro_f1'):.4f} ± {row.ci95:.4f}, macro-F1 "
                    f"{row.macro_f1:.4f}, exact {row.get('exact_match'):.4f}, adapt {row.adapt_seconds:.2f}s"
                )


def _measure(
    method: Method,
    samples: list[Sample],
    labels: list[str],
    run: list[tuple[int, ...]],
    dataset: str,
    tracker: Tracker,
) -> dict[str, Any]:
    micro, macro, exact, seconds, n_support, n_test = [], [], [], [], [], []
    extras: dict[str, list[Any]] = {}
    for train_folds in run:
        support, test = split_data(samples, train_folds, f"{dataset} folds {'+'.join(map(str, train_folds))}")
        outcome: Outcome = method.run(support, {"test": [text for text, _, _ in test]})
        if outcome.intent_sets is None:
            raise FewIntentError(f"{method.name} gives no intent sets: not a multi-label method")
        scored = score_label_sets([set(s[1]) for s in test], [set(p) for p in outcome.intent_sets["test"]], labels)
        micro.append(scored.micro_f1)
        macro.append(scored.macro_f1)
        exact.append(scored.exact_match)
        seconds.append(outcome.adapt_seconds)
        n_support.append(len(support))
        n_test.append(len(test))
        for k, v in outcome.extra.items():
            extras.setdefault(k, []).append(round(v, 3) if isinstance(v, float) else v)
        tracker.advance()
    mean, ci = mean_ci95(micro)
    return {
        "method": method.name,
        "steps": method.steps,
        "splits": len(run),
        "adapt_seconds": round(float(np.mean(seconds)), 3),
        "micro_f1": round(mean, 4),
        "ci95": round(ci, 4),
        "macro_f1": round(float(np.mean(macro)), 4),
        "exact_match": round(float(np.mean(exact)), 4),
        "split_micro_f1": [round(x, 4) for x in micro],
        "n_support": round(float(np.mean(n_support)), 1),
        "n_test": round(float(np.mean(n_test)), 1),
        **{k: _summary(v) for k, v in extras.items()},
    }

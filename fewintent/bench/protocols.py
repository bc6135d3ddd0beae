"""The accuracy protocols: full-way K-shot, episodic held-out domains, out-of-scope detection.

Each protocol writes one row per (dataset, setting, method) as soon as it is done. A method that cannot run
(adapter missing, SetFit not installed, support too large for the SetFit budget) writes a ``skipped`` row
with the reason, which a later ``--append`` run replaces.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fewintent.bench.context import BenchContext, Skip
from fewintent.bench.data import FULLWAY_DATASETS, HELDOUT_DOMAINS
from fewintent.bench.episodes import EpisodeSpec, build_episodes, episodes_fingerprint
from fewintent.bench.methods import Method, Outcome, build_method, method_class
from fewintent.bench.metrics import auroc, mean_ci95, precision_recall_curve
from fewintent.bench.progress import Tracker
from fewintent.bench.results import ResultRow
from fewintent.bench.shares import (
    LOG_OBJECTIVES,
    OOS_SHARES,
    ORACLE_OBJECTIVES,
    SHARE_SOURCES,
    Sample,
    best_mcc_threshold,
    logs_threshold,
    no_classifier,
    share_samples,
    subsampled,
)
from fewintent.data.intentset import DEFAULT_OOS_LABEL, IntentSet
from fewintent.errors import FewIntentError
from fewintent.model.calibration import (
    best_f1_threshold,
    calibrate_threshold,
    recall_threshold,
)
from fewintent.model.evaluation import macro_f1, multiclass_mcc, score_predictions


def _rnd(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else round(float(x), digits)


def _write(ctx: BenchContext, tracker: Tracker, row: ResultRow) -> None:
    ctx.store.add(row)
    if row.skipped:
        ctx.note_skip(row)
        tracker.log(f"{row.dataset} {row.shots}-shot {row.method}: skipped ({row.note})")
        return
    shown = f"acc {row.accuracy:.4f}" if row.accuracy is not None else ""
    if row.ci95 is not None:
        shown += f" ± {row.ci95:.4f}"
    if row.oos_f1 is not None:
        shown += f" oos-f1 {row.oos_f1:.4f}"
    where = f"{row.dataset} {row.ways or ''}{'-way ' if row.ways else ''}{row.shots}-shot"
    share = f", {row.oos_share:.0%} OOS" if row.oos_share is not None else ""
    source = f" ({row.threshold_source} threshold{share})" if row.threshold_source else ""
    tracker.log(f"{where} {row.method}{source}: {shown} adapt {row.adapt_seconds or 0:.2f}s")


def limit(ctx: BenchContext, support: IntentSet, *evaluation: IntentSet) -> tuple[IntentSet, ...]:
    """Quick mode: the first ``max_intents`` intents and at most ``eval_limit`` rows of each kind (no-op otherwise)."""
    cfg = ctx.config
    if cfg.max_intents is None:
        return (support, *evaluation)
    keep = set(sorted(support.labels)[: cfg.max_intents])
    n = cfg.eval_limit or 10**9
    out = [support.subset(sorted(keep))]
    for data in evaluation:
        pairs = [(t, i) for t, i in zip(data.texts, data.intents) if i in keep][:n]
        out.append(IntentSet([t for t, _ in pairs], [i for _, i in pairs], data.oos_texts[:n], data.oos_label))
    return tuple(out)


def _skip_row(base: ResultRow, method: str, reason: str) -> ResultRow:
    return base.but(method=method, status="skipped", note=reason)


def _method_fields(method: Method, outcome: Outcome) -> dict[str, Any]:
    fields = {"method": method.name, "steps": method.steps, "adapt_seconds": _rnd(outcome.adapt_seconds, 3)}
    return {**fields, **{k: (_rnd(v, 3) if isinstance(v, float) else v) for k, v in outcome.extra.items()}}


def _built(ctx: BenchContext, name: str, protocol: str, dataset: str, support: IntentSet) -> Method | Skip:
    """The method, or a Skip when it cannot run here (no adapter, or over its budget on this support set)."""
    method = build_method(ctx, name, protocol, dataset)
    reason = None if isinstance(method, Skip) else method.refuse(support)
    return method if reason is None else Skip(reason)


# ------------------------------------------------------------------------------------------------ fullway
def fullway(ctx: BenchContext) -> None:
    """Every intent at once: adapt on ``train_K``, score on ``test``; closed-set top-1 accuracy and more."""
    cfg = ctx.config
    cells = [(d, k) for d in FULLWAY_DATASETS if cfg.wants(d) for k in cfg.shots]
    with Tracker("fullway", len(cells) * len(cfg.methods)) as tracker:
        for dataset, shots in cells:
            support, test = limit(
                ctx, ctx.corpora.support(dataset, f"train_{shots}"), ctx.corpora.labelled(dataset, "test")
            )
            base = ResultRow(protocol="fullway", dataset=dataset, shots=shots, ways=len(support.labels))
            for name in cfg.methods:
                if ctx.already_done(base.but(method=name)):
                    tracker.advance()
                    continue
                method = _built(ctx, name, "fullway", dataset, support)
                if isinstance(method, Skip):
                    _write(ctx, tracker, _skip_row(base, name, method.reason))
                    tracker.advance()
                    continue
                outcome = method.run(support, {"test": test.texts})
                row = base.but(**_method_fields(method, outcome), **_closed_set(outcome, "test", test))
                row = row.but(n_support=len(support.texts), n_test=len(test.texts))
                if outcome.support_threshold is not None:
                    row = row.but(fallback_accuracy=_fallback_accuracy(outcome, "test", test))
                _write(ctx, tracker, row)
                ctx.artifacts[("fullway", dataset, shots, name)] = method  # e.g. SetFit's model, for speed
                tracker.advance()


def _closed_set(outcome: Outcome, key: str, data: IntentSet) -> dict[str, Any]:
    pred = [outcome.labels[i] for i in outcome.scores[key].argmax(1)]
    gold = data.intents
    return {
        "accuracy": _rnd(float(np.mean([g == p for g, p in zip(gold, pred)]))),
        "macro_f1": _rnd(macro_f1(gold, pred)),
        "mcc": _rnd(multiclass_mcc(gold, pred)),
    }


def _fallback_accuracy(outcome: Outcome, key: str, data: IntentSet) -> float | None:
    """Accuracy with the support-calibrated OOS fallback on: a rejected in-scope query counts as wrong."""
    scores = outcome.scores[key]
    pred = np.where(outcome.oos_score(key) >= (outcome.support_threshold or 0.0), scores.argmax(1), -1)
    return _rnd(float(np.mean([p >= 0 and outcome.labels[p] == g for p, g in zip(pred, data.intents)])))


# ------------------------------------------------------------------------------------------------ episodic
def episode_specs(ctx: BenchContext) -> list[EpisodeSpec]:
    cfg = ctx.config
    return [EpisodeSpec(w, k, cfg.queries) for w in cfg.episode_ways for k in cfg.episode_shots]


def episodic(ctx: BenchContext) -> None:
    """N-way K-shot episodes on held-out domains; every method sees the same episodes (same fingerprint)."""
    cfg = ctx.config
    plans = []
    for dataset, domains in HELDOUT_DOMAINS.items():
        if not cfg.wants(dataset):
            continue
        train, test = ctx.corpora.rows(dataset, "train"), ctx.corpora.rows(dataset, "test")
        for spec in episode_specs(ctx):
            episodes = build_episodes(train, test, domains, spec, cfg.episodes, cfg.seed)
            plans.append((dataset, domains, spec, episodes))

    def planned(name: str, n: int) -> int:
        """Methods that train on every episode may run on the first N episodes only (CPU budget)."""
        return method_class(name).episodes(name, ctx, n)

    total = sum(planned(m, len(e)) for *_, e in plans for m in cfg.methods)
    with Tracker("episodic", total) as tracker:
        for dataset, domains, spec, episodes in plans:
            fingerprint = episodes_fingerprint(episodes)
            base = ResultRow(protocol="episodic", dataset=dataset, domains=list(domains), shots=spec.shots)
            base = base.but(ways=spec.ways, queries_per_intent=spec.queries, support_split="train")
            base = base.but(query_split="test", episodes_sha256=fingerprint)
            for name in cfg.methods:
                if ctx.already_done(base.but(method=name)):
                    tracker.advance(planned(name, len(episodes)))
                    continue
                method = build_method(ctx, name, "episodic", dataset, heldout=domains)
                if isinstance(method, Skip):
                    _write(ctx, tracker, _skip_row(base, name, method.reason))
                    tracker.advance(planned(name, len(episodes)))
                    continue
                run = episodes[: planned(name, len(episodes))]
                key = method.warm_key()
                if key is not None:  # encode every text of the episodes in one pass
                    ctx.pool.warm(key, [t for ep in run for t, _ in (*ep.support, *ep.query)])
                accs: list[float] = []
                seconds: list[float] = []
                per_domain: dict[str, list[float]] = {}
                for ep in run:
                    outcome = method.run(ep.support_set(), {"query": ep.query_texts})
                    pred = outcome.scores["query"].argmax(1)
                    acc = float(np.mean([outcome.labels[p] == g for p, g in zip(pred, ep.query_intents)]))
                    accs.append(acc)
                    seconds.append(outcome.adapt_seconds)
                    per_domain.setdefault(ep.domain, []).append(acc)
                    tracker.advance()
                mean, ci = mean_ci95(accs)
                row = base.but(method=name, steps=method.steps, episodes=len(run), accuracy=_rnd(mean))
                row = row.but(ci95=_rnd(ci), adapt_seconds=_rnd(float(np.mean(seconds)), 4))
                row = row.but(per_domain={d: _rnd(float(np.mean(a))) for d, a in per_domain.items()})
                row = row.but(episode_accuracy=[round(a, 4) for a in accs])  # in episode order: paired comparisons
                if len(run) < len(episodes):
                    row = row.but(note=f"first {len(run)} of the {len(episodes)} episodes (--{method.budget_flag})")
                _write(ctx, tracker, row)


# ------------------------------------------------------------------------------------------------ oos
def oos_settings(ctx: BenchContext) -> list[dict[str, Any]]:
    """Each OOS benchmark: support, validation (in scope + OOS) and test (in scope + OOS) splits, and whether it also
    gets rows at stated out-of-scope shares (CLINC150, BANKING77-OOS in-domain)."""
    out = []
    if ctx.config.wants_oos("clinc150"):
        out.append(
            {
                "dataset": "clinc150",
                "support": ("clinc150", "train_10"),
                "valid": ("clinc150", ("valid", "oos_valid")),
                "test": ("clinc150", ("test", "oos_test")),
                "shares": True,
            }
        )
    if ctx.config.wants_oos("banking77_oos"):
        for kind in ("id", "ood"):
            out.append(
                {
                    "dataset": f"banking77_oos:{kind}",
                    "support": ("banking77_oos", "train@10"),
                    "valid": ("banking77_oos", ("valid", f"{kind}_oos_valid")),
                    "test": ("banking77_oos", ("test", f"{kind}_oos_test")),
                    "shares": kind == "id",
                }
            )
    return out


def _support_of(ctx: BenchContext, source: tuple[str, str]) -> IntentSet:
    dataset, split = source
    if "@" in split:  # no standard few-shot file: a seeded sample per intent
        name, k = split.split("@")
        return ctx.corpora.sample_per_intent(dataset, name, int(k), ctx.config.seed)
    return ctx.corpora.support(dataset, split)


VALID_OBJECTIVES = {"valid": "youden", "valid-f1": "f1", "valid-recall": "recall"}
"""Threshold source -> the :func:`choose_threshold` objective it cuts ``valid`` with."""
THRESHOLD_SOURCES = ("support", *VALID_OBJECTIVES)
"""Where an OOS row's threshold comes from, in the order written (``--missing-only`` checks the last)."""


def choose_threshold(outcome: Outcome, valid: IntentSet, objective: str, in_scope_recall: float) -> float:
    """The cut on the OOS score from ``valid``'s in-scope and OOS rows: Youden's J (in-scope kept + OOS caught),
    ``f1``: the best OOS F1 on the file (what ``fewintent calibrate`` does on a file with OOS rows), or
    ``recall``: keep the product's target share of ``valid``'s in-scope rows (``calibrate --objective recall``).

    Only the ``valid`` query set is read here: test scores never reach a threshold.
    """
    top = outcome.oos_score("valid")
    n_in = len(valid.texts)
    if objective == "f1":
        return best_f1_threshold(top[:n_in], top[n_in:])
    if objective == "recall":
        return recall_threshold(top[:n_in], in_scope_recall)
    return calibrate_threshold(top[:n_in], top[n_in:], in_scope_recall=in_scope_recall)


def oos(ctx: BenchContext) -> None:
    """OOS recall/precision/F1, AUROC, in-scope accuracy and MCC with thresholds from support or ``valid``; where
    the setting asks, the same at stated out-of-scope shares of the test set (:func:`share_rows`)."""
    cfg = ctx.config
    settings = oos_settings(ctx)
    recall = ctx.base.constants.in_scope_recall
    with Tracker("oos", len(settings) * len(cfg.methods)) as tracker:
        for s in settings:
            support, valid, test = limit(
                ctx,
                _support_of(ctx, s["support"]),
                ctx.corpora.labelled(s["valid"][0], *s["valid"][1]),
                ctx.corpora.labelled(s["test"][0], *s["test"][1]),
            )
            base = ResultRow(protocol="oos", dataset=s["dataset"], shots=10, ways=len(support.labels))
            base = base.but(support_split=s["support"][1], valid_splits=list(s["valid"][1]))
            base = base.but(test_splits=list(s["test"][1]))
            # quick mode's slices are too small to subsample, and to calibrate from (the product wants 200 messages)
            with_shares = s["shares"] and not cfg.quick
            samples = (share_samples(test, cfg.seed), share_samples(valid, cfg.seed)) if with_shares else None
            for name in cfg.methods:
                done = ctx.already_done(base.but(method=name, threshold_source=THRESHOLD_SOURCES[-1]))
                last_share = base.but(method=name, threshold_source=SHARE_SOURCES[-1], oos_share=OOS_SHARES[-1])
                shares = None if samples is None or ctx.already_done(last_share) else samples
                if done and shares is None:
                    tracker.advance()
                    continue
                method = _built(ctx, name, "oos", s["dataset"], support)
                if isinstance(method, Skip):
                    skipped = [] if done else [base.but(threshold_source=source) for source in THRESHOLD_SOURCES]
                    if shares is not None:
                        skipped += [
                            base.but(threshold_source=x, oos_share=f) for f in OOS_SHARES for x in SHARE_SOURCES
                        ]
                    for row in skipped:
                        _write(ctx, tracker, _skip_row(row, name, method.reason))
                    tracker.advance()
                    continue
                queries = {"valid": valid.texts + valid.oos_texts, "test": test.texts + test.oos_texts}
                outcome = method.run(support, queries, want_threshold=True)  # scored once, for every share too
                if not done:
                    thresholds = {
                        "support": outcome.support_threshold,
                        **{
                            src: choose_threshold(outcome, valid, objective, recall)
                            for src, objective in VALID_OBJECTIVES.items()
                        },
                    }
                    for source, threshold in thresholds.items():
                        row = base.but(**_method_fields(method, outcome), threshold_source=source)
                        if threshold is None:
                            why = f"{name} has no support-only OOS calibration; see its valid-threshold row"
                            _write(ctx, tracker, row.but(status="skipped", note=why))
                            continue
                        metrics = oos_metrics(outcome, test, threshold, curve=source == "valid")
                        _write(ctx, tracker, row.but(**metrics))
                if shares is not None:
                    fields = _method_fields(method, outcome)
                    for row in share_rows(base.but(**fields), outcome, valid, test, shares):
                        _write(ctx, tracker, row)
                tracker.advance()


def oos_metrics(outcome: Outcome, test: IntentSet, threshold: float, *, curve: bool = False) -> dict[str, Any]:
    scores = outcome.scores["test"]
    n_in = len(test.texts)
    top, best = outcome.oos_score("test"), scores.argmax(1)
    pred = [DEFAULT_OOS_LABEL if t < threshold else outcome.labels[b] for t, b in zip(top, best)]
    gold = test.intents + [DEFAULT_OOS_LABEL] * len(test.oos_texts)
    r = score_predictions(gold, pred, DEFAULT_OOS_LABEL, top1=[outcome.labels[b] for b in best])
    # OOS is the positive class; a lower best score means "more out of scope"
    out: dict[str, Any] = {
        "threshold": _rnd(threshold),
        "score_kind": outcome.score_kind,
        "accuracy": _rnd(r.accuracy),
        "in_scope_accuracy": _rnd(r.in_scope_accuracy),
        "top1_accuracy": _rnd(r.top1_accuracy),
        "oos_recall": _rnd(r.oos_recall),
        "oos_precision": _rnd(r.oos_precision),
        "oos_f1": _rnd(r.oos_f1),
        "auroc": _rnd(auroc(-top[n_in:], -top[:n_in])),
        "mcc": _rnd(r.mcc),
        "macro_f1": _rnd(r.macro_f1),
        "n_test": len(gold),
        "n_test_oos": len(test.oos_texts),
    }
    if curve:
        out["pr_curve"] = precision_recall_curve(-top[n_in:], -top[:n_in])
    return out


def share_rows(
    base: ResultRow, outcome: Outcome, valid: IntentSet, test: IntentSet, samples: tuple[list[Sample], list[Sample]]
) -> list[ResultRow]:
    """Rows at each out-of-scope share: ``test`` subsampled to it (``samples[0]``), scored with the support-only
    threshold, with ``calibrate --logs`` on unlabelled messages from ``valid`` subsampled to the same share
    (``samples[1]``: never a test text; objective MCC, the product's default, or F1), and with the oracle's cut,
    the best MCC or OOS F1 on that test subsample itself (a ceiling, not a method: ``ceiling`` is true).

    Every score comes from ``outcome`` (its ``valid`` and ``test`` query sets), indexed by the subsample."""
    name, clf = base.method, outcome.classifier
    texts = valid.texts + valid.oos_texts
    out = []
    for tested, logged in zip(*samples):
        row = base.but(oos_share=tested.share)
        data, rows = tested.of(test), tested.rows(len(test.texts))
        scored = subsampled(outcome, "test", rows)
        found: dict[str, tuple[float | None, dict[str, Any]]] = {}  # source -> threshold (None: why) and fields
        why = f"{name} has no support-only OOS calibration"
        found["support"] = (outcome.support_threshold, {"note": why} if outcome.support_threshold is None else {})
        logs = logged.rows(len(valid.texts))
        for source, objective in LOG_OBJECTIVES.items():
            fields: dict[str, Any] = {"objective": objective, "logs_splits": base.get("valid_splits")}
            if clf is None:
                found[source] = (None, {**fields, "note": no_classifier(name)})
                continue
            where = f"{base.dataset} valid logs at {tested.share:.0%} out of scope"
            try:
                got = logs_threshold(clf, [texts[i] for i in logs], outcome.oos_score("valid")[logs], objective, where)
            except FewIntentError as e:
                found[source] = (None, {**fields, "note": str(e)})
                continue
            fields.update(estimated_share=_rnd(got.estimated_share), n_logs=got.n_logs)
            found[source] = (got.threshold, fields)
        top, n_in = scored.oos_score("test"), len(data.texts)
        top1 = [outcome.labels[b] for b in scored.scores["test"].argmax(1)]
        gold = data.intents + [DEFAULT_OOS_LABEL] * len(data.oos_texts)
        for source, objective in ORACLE_OBJECTIVES.items():
            cut = (
                best_f1_threshold(top[:n_in], top[n_in:])
                if objective == "f1"
                else best_mcc_threshold(top, top1, gold, DEFAULT_OOS_LABEL)
            )
            found[source] = (cut, {"objective": objective, "ceiling": True})
        for source in SHARE_SOURCES:
            threshold, fields = found[source]
            shown = row.but(threshold_source=source, **fields)
            if threshold is None:
                out.append(shown.but(status="skipped"))
                continue
            out.append(shown.but(**oos_metrics(scored, data, threshold)))
    return out

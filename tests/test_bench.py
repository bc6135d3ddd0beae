"""Benchmark: statistics, episodes, adapter choice, threshold hygiene on tiny models; quick mode on the real MiniLM."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_encoder

from fewintent.bench import BenchConfig, EpisodeSpec, build_episodes, episodes_fingerprint, mean_ci95, run_benchmark
from fewintent.bench.config import parse_adapter_options, resolve_adapter_for
from fewintent.bench.context import BenchContext, Skip
from fewintent.bench.data import Corpora, Row
from fewintent.bench.encoders import EncoderPool
from fewintent.bench.methods import METHODS, LogRegMethod, Method, Outcome, ProductMethod, SpeedPlan, build_method
from fewintent.bench.metrics import auroc, precision_recall_curve
from fewintent.bench.results import ResultRow, ResultStore, load_rows
from fewintent.encoder.lora import attach_lora, save_adapter
from fewintent.errors import FewIntentError

FROZEN_PROTOTYPE = "frozen-prototype"
# --------------------------------------------------------------------------- a tiny corpus on disk

DOMAINS = {
    "clinc150": {"banking": 6, "credit_cards": 5, "travel": 5, "work": 5},
    "hwu64": {"alarm": 3, "iot": 6, "music": 3, "weather": 4},
    "banking77": {"banking": 8},
}


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_corpus(root: Path, test_tag: str = "") -> Path:
    """JSONL files shaped like the shared datasets (domains, train_K, valid/test, OOS splits), a few rows each."""
    rng = random.Random(0)
    for dataset, domains in DOMAINS.items():
        splits: dict[str, list[dict]] = {s: [] for s in ("train", "valid", "test", "train_5", "train_10")}
        for domain, n in domains.items():
            for k in range(n):
                intent = f"{domain}_{k}"
                for split, count in (("train", 12), ("valid", 4), ("test", 6)):
                    for i in range(count):
                        words = " ".join(rng.choice(["please", "now", "my", "the", "can you"]) for _ in range(3))
                        tag = test_tag if split == "test" else ""
                        splits[split].append(
                            {"text": f"{domain} {k} {split} {i} {words}{tag}", "intent": intent, "domain": domain}
                        )
        for shots in (5, 10):
            seen: dict[str, int] = {}
            for r in splits["train"]:
                if seen.get(r["intent"], 0) < shots:
                    splits[f"train_{shots}"].append(r)
                    seen[r["intent"]] = seen.get(r["intent"], 0) + 1
        for split, rows in splits.items():
            _write(root / dataset / f"{split}.jsonl", rows)
        if dataset == "clinc150":
            for split in ("oos_train", "oos_valid", "oos_test"):
                tag = test_tag if split == "oos_test" else ""
                oos = [
                    {"text": f"something else {i} {split}{tag}", "intent": "oos", "domain": "oos"} for i in range(8)
                ]
                _write(root / dataset / f"{split}.jsonl", oos)
    return root


def tiny_config(root: Path, out: Path, **kw) -> BenchConfig:  # type: ignore[no-untyped-def]
    defaults = dict(
        data_dir=root,
        out=out,
        methods=(FROZEN_PROTOTYPE, "frozen-logreg"),
        episodes=6,
        queries=3,
        speed_queries=3,
        speed_batch=8,
        adapter_dirs=(),
    )
    defaults.update(kw)
    return BenchConfig(**defaults)  # type: ignore[arg-type]


def tiny_context(cfg: BenchConfig, run_id: str = "t") -> BenchContext:
    store = ResultStore(cfg.out, {"id": run_id}, append=cfg.append)
    return BenchContext(cfg, Corpora(cfg.data_dir), EncoderPool(make_tiny_encoder), store)


# --------------------------------------------------------------------------- statistics


def test_ci95_of_a_known_sample():
    mean, ci = mean_ci95([0.0, 1.0, 0.0, 1.0])
    assert mean == 0.5
    # sample std of [0, 1, 0, 1] is sqrt(1/3); 1.96 * sqrt(1/3) / sqrt(4)
    assert ci == pytest.approx(1.959964 * (1 / 3) ** 0.5 / 2, rel=1e-6)
    assert mean_ci95([0.7] * 600) == (pytest.approx(0.7), 0.0)
    with pytest.raises(ValueError):
        mean_ci95([])


def test_auroc_and_pr_curve():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 200).round(1), rng.normal(0, 1, 300).round(1)  # rounded: plenty of ties
    expected = roc_auc_score(np.r_[np.ones(200), np.zeros(300)], np.r_[pos, neg])
    assert auroc(pos, neg) == pytest.approx(expected)
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    curve = precision_recall_curve(pos, neg)
    assert curve["recall"][-1] == 1.0 and len(curve["recall"]) <= 101
    assert curve["precision"][-1] == pytest.approx(200 / 500)


# --------------------------------------------------------------------------- episodes


def _rows(n_intents: int = 6, per: int = 10, split: str = "train") -> list[Row]:
    return [Row(f"d {i} {split} {j}", f"i{i}", "d") for i in range(n_intents) for j in range(per)]


def test_episodes_are_deterministic_and_honour_the_spec():
    spec = EpisodeSpec(5, 2, queries=3)
    a = build_episodes(_rows(), _rows(split="test"), ["d"], spec, 20, seed=1)
    b = build_episodes(_rows(), _rows(split="test"), ["d"], spec, 20, seed=1)
    c = build_episodes(_rows(), _rows(split="test"), ["d"], spec, 20, seed=2)
    assert episodes_fingerprint(a) == episodes_fingerprint(b) != episodes_fingerprint(c)
    for ep in a:
        assert len(ep.labels) == 5 and len(ep.support) == 10 and len(ep.query) == 15
        assert not {t for t, _ in ep.support} & {t for t, _ in ep.query}
        assert all(" train " in t for t, _ in ep.support) and all(" test " in t for t, _ in ep.query)
    all_way = build_episodes(_rows(), _rows(split="test"), ["d"], EpisodeSpec("all", 1), 3, seed=0)
    assert all(len(ep.labels) == 6 for ep in all_way)


def test_domains_too_small_for_the_ways_are_skipped():
    rows = _rows(3) + [Row(f"e {i} {j}", f"e{i}", "e") for i in range(6) for j in range(10)]
    eps = build_episodes(rows, rows, ["d", "e"], EpisodeSpec(5, 1), 10, seed=0)
    assert {ep.domain for ep in eps} == {"e"}
    with pytest.raises(FewIntentError):
        build_episodes(_rows(3), _rows(3), ["d"], EpisodeSpec(5, 1), 10, seed=0)


def test_every_method_gets_identical_episodes(tmp_path, monkeypatch):
    root = make_corpus(tmp_path / "data")
    cfg = tiny_config(root, tmp_path / "out", protocols=("episodic",), episode_shots=(1,), episode_ways=(5, "all"))
    ctx = tiny_context(cfg)
    seen: dict[str, list] = {}
    for cls in (ProductMethod, LogRegMethod):
        original = cls.run

        def spy(self, support, queries, *, want_threshold=False, _orig=original):  # type: ignore[no-untyped-def]
            seen.setdefault(self.name, []).append((list(zip(support.texts, support.intents)), queries))
            return _orig(self, support, queries, want_threshold=want_threshold)

        monkeypatch.setattr(cls, "run", spy)
    from fewintent.bench.protocols import episodic

    episodic(ctx)
    assert seen[FROZEN_PROTOTYPE] == seen["frozen-logreg"] and len(seen[FROZEN_PROTOTYPE]) == 2 * 2 * 6
    rows = [r for r in load_rows(cfg.out / "results.json") if r["protocol"] == "episodic"]
    by_setting: dict[tuple, set] = {}
    for r in rows:
        by_setting.setdefault((r["dataset"], r["ways"], r["shots"]), set()).add(r["episodes_sha256"])
        assert 0.0 <= r["accuracy"] <= 1.0 and r["ci95"] >= 0 and r["episodes"] == 6
        assert r["accuracy"] == pytest.approx(np.mean(r["episode_accuracy"]), abs=1e-4)
    assert len(by_setting) == 4 and all(len(v) == 1 for v in by_setting.values())


# --------------------------------------------------------------------------- adapters


def _tiny_adapter(directory: Path, **meta) -> Path:  # type: ignore[no-untyped-def]
    enc = make_tiny_encoder()
    settings = attach_lora(enc)
    save_adapter(enc, directory, settings, meta)
    return directory


def test_leave_one_out_adapter_is_the_one_chosen(tmp_path):
    shipped = tmp_path / "adapters"
    for ds in ("banking77", "clinc150", "hwu64"):
        _tiny_adapter(shipped / f"minilm-meta-no-{ds}", algorithm="protonet", excluded_datasets=[ds])
    cfg = tiny_config(make_corpus(tmp_path / "data"), tmp_path / "out", adapter_dirs=(shipped,))
    ctx = tiny_context(cfg)
    for dataset, expected in [
        ("banking77", "minilm-meta-no-banking77"),
        ("clinc150", "minilm-meta-no-clinc150"),
        ("hwu64", "minilm-meta-no-hwu64"),
        ("banking77_oos:id", "minilm-meta-no-banking77"),  # built from BANKING77
    ]:
        method = build_method(ctx, "fewintent-protonet", "fullway", dataset)
        assert isinstance(method, ProductMethod) and method.adapter_dir is not None
        assert method.adapter_dir.name == expected
    # the shipped adapters here are protonet ones: fomaml rows are skipped, saying what to pass
    skip = build_method(ctx, "fewintent-fomaml", "fullway", "hwu64")
    assert isinstance(skip, Skip) and "protonet, not fomaml" in skip.reason
    # no such adapter: a skip with the option to use
    cfg.adapters = parse_adapter_options(["fomaml=" + str(tmp_path / "nowhere-{dataset}")])
    skip = build_method(ctx, "fewintent-fomaml-steps5", "fullway", "hwu64")
    assert isinstance(skip, Skip) and "--adapter fomaml=" in skip.reason and "nowhere-hwu64" in skip.reason
    steps = ProductMethod("fewintent-fomaml-steps5-oos-nearest", ctx)
    assert (steps.steps, steps.head, steps.oos_score, steps.tune) == (5, "prototype", "nearest", False)
    tuned = ProductMethod("frozen-linear-tune", ctx)
    assert (tuned.algorithm, tuned.head, tuned.tune, tuned.intent_names) == (None, "linear", True, True)
    cfg.steps_episodes = 3  # --steps-episodes: the methods that train on every support set run the first N
    assert [ProductMethod.episodes(n, ctx, 20) for n in ("fewintent-onevsrest-tune", "fewintent-linear")] == [3, 20]
    for bad in ("fewintent-linear-steps5", "fewintent-fomaml-steps5-tune", "frozen-linear-oos-nope", "bert"):
        with pytest.raises(FewIntentError):
            build_method(ctx, bad, "fullway", "hwu64")


def test_an_adapter_that_saw_the_dataset_is_refused(tmp_path):
    leaky = _tiny_adapter(tmp_path / "leaky", algorithm="protonet", training={"datasets": ["clinc150", "hwu64"]})
    cfg = tiny_config(make_corpus(tmp_path / "data"), tmp_path / "out")
    cfg.adapters = parse_adapter_options([f"protonet={leaky}"])
    skip = build_method(tiny_context(cfg), "fewintent-protonet", "fullway", "clinc150")
    assert isinstance(skip, Skip) and "meta-trained on clinc150" in skip.reason
    # held-out domains: an adapter trained on all of HWU64 cannot score HWU64's held-out domains
    cfg.adapters = parse_adapter_options([f"episodic:protonet={leaky}"])
    skip = build_method(tiny_context(cfg), "fewintent-protonet", "episodic", "hwu64", ("alarm", "iot", "music"))
    assert isinstance(skip, Skip) and "alarm" in skip.reason
    honest = _tiny_adapter(
        tmp_path / "honest",
        algorithm="protonet",
        training={"datasets": ["clinc150", "hwu64"]},
        excluded_domains=["hwu64:alarm", "hwu64:iot", "hwu64:music"],
    )
    cfg.adapters = parse_adapter_options([f"episodic:protonet={honest}"])
    ok = build_method(tiny_context(cfg), "fewintent-protonet", "episodic", "hwu64", ("alarm", "iot", "music"))
    assert isinstance(ok, ProductMethod)
    path, _ = resolve_adapter_for(str(honest), "hwu64", ())
    assert path == honest


# --------------------------------------------------------------------------- thresholds never see test


def _oos_rows(tmp_path: Path, tag: str, monkeypatch) -> tuple[list[dict], list[int]]:  # type: ignore[no-untyped-def]
    import fewintent.bench.methods as methods_mod
    import fewintent.bench.protocols as protocols_mod

    sizes: list[int] = []

    def spy(in_scores, oos_scores=None, **kw):  # type: ignore[no-untyped-def]
        sizes.append(len(in_scores) + (0 if oos_scores is None else len(oos_scores)))
        return real(in_scores, oos_scores, **kw)

    real = protocols_mod.calibrate_threshold
    monkeypatch.setattr(protocols_mod, "calibrate_threshold", spy)
    monkeypatch.setattr(methods_mod, "calibrate_threshold", spy)
    root = make_corpus(tmp_path / f"data{tag}", test_tag=tag)
    cfg = tiny_config(root, tmp_path / f"out{tag}", protocols=("oos",), datasets=("clinc150",))
    from fewintent.bench.protocols import oos

    oos(tiny_context(cfg))
    rows = [r for r in load_rows(cfg.out / "results.json") if r.get("status") != "skipped"]
    return [r for r in rows if r.get("oos_share") is None], sizes  # the share rows have tests of their own


def test_no_test_row_ever_reaches_a_threshold(tmp_path, monkeypatch):
    rows_a, sizes = _oos_rows(tmp_path, "", monkeypatch)
    rows_b, _ = _oos_rows(tmp_path, " changed test text", monkeypatch)
    # the support set has 21 intents x 10 = 210 texts, valid 21 x 4 + 8 OOS = 92, test 21 x 6 + 8 = 134
    assert sizes and 134 not in sizes and set(sizes) <= {210, 92}
    key = lambda r: (r["dataset"], r["method"], r["threshold_source"])  # noqa: E731
    a, b = {key(r): r["threshold"] for r in rows_a}, {key(r): r["threshold"] for r in rows_b}
    assert a == b and len(a) == 8  # 2 methods x (support, valid, valid-f1, valid-recall)
    assert {r["threshold_source"] for r in rows_a} == {"support", "valid", "valid-f1", "valid-recall"}
    assert all(0 <= r["auroc"] <= 1 for r in rows_a)


# --------------------------------------------------------------------------- oos at stated shares


def make_share_corpus(root: Path, test_tag: str = "") -> Path:
    """:func:`make_corpus` with OOS pools and ``valid`` splits large enough for every share (the product calibrates
    from 200 logged messages or more), and a BANKING77-OOS with its in-domain and out-of-domain OOS splits."""
    make_corpus(root, test_tag)
    rng = random.Random(2)

    def text(*parts: object) -> str:
        return " ".join(map(str, parts)) + " " + " ".join(rng.choice(["please", "now", "my", "can you"]) for _ in "ab")

    clinc = sorted({json.loads(x)["intent"] for x in (root / "clinc150" / "valid.jsonl").open()})
    valid = [{"text": text(label, "valid", i), "intent": label} for label in clinc for i in range(12)]
    _write(root / "clinc150" / "valid.jsonl", valid)  # 21 intents x 12 = 252
    _write(
        root / "clinc150" / "oos_valid.jsonl",
        [{"text": text("elsewhere valid", i), "intent": "oos"} for i in range(150)],
    )
    oos_test = [{"text": text("elsewhere test", i) + test_tag, "intent": "oos"} for i in range(60)]
    _write(root / "clinc150" / "oos_test.jsonl", oos_test)
    labels = [f"bank_{k}" for k in range(8)]
    splits = {"train": 12, "valid": 30, "test": 6}
    for split, n in splits.items():
        tag = test_tag if split == "test" else ""
        _write(
            root / "banking77_oos" / f"{split}.jsonl",
            [{"text": text(label, split, i) + tag, "intent": label} for label in labels for i in range(n)],
        )
    for kind, n in (("id", 150), ("ood", 20)):
        for split in ("valid", "test"):
            tag = test_tag if split == "test" else ""
            rows = [
                {"text": text(kind, "oos", split, i) + tag, "intent": "oos"}
                for i in range(n if split == "valid" else 40)
            ]
            _write(root / "banking77_oos" / f"{kind}_oos_{split}.jsonl", rows)
    return root


def test_share_counts_and_samples():
    from fewintent.bench.shares import share_counts, share_samples
    from fewintent.data import IntentSet

    assert share_counts(4500, 1000, 0.1) == (4500, 500)  # CLINC150 test: the OOS part subsampled
    assert share_counts(4500, 1000, 0.3) == (2333, 1000)  # too few OOS rows: the in-scope part instead
    assert share_counts(2000, 1080, 0.5) == (1080, 1080)
    data = IntentSet(
        [f"in {i}" for i in range(300)], [f"i{i % 7}" for i in range(300)], [f"out {i}" for i in range(90)]
    )
    samples = share_samples(data, seed=3)
    assert [s.share for s in samples] == [0.1, 0.3, 0.5]
    for s in samples:
        part = s.of(data)
        n = len(part.texts) + len(part.oos_texts)
        assert abs(len(part.oos_texts) / n - s.share) <= 1 / n
        assert len(set(s.in_scope)) == len(s.in_scope) and len(set(s.oos)) == len(s.oos)
        assert [data.texts[i] for i in s.in_scope] == part.texts  # rows() indexes texts + oos_texts
        assert s.rows(300).tolist() == [*s.in_scope.tolist(), *(300 + s.oos).tolist()]
    again, other = share_samples(data, seed=3), share_samples(data, seed=4)
    assert all(np.array_equal(a.oos, b.oos) and np.array_equal(a.in_scope, b.in_scope) for a, b in zip(samples, again))
    assert not np.array_equal(samples[0].oos, other[0].oos)


def test_best_mcc_threshold_is_the_best_cut():
    from fewintent.bench.shares import best_mcc_threshold
    from fewintent.model.evaluation import multiclass_mcc

    rng = np.random.default_rng(0)
    gold = [rng.choice(["a", "b", "c", "oos"], p=[0.3, 0.2, 0.2, 0.3]) for _ in range(120)]
    top1 = [g if g != "oos" and rng.random() < 0.8 else rng.choice(["a", "b", "c"]) for g in gold]
    scores = np.array([rng.normal(0.3 if g == "oos" else 0.7, 0.2) for g in gold]).round(2)  # ties too

    def mcc(cut: float) -> float:
        return multiclass_mcc(gold, ["oos" if s < cut else t for s, t in zip(scores, top1)])

    cuts = np.r_[scores.min() - 1, np.unique(scores) + 1e-9, scores.max() + 1]
    best = best_mcc_threshold(scores, top1, gold, "oos")
    assert mcc(best) == pytest.approx(max(mcc(c) for c in cuts), abs=1e-12)


def _share_run(tmp_path: Path, tag: str, monkeypatch) -> tuple[BenchConfig, list[ResultRow], list[list[str]], list]:  # type: ignore[no-untyped-def]
    import fewintent.bench.shares as shares_mod
    from fewintent.bench.protocols import oos

    logged: list[list[str]] = []
    real = shares_mod.check_logs

    def spy(texts, source="logs"):  # type: ignore[no-untyped-def]
        logged.append(list(texts))
        return real(texts, source)

    monkeypatch.setattr(shares_mod, "check_logs", spy)
    runs: list = []
    original = ProductMethod.run

    def counted(self, support, queries, *, want_threshold=False):  # type: ignore[no-untyped-def]
        runs.append((self.name, len(support.labels)))
        return original(self, support, queries, want_threshold=want_threshold)

    monkeypatch.setattr(ProductMethod, "run", counted)
    root = make_share_corpus(tmp_path / f"data{tag}", test_tag=tag)
    methods = ("frozen-linear", "frozen-logreg")
    cfg = tiny_config(
        root,
        tmp_path / f"out{tag}",
        protocols=("oos",),
        datasets=("clinc150", "banking77_oos"),
        methods=methods,
        seed=5,
    )
    oos(tiny_context(cfg))
    return cfg, load_rows(cfg.out / "results.json"), logged, runs


def test_oos_rows_at_stated_shares(tmp_path, monkeypatch):
    """Each share's test subsample, the same for every method; logs only from valid; the oracle a ceiling on its own
    subsample; a method that is not the product writes skipped logs rows; each method scores its queries once."""
    from fewintent.bench.protocols import oos_settings
    from fewintent.bench.tables import oos_share_table, oos_table

    cfg, rows, logged, runs = _share_run(tmp_path, "", monkeypatch)
    shares = [r for r in rows if r.oos_share is not None]
    assert {r.dataset for r in shares} == {"clinc150", "banking77_oos:id"}  # not the out-of-domain OOS
    assert sorted(runs) == [("frozen-linear", 8), ("frozen-linear", 8), ("frozen-linear", 21)]  # once per setting
    cell = {(r.dataset, r.method, r.oos_share, r.threshold_source): r for r in shares}
    assert len(cell) == len(shares) == 2 * 2 * 3 * 5
    corpora = Corpora(cfg.data_dir)
    for dataset, share in [(d, f) for d in ("clinc150", "banking77_oos:id") for f in (0.1, 0.3, 0.5)]:
        got = {
            (m, src): cell[(dataset, m, share, src)]
            for m in cfg.methods
            for src in ("support", "logs", "logs-f1", "oracle", "oracle-f1")
        }
        measured = [r for r in got.values() if not r.skipped]
        # the same subsample for every method and threshold
        assert len({(r.get("n_test"), r.get("n_test_oos")) for r in measured}) == 1
        n, n_oos = measured[0].get("n_test"), measured[0].get("n_test_oos")
        assert abs(n_oos / n - share) <= 1 / n
        for m in cfg.methods:
            oracle, oracle_f1 = got[(m, "oracle")], got[(m, "oracle-f1")]
            assert oracle.get("ceiling") is True and oracle_f1.get("ceiling") is True
            for src in ("support", "logs", "logs-f1"):
                r = got[(m, src)]
                if not r.skipped:
                    assert oracle.mcc >= r.mcc - 1e-4 and oracle_f1.oos_f1 >= r.oos_f1 - 1e-4
        product = got[("frozen-linear", "logs")]
        assert not product.skipped and 0.0 <= product.get("estimated_share") <= 1.0
        assert product.get("n_logs") >= 200 and product.get("objective") == "mcc"
        assert got[("frozen-linear", "logs-f1")].get("objective") == "f1"
        for src in ("logs", "logs-f1"):
            skipped = got[("frozen-logreg", src)]
            assert skipped.skipped and "not the product's classifier" in (skipped.note or "")
        assert not got[("frozen-logreg", "support")].skipped  # its own support-only rule (5-fold)
    # logs: unlabelled valid messages (+ the valid OOS split) at the share, never a test text
    setting = {s["dataset"]: s for s in oos_settings(tiny_context(cfg))}
    test_texts = {
        t
        for s in setting.values()
        for d in [corpora.labelled(s["test"][0], *s["test"][1])]
        for t in d.texts + d.oos_texts
    }
    valid_texts = {
        t
        for s in setting.values()
        for d in [corpora.labelled(s["valid"][0], *s["valid"][1])]
        for t in d.texts + d.oos_texts
    }
    assert len(logged) == 2 * 3 * 2  # 2 settings x 3 shares x (logs, logs-f1), frozen-linear only
    assert all(set(texts) <= valid_texts and not set(texts) & test_texts for texts in logged)
    valid_oos = {t for s in setting.values() for t in corpora.labelled(s["valid"][0], *s["valid"][1]).oos_texts}
    for k, texts in enumerate(logged):  # settings in order, each share's logs twice (logs, logs-f1)
        share = (0.1, 0.3, 0.5)[k // 2 % 3]
        assert abs(sum(t in valid_oos for t in texts) / len(texts) - share) <= 1 / len(texts)
    # the existing oos rows and table are as they were: the share rows have their own table
    plain = [r for r in rows if r.oos_share is None and not r.skipped]
    assert len(oos_table(rows)) == 4 + len(plain)  # intro, blank, head, rule, one line a row
    table = "\n".join(oos_share_table(rows))
    assert "ceiling" in table and "| CLINC150 | `frozen-linear` | 30% |" in table


def test_missing_only_adds_share_rows_to_measured_settings(tmp_path, monkeypatch):
    """results.json from before the share rows: --append --missing-only adds them and keeps the whole-test rows; once
    both are there, nothing runs."""
    from fewintent.bench.protocols import oos

    root = make_share_corpus(tmp_path / "data")
    kw = dict(protocols=("oos",), datasets=("clinc150",), methods=("frozen-linear",))
    cfg = tiny_config(root, tmp_path / "out", **kw)
    oos(tiny_context(cfg))
    before = [r for r in load_rows(cfg.out / "results.json") if r.oos_share is None]
    ResultStore(cfg.out, {"id": "t"}, append=True)._write(before)
    again = tiny_config(root, cfg.out, append=True, missing_only=True, **kw)
    oos(tiny_context(again, "second"))
    rows = load_rows(cfg.out / "results.json")
    assert [r.to_dict() for r in rows if r.oos_share is None] == [r.to_dict() for r in before]
    assert len([r for r in rows if r.oos_share is not None and r.run == {"id": "second"}]) == 3 * 5
    calls: list[str] = []
    monkeypatch.setattr(ProductMethod, "run", lambda self, *a, **k: calls.append(self.name))
    oos(tiny_context(again, "third"))
    assert calls == []


def test_share_rows_in_the_report_and_the_headline():
    """report.md's share table has every method; the README headline the product default's only, on every base."""
    from fewintent.bench.report import headline
    from fewintent.bench.shares import SHARE_SOURCES
    from fewintent.bench.tables import oos_share_table

    cell = {"protocol": "oos", "dataset": "banking77_oos:id", "shots": 10, "oos_share": 0.3}
    rows = [
        {
            **cell,
            "base": base,
            "method": m,
            "threshold_source": src,
            "oos_f1": 0.5,
            "mcc": 0.6,
            "estimated_share": 0.25,
        }
        for base in ("minilm", "mpnet")
        for m in ("fewintent-linear", "frozen-linear")
        for src in SHARE_SOURCES
    ]
    rows[0] = {**rows[0], "oos_f1": 0.123}  # minilm fewintent-linear support-only
    table = oos_share_table(rows)
    assert len(table) == 4 + 4 and "a ceiling, not a method" in table[0]
    line = "| BANKING77-OOS (in-domain OOS) | `fewintent-linear` | 30% | 25.0% | 12.3 / 60.0 | 50.0 / 60.0 |"
    assert any(x.startswith(line) for x in table)
    shown = headline(rows, "x.png")
    assert "`fewintent-linear`" in shown and "`fewintent-linear@mpnet`" in shown and "`frozen-linear" not in shown
    assert "Out of scope at" not in headline([r for r in rows if r["method"] == "frozen-linear"], "x.png")


def test_share_thresholds_never_read_test(tmp_path, monkeypatch):
    """Changing every test text changes the test scores, not the support-only or logs thresholds."""
    _, a, _, _ = _share_run(tmp_path, "", monkeypatch)
    _, b, _, _ = _share_run(tmp_path, " changed test text", monkeypatch)
    key = lambda r: (r.dataset, r.method, r.oos_share, r.threshold_source)  # noqa: E731
    logs = ("support", "logs", "logs-f1")
    pick = lambda rows: {key(r): r.get("threshold") for r in rows if r.oos_share and r.threshold_source in logs}  # noqa: E731
    assert pick(a) == pick(b) and any(v is not None for v in pick(a).values())


# --------------------------------------------------------------------------- the product's head, results


@pytest.mark.parametrize("name", [FROZEN_PROTOTYPE, "frozen-linear", "frozen-linear-oos-mahalanobis"])
def test_bench_heads_match_the_classifier(name, tmp_path):
    """The benchmark's rows come from the product's own head: same rankings, OOS scores and threshold."""
    from fewintent.data import IntentSet
    from fewintent.model import IntentClassifier

    support = IntentSet.from_pairs([(f"{w} {i}", w) for w in ("alpha", "beta", "gamma") for i in range(4)])
    queries = ["alpha 9", "beta beta", "gamma ray", "delta"]
    method = ProductMethod(name, tiny_context(tiny_config(tmp_path, tmp_path / "out")))
    outcome = method.run(support, {"q": queries}, want_threshold=True)
    clf = IntentClassifier(make_tiny_encoder(), **method.settings).fit(support)
    assert outcome.extra["intent_names"] == (method.head == "linear")
    assert outcome.labels == clf.labels and outcome.extra["head"] == method.head
    assert np.allclose(outcome.oos_score("q"), [p.oos_score for p in clf.predict(queries)], atol=1e-4)
    assert np.allclose(outcome.scores["q"], clf.predict_proba(queries), atol=1e-4)
    ranked = [outcome.labels[i] for i in outcome.scores["q"].argmax(1)]
    assert ranked == [p.intent_ranking[0].name for p in clf.predict(queries)]
    assert outcome.support_threshold == pytest.approx(clf.threshold, abs=1e-6)
    assert outcome.classifier is not None and outcome.classifier.labels == clf.labels  # for calibrate --logs


def test_results_are_upserted_and_kept(tmp_path):
    store = ResultStore(tmp_path, {"id": "a"}, append=False)
    store.add({"protocol": "fullway", "dataset": "x", "shots": 5, "method": "m", "accuracy": 0.1})
    store.add({"protocol": "fullway", "dataset": "x", "shots": 10, "method": "m", "accuracy": 0.2})
    again = ResultStore(tmp_path, {"id": "b"}, append=True)
    again.add({"protocol": "fullway", "dataset": "x", "shots": 5, "method": "m", "accuracy": 0.3})
    rows = load_rows(tmp_path / "results.json")
    assert sorted((r["shots"], r["accuracy"], r["run"]["id"]) for r in rows) == [(5, 0.3, "b"), (10, 0.2, "a")]
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644
    fresh = ResultStore(tmp_path, {"id": "c"}, append=False)  # a fresh run starts anew at its first row
    fresh.add({"protocol": "fullway", "dataset": "y", "shots": 5, "method": "m", "accuracy": 0.4})
    assert [r["dataset"] for r in load_rows(tmp_path / "results.json")] == ["y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_every_row_names_its_base_and_two_bases_never_overwrite_each_other(tmp_path):
    cfg = tiny_config(
        make_corpus(tmp_path / "data"),
        tmp_path / "out",
        bases=("minilm", "mpnet"),
        protocols=("fullway",),
        datasets=("hwu64",),
        shots=(5,),
        methods=(FROZEN_PROTOTYPE, "fewintent-linear"),
    )
    run_benchmark(cfg, encoder_factory=make_tiny_encoder)
    rows = load_rows(tmp_path / "out" / "results.json")
    measured = {(r["base"], r["method"]) for r in rows if r.get("status") != "skipped"}
    assert measured == {("minilm", FROZEN_PROTOTYPE), ("mpnet", FROZEN_PROTOTYPE)}
    skipped = {r["base"]: r["note"] for r in rows if r.get("status") == "skipped"}
    assert "mpnet-meta-no-hwu64" in skipped["mpnet"]  # the base's own leave-out template
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"`{FROZEN_PROTOTYPE}@mpnet`" in report and f"`{FROZEN_PROTOTYPE}` |" in report
    with pytest.raises(FewIntentError, match="unknown base 'bert'"):
        run_benchmark(tiny_config(tmp_path / "data", tmp_path / "o2", bases=("bert",)))


# --------------------------------------------------------------------------- quick mode, real MiniLM


def test_quick_benchmark_end_to_end(datasets_dir, tmp_path):
    torch.manual_seed(0)
    out = tmp_path / "bench"
    cfg = BenchConfig(
        data_dir=datasets_dir,
        out=out,
        quick=True,
        methods=(FROZEN_PROTOTYPE, "frozen-logreg", "fewintent-protonet"),
        adapters=parse_adapter_options(["protonet=" + str(tmp_path / "no-adapter-{dataset}")]),
    )
    run_benchmark(cfg, argv=["fewintent", "benchmark", "--quick"])
    rows = load_rows(out / "results.json")
    done = [r for r in rows if r.get("status") != "skipped"]
    assert {r["protocol"] for r in done} == {"fullway", "episodic", "oos", "speed"}
    full = {r["method"]: r for r in done if r["protocol"] == "fullway"}
    assert full[FROZEN_PROTOTYPE]["accuracy"] > 0.5 and full["frozen-logreg"]["accuracy"] > 0.5  # 10 intents
    skipped = [r for r in rows if r.get("status") == "skipped"]
    assert skipped and all(r["method"] == "fewintent-protonet" and "--adapter" in r["note"] for r in skipped)
    assert all(r["run"]["seed"] == 0 and r["run"]["versions"]["torch"] for r in rows)
    speed = {r["method"]: r for r in done if r["protocol"] == "speed"}
    assert speed["raw-encoder"]["latency_p50_ms"] > 0 and speed[FROZEN_PROTOTYPE]["latency_ratio"] > 0
    for name in (
        "report.md",
        "headline.md",
        "accuracy_vs_shots.png",
        "oos_pr_curves.png",
        "adapt_time_vs_accuracy.png",
    ):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "CPFT" in report and "fewintent-protonet" in report and "Not measured" in report


def test_missing_only_fills_gaps_without_rerunning(tmp_path, monkeypatch):
    from fewintent.bench.protocols import fullway

    root = make_corpus(tmp_path / "data")
    cfg = tiny_config(root, tmp_path / "out", datasets=("banking77",), shots=(5,), methods=(FROZEN_PROTOTYPE,))
    fullway(tiny_context(cfg))
    calls: list[str] = []
    original = ProductMethod.run

    def spy(self, support, queries, *, want_threshold=False):  # type: ignore[no-untyped-def]
        calls.append(self.name)
        return original(self, support, queries, want_threshold=want_threshold)

    monkeypatch.setattr(ProductMethod, "run", spy)
    again = tiny_config(
        root,
        cfg.out,
        datasets=("banking77",),
        shots=(5, 10),
        methods=(FROZEN_PROTOTYPE,),
        append=True,
        missing_only=True,
    )
    fullway(tiny_context(again, "second"))
    assert calls == [FROZEN_PROTOTYPE]  # only the 10-shot cell was missing
    rows = load_rows(cfg.out / "results.json")
    assert sorted((r["shots"], r["run"]["id"]) for r in rows) == [(5, "t"), (10, "second")]


def test_discovery_protocol_rows_and_report(tmp_path):
    from fewintent.bench.traffic import discovery, discovery_table

    shipped = tmp_path / "adapters"
    for ds in ("banking77", "clinc150"):
        _tiny_adapter(shipped / f"minilm-meta-no-{ds}", algorithm="protonet", excluded_datasets=[ds])
    cfg = tiny_config(make_corpus(tmp_path / "data"), tmp_path / "out", adapter_dirs=(shipped,))
    ctx = tiny_context(cfg)
    discovery(ctx)
    rows = {r["method"]: r for r in ctx.store.read() if r.get("protocol") == "discovery"}
    assert set(rows) == {"discover", "to_label", "evaluate --cv 5"}
    assert rows["discover"]["unseen_intents"] == 7  # every third of the 21 tiny CLINC150 intents
    assert 0 <= rows["discover"]["unseen_found"] <= 7
    assert 0.0 <= rows["to_label"]["accuracy_ranked"] <= 1.0 and rows["to_label"]["random_seeds"] == 5
    assert 0.0 <= rows["evaluate --cv 5"]["cv_top1_accuracy"] <= 1.0
    assert len(discovery_table(list(rows.values()))) == 3


def test_one_shot_episodes_fit_without_a_warning_each(tmp_path):
    """The benchmark's 1-shot episodes are 1-shot on purpose: no 'cannot be calibrated' warning per episode."""
    import warnings

    from fewintent.data import IntentSet
    from fewintent.errors import FewIntentWarning

    support = IntentSet.from_pairs([(f"{w} one", w) for w in ("alpha", "beta", "gamma")])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", FewIntentWarning)
        ProductMethod("frozen-linear", tiny_context(tiny_config(tmp_path, tmp_path / "out"))).run(
            support, {"q": ["x"]}
        )
    assert not [w for w in seen if issubclass(w.category, FewIntentWarning)]


def test_setfit_time_ratios_say_faster_or_slower_in_words():
    from fewintent.bench.tables import setfit_ratio_lines

    cell = {"protocol": "fullway", "dataset": "hwu64", "shots": 5, "status": "ok"}
    rows = [
        {**cell, "method": "setfit", "adapt_seconds": 430.0, "accuracy": 0.74, "train_steps": 800},
        {**cell, "method": "fewintent-linear", "adapt_seconds": 1.6, "accuracy": 0.79},
        {**cell, "method": "fewintent-linear-tune", "adapt_seconds": 300.0, "accuracy": 0.80},
        {**cell, "method": "frozen-linear", "adapt_seconds": 860.0, "accuracy": 0.79},
    ]
    (line,) = setfit_ratio_lines(rows)
    assert "269x slower than `fewintent-linear`" in line
    assert "1.4x slower than `fewintent-linear-tune`" in line
    assert "2.0x faster than `frozen-linear`" in line


def test_results_json_is_read_and_written_back_unchanged(tmp_path):
    """The committed results.json through ResultRow and the store's writer: the same file, byte for byte."""
    committed = Path(__file__).parents[1] / "data" / "benchmarks" / "results.json"
    rows = load_rows(committed)
    store = ResultStore(tmp_path, {"id": "x"}, append=True)
    store._write(rows)
    assert (tmp_path / "results.json").read_bytes() == committed.read_bytes()
    row = ResultRow(protocol="fullway", dataset="x", shots=5, method="m").but(adapter=None, odd={"kept": 1})
    assert list(row.to_dict()) == ["protocol", "dataset", "shots", "method", "adapter", "odd"]
    again = ResultRow.of(row.to_dict())
    assert again.extra == {"odd": {"kept": 1}} and again.adapter is None and again["adapter"] is None
    assert again.key == ("fullway", "x", 5, None, "m", None, None, None, "minilm")


class _Majority(Method):
    """A toy baseline: every query gets the support set's most frequent intent."""

    def run(self, support, queries, *, want_threshold=False):  # type: ignore[no-untyped-def]
        top = np.bincount([support.labels.index(i) for i in support.intents]).argmax()
        scores = {k: np.eye(len(support.labels))[[top] * len(v)] for k, v in queries.items()}
        return Outcome(support.labels, scores, 0.0, score_kind="probability")

    def speed(self, device, support, cell):  # type: ignore[no-untyped-def]
        return SpeedPlan(lambda: lambda texts: [support.labels[0]] * len(texts), {"note": "toy"})


def test_a_new_baseline_is_one_class_and_one_registry_line(tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "majority", _Majority)
    root = make_corpus(tmp_path / "data")
    cfg = tiny_config(root, tmp_path / "out", methods=("majority",), datasets=("banking77", "clinc150"), shots=(5,))
    run_benchmark(replace(cfg, protocols=("fullway", "oos", "speed")), encoder_factory=make_tiny_encoder)
    rows = [r for r in load_rows(cfg.out / "results.json") if r.method == "majority"]
    assert {r.protocol for r in rows if not r.skipped} == {"fullway", "oos", "speed"}
    assert all(r.accuracy is not None for r in rows if r.protocol == "fullway")
    assert "`majority`" in (cfg.out / "report.md").read_text()


# --------------------------------------------------------------------------- steps on the pool's encoder


def test_steps_train_the_pools_encoder_once_loaded_and_put_it_back(tmp_path):
    """--steps rows go through the trainer on the run's shared encoder: no encoder load per support set, the
    meta-learned LoRA weights restored after each, so every support set starts from the same weights."""
    from fewintent.data import IntentSet
    from fewintent.encoder.lora import lora_state

    adapter = _tiny_adapter(tmp_path / "adapter", algorithm="protonet")
    cfg = tiny_config(tmp_path, tmp_path / "out", adapters=parse_adapter_options([f"protonet={adapter}"]))
    loads: list[int] = []

    def factory():  # type: ignore[no-untyped-def]
        loads.append(1)
        return make_tiny_encoder()

    ctx = BenchContext(cfg, Corpora(tmp_path), EncoderPool(factory), ResultStore(cfg.out, {"id": "t"}, append=False))
    method = build_method(ctx, "fewintent-protonet-steps3", "fullway", "hwu64")
    assert isinstance(method, ProductMethod) and method.adapter_dir == adapter
    _, encoder = ctx.pool.get(adapter)
    before = lora_state(encoder)
    support = IntentSet.from_pairs([(f"{w} {i} now", w) for w in ("alpha", "beta", "gamma") for i in range(3)])
    first = method.run(support, {"q": ["alpha 7", "beta now"]})
    after = lora_state(encoder)
    assert all(torch.equal(before[k], after[k]) for k in before)  # put back
    second = method.run(support, {"q": ["alpha 7", "beta now"]})
    assert np.allclose(first.scores["q"], second.scores["q"]) and len(loads) == 1
    assert first.extra["inner_lr"] is not None and first.adapt_seconds > 0
    unstepped = build_method(ctx, "fewintent-protonet", "fullway", "hwu64")
    assert isinstance(unstepped, Method)
    assert not np.array_equal(unstepped.run(support, {"q": ["alpha 7", "beta now"]}).scores["q"], first.scores["q"])


def test_tune_trains_a_copy_of_the_pools_encoder(tmp_path):
    """--tune merges its layers into the weights: it trains a copy, and the shared (cached) encoder stays as it was."""
    from fewintent.data import IntentSet
    from fewintent.encoder.lora import has_lora

    ctx = tiny_context(tiny_config(tmp_path, tmp_path / "out"))
    method = ProductMethod("frozen-linear-tune", ctx)
    key, encoder = ctx.pool.get(None)
    texts = ["alpha 7", "beta now"]
    before = encoder.encode(texts)
    support = IntentSet.from_pairs([(f"{w} {i} now", w) for w in ("alpha", "beta", "gamma") for i in range(4)])
    outcome = method.run(support, {"q": texts})
    assert outcome.extra["tune"]["epochs_run"] >= 0 and outcome.adapt_seconds > 0
    assert not has_lora(encoder) and torch.allclose(encoder.encode(texts), before)


# --------------------------------------------------------------------------- multilabel (NLU++)


def _tiny_nlupp(root: Path) -> Path:
    """``nlupp/{banking,hotels}.jsonl`` shaped like NLU++: 20 folds, 0-2 intents per message."""
    rng = random.Random(1)
    for domain, labels in (("banking", ["card", "lost", "pin", "new"]), ("hotels", ["room", "book", "wifi"])):
        rows = []
        for fold in range(20):
            for i in range(6):
                picked = sorted(set(rng.sample(labels, rng.choice([1, 1, 2]))) if i else [])
                text = " ".join(picked) + f" please {domain} {fold} {i} " + rng.choice(["now", "today", "again"])
                rows.append({"text": text, "intents": picked, "domain": domain, "fold": fold})
        _write(root / "nlupp" / f"{domain}.jsonl", rows)
    return root


def test_nlupp_splits_are_the_papers():
    from fewintent.bench.multilabel import splits

    assert splits(20) == [(k,) for k in range(20)]
    assert splits(10) == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13), (14, 15), (16, 17), (18, 19)]
    with pytest.raises(FewIntentError):
        splits(5)


def test_multilabel_protocol_scores_the_product_itself(tmp_path):
    """Each cell's product row is the product's own evaluate on that split; the baseline picks C on the training
    fold; single-label methods get a skip row; the report gets the table."""
    from fewintent.bench.multilabel import multilabel, read_domain, split_data
    from fewintent.bench.tables import multilabel_table
    from fewintent.data import IntentSet
    from fewintent.model import IntentClassifier
    from fewintent.model.evaluation import evaluate

    root = _tiny_nlupp(tmp_path / "data")
    names = ("frozen-onevsrest", "frozen-ovr-logreg", "frozen-linear")
    cfg = tiny_config(root, tmp_path / "out", datasets=("nlupp:hotels",), multilabel_methods=names, quick=True)
    ctx = tiny_context(cfg)
    multilabel(ctx)
    rows = {(r.dataset, r.method): r for r in ctx.store.read()}
    assert {d for d, _ in rows} == {"nlupp:hotels:20-fold", "nlupp:hotels:10-fold"}
    assert rows[("nlupp:hotels:20-fold", "frozen-linear")].skipped
    product = rows[("nlupp:hotels:20-fold", "frozen-onevsrest")]
    assert product.get("splits") == 2 and "first 2 of the 20 splits" in (product.note or "")
    support, test = split_data(read_domain(ctx, "hotels"), (0,), "fold 0")
    clf = IntentClassifier(make_tiny_encoder(), head="onevsrest").fit(support)
    pairs = [(text, list(intents)) for text, intents, _ in test]
    own = evaluate(clf, IntentSet.from_pairs(pairs, for_training=False))
    assert product.get("split_micro_f1")[0] == pytest.approx(own.micro_f1, abs=1e-4)
    assert product.get("micro_f1") == pytest.approx(np.mean(product.get("split_micro_f1")), abs=1e-4)
    baseline = rows[("nlupp:hotels:10-fold", "frozen-ovr-logreg")]
    assert set(np.atleast_1d(baseline.get("C"))) <= {1.0, 10.0, 100.0} and 0 <= baseline.get("micro_f1") <= 1
    table = "\n".join(multilabel_table(list(rows.values())))
    assert "hotels 20-fold" in table and "`frozen-ovr-logreg`" in table and "`frozen-linear`" not in table
    from fewintent.bench.report import headline

    assert "Several intents per message" in headline(list(rows.values()), "x.png")
    assert "Several intents per message" not in headline([r for r in rows.values() if r.protocol != "multilabel"], "x")


def test_a_run_that_stops_before_its_first_row_keeps_the_results_and_quick_writes_aside(tmp_path, monkeypatch):
    """A fresh run replaced results.json as soon as it started, so a missing corpus folder (or a typo) emptied the
    committed results; and `benchmark --quick` as the README writes it replaced them with a smoke run's rows."""
    from typer.testing import CliRunner

    from fewintent.cli.benchmark import QUICK_OUT
    from fewintent.cli.main import app

    out = tmp_path / "bench"
    out.mkdir()
    (out / "results.json").write_text('[{"protocol": "fullway", "method": "kept"}]\n')
    before = (out / "results.json").read_text()
    args = ["benchmark", "--data-dir", str(tmp_path / "missing"), "--out", str(out), "--protocols", "fullway"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "no such data directory" in result.output
    assert (out / "results.json").read_text() == before
    store = ResultStore(out, {"seed": 0}, append=False)
    assert (out / "results.json").read_text() == before  # nothing written until the run has a row
    store.add({"protocol": "fullway", "method": "new", "dataset": "x", "shots": 5})
    assert [r.method for r in load_rows(out / "results.json")] == ["new"]
    assert QUICK_OUT.parts[0] == "runs"  # gitignored: a smoke run never lands in data/benchmarks

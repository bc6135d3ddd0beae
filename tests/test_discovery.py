"""Improving a bot from its traffic: intent discovery, what to label next, cross-validation on the training file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fewintent import FewIntentError, IntentClassifier
from fewintent.cli.main import app
from fewintent.data.io import read_messages

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

GIFT = [
    f"{verb} {thing}"
    for verb in ("do you sell", "can i buy", "i want to buy", "where can i get")
    for thing in ("a gift card", "a gift voucher", "gift cards for my brother")
]
JOBS = [
    f"{verb} {when}"
    for verb in ("what is the weather", "weather forecast for", "how is the weather", "tell me the weather")
    for when in ("tomorrow", "this weekend", "on friday")
]
IN_SCOPE = ["is my bike ready yet", "my brakes squeak, can you fix them", "how much is an e-bike for a day"]


@pytest.fixture(scope="module")
def demo(real_encoder) -> IntentClassifier:
    return IntentClassifier(real_encoder).fit(read_demo())


def read_demo():
    from fewintent.data import read_intent_file

    return read_intent_file(ROOT / "data" / "demo_company.jsonl")


def test_discovery_groups_new_intents_and_ranks_messages_to_label(demo):
    result = demo.discover(GIFT + JOBS + IN_SCOPE, min_cluster_size=4, n_to_label=2)
    assert result.n_messages == len(GIFT + JOBS + IN_SCOPE)
    assert len(result.clusters) >= 2
    for cluster in result.clusters:
        assert cluster.size == len(cluster.texts) and set(cluster.examples) <= set(cluster.texts)
        groups = {("gift" if t in GIFT else "job" if t in JOBS else "other") for t in cluster.texts}
        assert len(groups) == 1, cluster.texts  # pure
    hints = " ".join(c.name_hint for c in result.clusters)
    assert "gift" in hints and "weather" in hints
    assert 1 <= len(result.to_label) <= 2 and all(item.intent in demo.labels for item in result.to_label)
    d = result.to_dict()
    assert set(d) == {"clusters", "to_label"}
    assert set(d["clusters"][0]) == {"id", "size", "name_hint", "examples", "texts"}
    assert set(d["to_label"][0]) == {"text", "intent", "confidence"}


def test_cli_discover_json_and_a_file_that_adapt_reads_back(demo, tmp_path):
    model = tmp_path / "m"
    demo.save(model)
    messages = tmp_path / "logs.txt"
    messages.write_text("\n".join(GIFT + JOBS + IN_SCOPE) + "\n\n")
    out = tmp_path / "review.jsonl"
    args = ["discover", str(model), str(messages), "--json", "-o", str(out), "--min-cluster-size", "4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert sum(c["size"] for c in d["clusters"]) >= len(GIFT)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert any(r["intent"].startswith("new_") for r in rows)
    # the reviewed file goes straight back into adapt, next to the original examples
    (tmp_path / "more.jsonl").write_text((ROOT / "data" / "demo_company.jsonl").read_text() + out.read_text())
    result = runner.invoke(
        app, ["adapt", str(tmp_path / "more.jsonl"), "-o", str(tmp_path / "m2"), "--adapter", "none"]
    )
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "no messages"),
        (b"\n \n\t\n", "no messages"),
        (b"\x00\x01\x02binary", "binary"),
        (b"\xff\xfe\x00", "UTF-8"),
    ],
)
def test_bad_message_files_are_refused(tmp_path, content, message):
    p = tmp_path / "m.txt"
    p.write_bytes(content)
    with pytest.raises(Exception, match=message):
        read_messages(p)


def test_min_confidence_clusters_unsure_in_scope_answers(demo):
    everything = demo.discover(GIFT + JOBS + IN_SCOPE, min_cluster_size=4, min_confidence=1.01)
    assert everything.to_label == []  # every message is a clustering candidate now, none left to label
    assert sum(c.size for c in everything.clusters) + len(everything.unclustered) == len(GIFT + JOBS + IN_SCOPE)


def test_one_message_is_fine(demo, tmp_path):
    result = demo.discover(["do you sell gift cards"])
    assert result.clusters == [] and result.n_messages == 1
    model = tmp_path / "m"
    demo.save(model)
    (tmp_path / "one.txt").write_text("do you sell gift cards\n")
    r = runner.invoke(app, ["discover", str(model), str(tmp_path / "one.txt"), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["clusters"] == []
    r = runner.invoke(app, ["discover", str(model), str(tmp_path / "missing.txt")])
    assert r.exit_code == 1 and "no such file" in r.output


def test_repeated_messages_count_as_weight_not_as_points(demo):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # scikit-learn warned on 50 identical points
        only = demo.discover(["do you sell gift cards"] * 50, min_cluster_size=5)
    assert [(c.size, c.texts) for c in only.clusters] == [(50, ["do you sell gift cards"])]
    assert only.n_messages == 50 and only.n_out_of_scope == 50 and only.unclustered == []
    # real logs: one message 30 times, another 16 times, among other messages (some about gift cards too)
    logs = (ROOT / "data" / "demo_company_logs.txt").read_text().splitlines()
    repeated = ["do you sell gift cards"] * 30 + ["Do you sell  GIFT cards"] + ["what's the weather tomorrow"] * 16
    result = demo.discover(logs + repeated + JOBS, min_cluster_size=5)
    hints = [c.name_hint for c in result.clusters]
    assert len(hints) == len(set(hints)), hints  # no intent split in two under one name
    gift = [c for c in result.clusters if "do you sell gift cards" in c.texts]
    weather = [c for c in result.clusters if "what's the weather tomorrow" in c.texts]
    assert len(gift) == 1 and gift[0].size >= 31 and gift[0].texts.count("do you sell gift cards") == 1
    assert "Do you sell  GIFT cards" not in gift[0].texts  # the same words: one message
    assert len(weather) == 1 and weather[0].size >= 16
    assert sum(c.size for c in result.clusters) <= result.n_messages
    assert len({item.text for item in result.to_label}) == len(result.to_label)


def _tiny_model(tmp_path: Path) -> Path:
    from conftest import make_tiny_encoder

    from fewintent import IntentSet

    pairs = [(f"{w} number {i}", w) for w in ("alpha", "beta", "gamma") for i in range(4)]
    return IntentClassifier(make_tiny_encoder()).fit(IntentSet.from_pairs(pairs)).save(tmp_path / "m")


def test_discover_output_never_overwrites_a_file_or_writes_into_a_model(tmp_path):
    model = _tiny_model(tmp_path)
    before = (model / "config.json").read_text()
    (tmp_path / "logs.txt").write_text("hello there\nalpha number 7\n")
    base = ["discover", str(model), str(tmp_path / "logs.txt")]
    r = runner.invoke(app, [*base, "-o", str(model / "config.json"), "--force"])
    assert r.exit_code == 1 and "inside the model directory" in r.output and r.output.count("\n") == 1, r.output
    r = runner.invoke(app, [*base, "-o", str(model / "review.jsonl")])
    assert r.exit_code == 1 and "inside the model directory" in r.output
    assert (model / "config.json").read_text() == before and not (model / "review.jsonl").exists()
    existing = tmp_path / "notes.jsonl"
    existing.write_text("keep me\n")
    r = runner.invoke(app, [*base, "-o", str(existing)])
    assert r.exit_code == 1 and "--force" in r.output and existing.read_text() == "keep me\n"
    r = runner.invoke(app, [*base, "-o", str(existing), "--force"])
    assert r.exit_code == 0, r.output
    assert existing.read_text() != "keep me\n"


# ------------------------------------------------------------------ cross-validation on the training file
def test_cross_validation_predicts_each_example_from_the_other_folds(tiny_encoder):
    from fewintent import IntentSet
    from fewintent.model.crossval import cross_validate, fold_of

    data = IntentSet.from_pairs([(f"{w} example {i}", w) for w in ("alpha", "beta", "gamma") for i in range(5)])
    folds = fold_of(np.array([0, 0, 0, 1, 1, 2]), 2)
    assert folds.tolist() == [0, 1, 0, 0, 1, 0]  # stratified: i-th example of each intent -> fold i mod k
    clf = IntentClassifier(tiny_encoder)
    result = cross_validate(clf, data, 5)
    assert result.folds == 5 and result.n == 15
    assert 0.0 <= result.accuracy <= result.top1_accuracy <= 1.0
    assert set(result.per_intent) == {"alpha", "beta", "gamma"}
    assert sum(int(m["support"]) for m in result.per_intent.values()) == 15
    for pair in result.confused_pairs:
        assert pair["gold"] != pair["predicted"] and 1 <= len(pair["examples"]) <= 3
    assert clf.labels == ["alpha", "beta", "gamma"]  # left fitted on the whole file
    assert cross_validate(clf, data, "loo").folds == 5
    with pytest.raises(FewIntentError, match="folds"):
        cross_validate(clf, data, 1)
    with pytest.raises(FewIntentError, match="one example"):
        cross_validate(clf, IntentSet.from_pairs([("a", "x"), ("b", "y")]), 2)


def test_cli_evaluate_cv(tmp_path):
    result = runner.invoke(app, ["evaluate", str(ROOT / "data" / "demo_company.jsonl"), "--cv", "3", "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["folds"] == 3 and d["n"] == 74 and d["top1_accuracy"] > 0.5  # real MiniLM on the demo intents
    r = runner.invoke(app, ["evaluate", str(ROOT / "data" / "demo_company.jsonl"), "x.jsonl", "--cv", "3"])
    assert r.exit_code == 1 and "no test files" in r.output
    r = runner.invoke(app, ["evaluate", str(ROOT / "data" / "demo_company.jsonl"), "--cv", "many"])
    assert r.exit_code == 1 and "folds" in r.output


# ------------------------------------------------------------------ confusable intents before any traffic
def test_overlap_finds_confusable_intents_duplicates_and_weak_ones(demo):
    from fewintent import IntentSet

    data = IntentSet.from_pairs(
        [
            ("where is my parcel", "track_order"),
            ("has my order shipped", "track_order"),
            ("when will my package arrive", "track_order"),
            ("where is my package", "delivery_status"),
            ("has my parcel been shipped yet", "delivery_status"),
            ("when does my order arrive", "delivery_status"),
            ("open hours please", "hours"),
            ("open hours please!", "hours_again"),  # a near-duplicate under another intent, and a 1-example intent
            ("opening hours", "hours"),
            ("what are your opening hours", "hours"),
        ]
    )
    report = demo.overlaps(data)
    pairs = {frozenset((c["a"], c["b"])) for c in report.confusable}
    assert frozenset(("track_order", "delivery_status")) in pairs
    assert any({d["intent_a"], d["intent_b"]} == {"hours", "hours_again"} for d in report.near_duplicates)
    assert any(w["intent"] == "hours_again" and "only 1" in w["reason"] for w in report.weak)
    assert all(len(line) < 400 for line in report.lines())


def test_cli_data_validate_prints_findings(tmp_path):
    result = runner.invoke(app, ["data", "validate", str(ROOT / "data" / "demo_company.jsonl"), "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert set(d) >= {"intents", "warnings", "confusable", "near_duplicates", "weak"}
    result = runner.invoke(app, ["data", "validate", str(ROOT / "data" / "demo_company.jsonl"), "--no-overlap"])
    assert result.exit_code == 0 and "check:" not in result.output


def test_label_these_next_lists_only_unsure_answers_and_an_unedited_file_trains_no_guess(demo, tmp_path):
    from fewintent.data import read_intent_file
    from fewintent.model.discovery import LOOK_MARGIN, margin

    logs = (ROOT / "data" / "demo_company_logs.txt").read_text().splitlines()
    result = demo.discover(logs, min_cluster_size=3, min_confidence=0.5, n_to_label=20)
    picked = {item.text for item in result.to_label}
    by_text = {p.text: p for p in demo.predict(logs, top_k=2)}
    assert picked and all(margin(by_text[t]) < LOOK_MARGIN for t in picked)
    sure = [p.text for p in by_text.values() if not p.is_oos and margin(p) >= LOOK_MARGIN]
    assert sure and not picked & set(sure)  # 'what time do you open on sunday' at 0.97 is not worth a look
    assert [c.confidence for c in result.to_label] == sorted(c.confidence for c in result.to_label)
    rows = result.to_jsonl_rows()
    marked = [r for r in rows if r.get("to_label")]
    assert len(marked) == len(picked) and all(r["intent"] is None and r["guess"] in demo.labels for r in marked)
    appended = tmp_path / "v2.jsonl"
    appended.write_text(
        (ROOT / "data" / "demo_company.jsonl").read_text() + "".join(json.dumps(r) + "\n" for r in rows)
    )
    data = read_intent_file(appended)
    assert not picked & set(data.texts)  # skipped, with a warning, until a person fills in the intent
    assert any("dropped" in w for w in data.warnings)

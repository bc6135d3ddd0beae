"""Out-of-scope scores, held-out calibration, and the evaluation that shows the trade-off."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fewintent import FewIntentError, IntentClassifier, IntentSet
from fewintent.cli.main import app
from fewintent.heads import HEADS, HeadParams, LinearHead, PrototypeHead, class_means, l2_normalize
from fewintent.model import evaluate
from fewintent.model.calibration import best_f1_threshold, oos_counts, recall_threshold
from fewintent.model.oos import OOS_SCORES, EnergyScore, MahalanobisScore, NearestScore

runner = CliRunner()
WORDS = ("alpha", "beta", "gamma", "delta")
SUPPORT = IntentSet.from_pairs([(f"{w} case {i}", w) for w in WORDS for i in range(5)])
HELD_OUT = IntentSet.from_pairs(
    [(f"{w} example {i}", w) for w in WORDS for i in range(3)] + [(f"zeta thing {i}", "oos") for i in range(4)],
    for_training=False,
)


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), 6)
    x = g.standard_normal((4, 8))[y] + 0.3 * g.standard_normal((24, 8))
    return l2_normalize(x).astype(np.float32), y


def test_nearest_held_out_scores_are_leave_one_out():
    x, y = _blobs()
    got = NearestScore.held_out(x, y, 4, _fit_linear)
    sims = x @ x.T
    expected = [max(float(sims[i, j]) for j in range(len(x)) if j != i) for i in range(len(x))]
    assert np.allclose(got, expected, atol=1e-6)


def test_mahalanobis_scores_the_nearest_mean_highest():
    x, y = _blobs(1)
    protos = l2_normalize(class_means(x, y, 4))
    scorer = MahalanobisScore.fit(x, y, 4, protos, _fit_linear(x, y, 4))
    means = np.stack([x[y == c].mean(0) for c in range(4)])
    far = -means.mean(0, keepdims=True)  # away from every intent
    assert float(scorer(means).min()) > float(scorer(far)[0])


def test_energy_is_the_log_sum_exp_of_whichever_head_ranks():
    x, y = _blobs(2)
    protos = l2_normalize(class_means(x, y, 4))
    for head in (PrototypeHead.fit(x, y, 4, protos, PARAMS), _fit_linear(x, y, 4)):
        logits = head.logits(x, x @ protos.T)
        expected = np.log(np.exp(logits.astype(np.float64)).sum(axis=1))
        assert np.allclose(EnergyScore.fit(x, y, 4, protos, head)(x), expected, atol=1e-4)


def test_registries_name_every_head_and_score_once():
    assert set(HEADS) == {"linear", "prototype", "onevsrest"} and all(cls.name == name for name, cls in HEADS.items())
    assert set(OOS_SCORES) == {"prototype", "nearest", "mahalanobis", "energy", "margin"}
    assert all(cls.name == name and cls.description for name, cls in OOS_SCORES.items())
    with pytest.raises(FewIntentError, match="unknown head 'cosine': use linear, prototype"):
        IntentClassifier.unfitted(head="cosine")


def test_best_f1_threshold_separates_and_counts_are_right():
    ins, oos = np.array([0.6, 0.7, 0.8, 0.9]), np.array([0.1, 0.2, 0.65])
    t = best_f1_threshold(ins, oos)
    # every OOS row caught for one in-scope row lost (F1 6/7) beats keeping all in-scope rows (F1 4/5)
    assert 0.65 < t < 0.7
    c = oos_counts(ins, oos, t)
    assert c["in_scope_recall"] == 0.75 and c["oos_recall"] == 1.0 and c["oos_f1"] == pytest.approx(6 / 7)
    assert oos_counts(ins, oos, 0.4)["oos_f1"] == pytest.approx(0.8)
    # OOS rare in the expected traffic (weight 0.1): losing an in-scope row no longer pays for the third OOS row
    assert 0.2 < best_f1_threshold(ins, oos, oos_weight=0.1) <= 0.6


def test_recall_threshold_keeps_at_least_the_target_share():
    ins = np.linspace(0.0, 1.0, 101)
    for recall in (0.5, 0.9, 0.95, 1.0):
        t = recall_threshold(ins, recall)
        assert (ins >= t).mean() >= recall and (ins >= t + 0.011).mean() < recall


PARAMS = HeadParams(scale=20.0, c=30.0)


def _fit_linear(x: np.ndarray, y: np.ndarray, n: int) -> LinearHead:
    return LinearHead.fit(x, y, n, l2_normalize(class_means(x, y, n)), PARAMS)


@pytest.mark.parametrize("kind", [k for k in OOS_SCORES if k != "margin"] + ["margin"])
def test_each_score_survives_save_load_and_edits(tiny_encoder, tmp_path, kind):
    clf = IntentClassifier(tiny_encoder, oos_score=kind).fit(SUPPORT)
    texts = ["alpha case 9", "zeta thing 9", "beta"]
    before = [p.to_dict() for p in clf.predict(texts)]
    assert all(isinstance(p["oos_score"], float) for p in before)
    assert [p["is_oos"] for p in before] == [p["oos_score"] < clf.threshold for p in before]
    clf.save(tmp_path / "m")
    again = IntentClassifier.load(tmp_path / "m")
    assert again.config.oos_score == kind and again.threshold == clf.threshold
    assert [p.to_dict() for p in again.predict(texts)] == before
    again.threshold = clf.threshold  # set by hand: survives edits
    again.add_intent("epsilon", ["epsilon one", "epsilon two"])
    again.remove_intent("beta")
    assert again.threshold == clf.threshold and again.config.oos_score == kind
    assert all(isinstance(p.oos_score, float) for p in again.predict(texts))


def test_unbounded_scores_take_unbounded_thresholds(tiny_encoder):
    clf = IntentClassifier(tiny_encoder, oos_score="energy").fit(SUPPORT)
    clf.threshold = 5.0  # a log-sum-exp, not a cosine
    assert clf.threshold == 5.0
    with pytest.raises(FewIntentError, match="finite"):
        clf.threshold = float("nan")
    assert IntentClassifier(tiny_encoder, head="prototype", oos_score="energy").fit(SUPPORT).threshold < 30.0
    one_each = IntentSet.from_pairs([(w, w) for w in WORDS])
    with pytest.raises(FewIntentError, match="at least 2 examples per intent"):
        IntentClassifier(tiny_encoder, oos_score="mahalanobis").fit(one_each)  # names are no held-out messages


def test_calibrate_objectives_and_refusals(tiny_encoder):
    clf = IntentClassifier(tiny_encoder).fit(SUPPORT)
    report = clf.calibrate(HELD_OUT)
    assert report.objective == "f1" and report.n_oos == 4 and clf.threshold == report.threshold
    assert clf.threshold_manual and report.after["oos_f1"] >= report.before["oos_f1"]
    in_scope_only = IntentSet(HELD_OUT.texts, HELD_OUT.intents, [], "oos")
    report = clf.calibrate(in_scope_only, objective="auto", in_scope_recall=0.9)
    assert report.objective == "recall" and report.after["in_scope_recall"] >= 0.9
    with pytest.raises(FewIntentError, match="needs rows labelled 'oos'"):
        clf.calibrate(in_scope_only, objective="f1")
    with pytest.raises(FewIntentError, match="does not know"):
        clf.calibrate(IntentSet.from_pairs([("x", "alpha"), ("y", "omega")], for_training=False))
    with pytest.raises(FewIntentError, match="no in-scope rows"):
        clf.calibrate(IntentSet([], [], ["a", "b"], "oos"))


def test_evaluate_reports_auroc_aupr_and_sweep(tiny_encoder):
    clf = IntentClassifier(tiny_encoder).fit(SUPPORT)
    r = evaluate(clf, HELD_OUT, sweep_points=5)
    assert 0.0 <= r.oos_auroc <= 1.0 and 0.0 <= r.oos_aupr <= 1.0
    assert sum(bool(row.get("current")) for row in r.sweep) == 1 and len(r.sweep) >= 2
    assert evaluate(clf, IntentSet(HELD_OUT.texts, HELD_OUT.intents, [], "oos")).oos_auroc is None


def _write(path, rows):
    path.write_text("\n".join(json.dumps({"text": t, "intent": i}) for t, i in rows))
    return path


def test_cli_calibrate_saves_atomically_and_refuses_bad_files(tmp_path, monkeypatch):
    from conftest import tiny_model_dir

    from fewintent.model import persistence

    train = _write(tmp_path / "train.jsonl", zip(SUPPORT.texts, SUPPORT.intents))
    held = _write(
        tmp_path / "valid.jsonl",
        list(zip(HELD_OUT.texts, HELD_OUT.intents)) + [(t, "oos") for t in HELD_OUT.oos_texts],
    )
    model = tmp_path / "m"
    result = runner.invoke(
        app, ["adapt", str(train), "-o", str(model), "--base", str(tiny_model_dir()), "--adapter", "none"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["calibrate", str(model), str(held), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    saved = json.loads((model / "config.json").read_text())
    assert saved["threshold"] == pytest.approx(report["threshold"]) and saved["threshold_manual"] is True
    unknown = _write(tmp_path / "unknown.jsonl", [("hello", "omega"), ("bye", "alpha")])
    result = runner.invoke(app, ["calibrate", str(model), str(unknown)])
    assert result.exit_code == 1 and "does not know" in result.output and result.output.count("\n") == 1
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    result = runner.invoke(app, ["calibrate", str(model), str(empty)])
    assert result.exit_code == 1 and "error:" in result.output

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(persistence, "save_file", crash)  # dies while writing the new model's tensors
    result = runner.invoke(app, ["calibrate", str(model), str(held), "--objective", "recall"])
    assert result.exit_code == 1
    assert IntentClassifier.load(model).threshold == pytest.approx(report["threshold"])  # the old model is intact

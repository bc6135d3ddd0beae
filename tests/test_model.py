"""IntentClassifier mechanics on a tiny random encoder: prototypes, thresholds, editing, save/load, crash safety."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import format_1

from fewintent import FewIntentError, IntentClassifier, IntentSet
from fewintent.heads import PrototypicalHead, class_means, l2_normalize
from fewintent.model import persistence, storage
from fewintent.model.calibration import calibrate_threshold, leave_one_out_scores
from fewintent.model.evaluation import macro_f1, multiclass_mcc, score_predictions

DATA = IntentSet.from_pairs(
    [
        ("where is my card", "card"),
        ("my card has not arrived", "card"),
        ("card delivery time", "card"),
        ("what is my balance", "balance"),
        ("how much money do I have", "balance"),
        ("show my account balance", "balance"),
        ("tell me a joke", "oos"),
    ]
)


@pytest.fixture
def clf(tiny_encoder):
    return IntentClassifier(tiny_encoder).fit(DATA)


def test_prototypes_are_class_means():
    emb = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    means = class_means(emb, np.array([0, 0, 1]), 2)
    assert np.allclose(means, [[2.0, 0.0], [0.0, 2.0]])
    head = PrototypicalHead(temperature=10.0).fit(torch.from_numpy(emb), torch.tensor([0, 0, 1]))  # meta-training's
    assert head(torch.tensor([[1.0, 0.1]])).argmax().item() == 0


def test_leave_one_out_uses_own_class_without_the_example():
    emb = l2_normalize(np.array([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0], [0.2, 1.0], [0.5, 0.5]], dtype=np.float32))
    y = np.array([0, 0, 1, 1, 2])
    scores = leave_one_out_scores(emb, y, 3)
    assert scores.shape == (4,)  # the single-example class is skipped
    # example 0 against class 0 rebuilt from example 1 only
    assert scores[0] == pytest.approx(max(float(emb[0] @ emb[1]), float(emb[0] @ emb[4])), abs=1e-6)
    # a fixed row (an intent's name) stays in its class's prototype and is never scored itself
    name = l2_normalize(np.array([[1.0, -0.3]], dtype=np.float32))
    with_name = leave_one_out_scores(emb, y, 3, (name, np.array([0])))
    assert with_name.shape == (4,)
    own = float(emb[0] @ l2_normalize(emb[1] + name[0]))
    assert with_name[0] == pytest.approx(max(own, float(emb[0] @ emb[4])), abs=1e-6)


def test_threshold_from_support_quantile_and_from_oos():
    pos = np.linspace(0.5, 0.9, 101)
    assert calibrate_threshold(pos, in_scope_recall=0.9) == pytest.approx(np.quantile(pos, 0.1))
    # OOS examples scoring well below the in-scope ones: the cut lands between them and keeps every in-scope one
    t = calibrate_threshold(pos, np.linspace(0.1, 0.3, 20), in_scope_recall=0.95)
    assert 0.3 <= t <= 0.5


def test_predict_shapes_and_contract(clf):
    preds = clf.predict(["where is my card", "balance please"], top_k=5)
    d = preds[0].to_dict()
    assert set(d) == {"text", "intent", "is_oos", "intent_ranking", "oos_score"}  # the contract, plus the score
    assert set(d["intent"]) == {"name", "confidence"}
    assert [r["name"] for r in d["intent_ranking"]] and len(d["intent_ranking"]) == 2
    proba = clf.predict_proba(["a", "b", "c"])
    assert proba.shape == (3, 2) and np.allclose(proba.sum(1), 1.0, atol=1e-5)
    clf.threshold = 1.0  # no query reaches a cosine of 1 to a mean of several examples: all out of scope
    p = clf.predict(["where is my card"])[0]
    assert p.is_oos and p.intent.name == "oos" and p.intent_ranking[0].name in clf.labels


def test_add_and_remove_intent_leave_others_untouched(clf):
    before = clf.table.prototypes.copy()
    clf.add_intent("greet", ["hi", "hello there", "hi"])
    assert clf.labels == ["card", "balance", "greet"] and clf.counts()["greet"] == 2
    assert np.allclose(clf.table.prototypes[:2], before)
    clf.add_intent("greet", ["good morning"])  # replaces its examples
    assert clf.counts()["greet"] == 1
    clf.remove_intent("card")
    assert clf.labels == ["balance", "greet"]
    assert np.allclose(clf.table.prototypes[0], before[1])
    with pytest.raises(FewIntentError, match="unknown intent 'nope'"):
        clf.remove_intent("nope")
    with pytest.raises(FewIntentError, match="at least 2 intents"):
        clf.remove_intent("greet")
    with pytest.raises(FewIntentError, match="out-of-scope label"):
        clf.add_intent("oos", ["x"])
    with pytest.raises(FewIntentError, match="non-empty example"):
        clf.add_intent("empty", ["", "  "])


def test_save_load_gives_identical_predictions(clf, tmp_path):
    texts = ["where is my card", "balance", "tell me something else"]
    clf.save(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["README.md", "config.json", "model.safetensors"]
    card = (tmp_path / "m" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: fewintent\npipeline_tag: text-classification")
    loaded = IntentClassifier.load(tmp_path / "m", device="cpu")
    assert loaded.labels == clf.labels and loaded.threshold == clf.threshold
    assert [p.to_dict() for p in loaded.predict(texts)] == [p.to_dict() for p in clf.predict(texts)]
    # no temporary leftovers; only the lock file that save and load share with other processes
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".m.lock"]


def test_crash_during_save_leaves_old_model_loadable(clf, tmp_path, monkeypatch):
    path = tmp_path / "m"
    clf.save(path)
    old_labels = clf.labels
    clf.add_intent("greet", ["hi", "hello"])

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(persistence, "model_card", boom)
    with pytest.raises(OSError, match="disk full"):
        clf.save(path)
    assert IntentClassifier.load(path).labels == old_labels
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "m"]


def test_failed_swap_puts_the_old_model_back(clf, tmp_path, monkeypatch):
    path = tmp_path / "m"
    clf.save(path)
    old_labels = clf.labels
    clf.add_intent("greet", ["hi", "hello"])
    real_rename = os.rename

    def rename(src, dst):
        if ".tmp-" in str(src):  # the second rename: the new model into place
            raise OSError("killed")
        real_rename(src, dst)

    monkeypatch.setattr(persistence.os, "rename", rename)
    with pytest.raises(OSError, match="killed"):
        clf.save(path)
    monkeypatch.undo()
    assert IntentClassifier.load(path).labels == old_labels
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "m"]
    assert oct((path).stat().st_mode & 0o777) != oct(0o700)


def test_mapping_values_must_be_lists(tiny_encoder):
    from fewintent.model.adapting import as_intentset as _as_intentset

    with pytest.raises(FewIntentError, match="must be a list of texts"):
        _as_intentset({"greet": "hello", "bye": ["bye", "ciao"]}, "oos")


def test_crash_between_renames_is_recovered(clf, tmp_path):
    path = tmp_path / "m"
    clf.save(path)
    os.rename(path, tmp_path / ".m.old-123-abc")  # what a kill between the two renames leaves: the backup ...
    (tmp_path / ".m.tmp-123-abc").mkdir()  # ... and the temporary folder of the same save
    assert IntentClassifier.load(path).labels == clf.labels


def test_two_loaders_recovering_the_same_backup_both_load(clf, tmp_path, monkeypatch):
    path = tmp_path / "m"
    clf.save(path)
    backup = tmp_path / ".m.old-123-abc"
    os.rename(path, backup)
    (tmp_path / ".m.tmp-123-abc").mkdir()
    checked = storage.is_model_dir

    def other_loader_wins(p):  # another process (shared lock too) renames the backup first
        ok = checked(p)
        if p == backup and not path.exists():
            os.rename(backup, path)
        return ok

    monkeypatch.setattr(storage, "is_model_dir", other_loader_wins)
    assert IntentClassifier.load(path).labels == clf.labels


def test_load_refuses_missing_foreign_and_corrupt_dirs(clf, tmp_path):
    with pytest.raises(FewIntentError, match="no such model directory"):
        IntentClassifier.load(tmp_path / "missing")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(FewIntentError, match="not a fewintent model"):
        IntentClassifier.load(tmp_path / "foreign")
    with pytest.raises(FewIntentError, match="not a fewintent model"):
        clf.save(tmp_path / "foreign")  # refuses to overwrite someone else's directory
    clf.save(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(FewIntentError, match="missing or corrupt"):
        IntentClassifier.load(tmp_path / "m")
    clf.save(tmp_path / "m2")
    (tmp_path / "m2" / "config.json").write_text("{not json")
    with pytest.raises(FewIntentError, match="config.json is corrupt"):
        IntentClassifier.load(tmp_path / "m2")
    clf.save(tmp_path / "m3")
    cfg = json.loads((tmp_path / "m3" / "config.json").read_text())
    cfg["labels"].append("extra")
    (tmp_path / "m3" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FewIntentError, match="does not match"):
        IntentClassifier.load(tmp_path / "m3")


def test_metrics_on_known_labels():
    gold = ["a", "a", "b", "oos", "oos"]
    pred = ["a", "oos", "b", "oos", "a"]
    r = score_predictions(gold, pred, "oos", top1=["a", "b", "b", "a", "a"])
    assert r.n == 5 and r.accuracy == pytest.approx(3 / 5)
    assert r.in_scope_accuracy == pytest.approx(2 / 3) and r.top1_accuracy == pytest.approx(2 / 3)
    assert r.oos_recall == pytest.approx(1 / 2) and r.oos_precision == pytest.approx(1 / 2)
    sklearn = pytest.importorskip("sklearn.metrics")
    assert multiclass_mcc(gold, pred) == pytest.approx(sklearn.matthews_corrcoef(gold, pred))
    assert r.macro_f1 == pytest.approx(sklearn.f1_score(gold, pred, average="macro"))
    assert score_predictions(["a"], ["a"], "oos").oos_precision is None
    # a class only ever predicted (the fallback on a file without OOS rows) still counts, as in scikit-learn
    gold2, pred2 = ["a", "a", "b"], ["a", "oos", "b"]
    assert macro_f1(gold2, pred2) == pytest.approx(sklearn.f1_score(gold2, pred2, average="macro"))


def test_intent_names_are_one_more_example_through_edits_and_save(tiny_encoder, tmp_path):
    from fewintent.model.classifier import name_example

    assert name_example("card_arrival") == "card arrival" and name_example("cardArrival") == "card arrival"
    assert name_example("weather.get-forecast") == "weather get forecast"
    assert name_example("intent_17") is None and name_example("c3") is None and name_example("42") is None

    clf = IntentClassifier(tiny_encoder).fit(DATA)
    t = clf.table
    assert t.name_labels.tolist() == [0, 1] and clf.counts() == {"card": 3, "balance": 3}  # names are not counted
    names = tiny_encoder.encode(["card", "balance"]).numpy()
    assert np.allclose(t.name_support, names, atol=1e-6)
    # the prototype is the mean of the examples and the name
    card = np.concatenate([t.support[t.support_labels == 0], names[:1]]).mean(0)
    assert np.allclose(t.prototypes[0], l2_normalize(card), atol=1e-6)
    off = IntentClassifier(tiny_encoder, intent_names=False).fit(DATA)
    assert off.table.name_support is None and not np.allclose(off.table.prototypes, t.prototypes)

    clf.add_intent("intent_7", ["hi"])  # a code says nothing: no name row
    clf.add_intent("greeting", ["hello", "hi there"])
    assert clf.table.name_labels.tolist() == [0, 1, 3]
    clf.add_intent("card", ["lost my card"])  # replaced: moves to the end, keeps one name row
    assert clf.labels == ["balance", "intent_7", "greeting", "card"] and clf.table.name_labels.tolist() == [0, 2, 3]
    clf.remove_intent("balance")
    assert clf.table.name_labels.tolist() == [1, 2]
    assert np.allclose(clf.table.name_support, tiny_encoder.encode(["greeting", "card"]).numpy(), atol=1e-6)

    clf.save(tmp_path / "m")
    again = IntentClassifier.load(tmp_path / "m", device="cpu")
    assert again.config.intent_names and np.array_equal(again.table.name_labels, clf.table.name_labels)
    texts = ["hello", "lost card", "weather"]
    assert [p.to_dict() for p in again.predict(texts)] == [p.to_dict() for p in clf.predict(texts)]
    off.save(tmp_path / "off")
    assert not IntentClassifier.load(tmp_path / "off", device="cpu").config.intent_names
    # a model saved before intent names existed loads as it was: examples only
    config = format_1(json.loads((tmp_path / "off" / "config.json").read_text()))
    del config["intent_names"]
    (tmp_path / "off" / "config.json").write_text(json.dumps(config))
    assert not IntentClassifier.load(tmp_path / "off", device="cpu").config.intent_names

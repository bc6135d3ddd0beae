"""The fitted linear head: agrees with scikit-learn's logistic regression, lives inside IntentClassifier."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import format_1

from fewintent import FewIntentError, IntentClassifier, IntentSet
from fewintent.heads import LinearHead, PrototypeHead, PrototypeLinearHead, fit_logistic, l2_normalize
from fewintent.model import AdaptArguments

DATA = IntentSet.from_pairs(
    [(f"{w} number {i}", w) for w in ("alpha", "beta", "gamma") for i in range(4)]
    + [("something else entirely", "oos")]
)


def _blobs(n_classes: int = 6, per_class: int = 5, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    centres = g.standard_normal((n_classes, dim))
    y = np.repeat(np.arange(n_classes), per_class)
    x = centres[y] * 0.6 + g.standard_normal((len(y), dim))
    return l2_normalize(x).astype(np.float32), y


@pytest.mark.parametrize("c", [0.5, 10.0])
def test_fit_logistic_matches_scikit_learn(c):
    from sklearn.linear_model import LogisticRegression

    x, y = _blobs()
    w, b = fit_logistic(x, y, 6, c=c)
    ref = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(x, y)
    assert w.dtype == np.float32 and np.allclose(w, ref.coef_, atol=2e-3)
    # the intercept is defined up to a constant shift (softmax); compare the centred values
    assert np.allclose(b - b.mean(), ref.intercept_ - ref.intercept_.mean(), atol=2e-3)


def test_fit_logistic_optimum_does_not_depend_on_the_start():
    x, y = _blobs(seed=1)
    protos = PrototypeLinearHead.from_support(torch.from_numpy(x), torch.from_numpy(y), 6)  # meta-training's start
    w1, _ = fit_logistic(x, y, 6, c=3.0, init=(protos.weight.data.numpy(), protos.bias.data.numpy()))
    w2, _ = fit_logistic(x, y, 6, c=3.0, init=(np.zeros((6, 16)), np.zeros(6)))
    w3, _ = fit_logistic(x, y, 6, c=3.0)
    assert np.allclose(w1, w2, atol=1e-3) and np.allclose(w1, w3, atol=1e-3)
    with pytest.raises(ValueError, match="positive"):
        fit_logistic(x, y, 6, c=0.0)


def test_classifier_linear_head_ranks_and_refits_on_edits(tiny_encoder):
    clf = IntentClassifier(tiny_encoder).fit(DATA)
    assert clf.config.head == "linear"
    t = clf.table
    assert isinstance(t.head, LinearHead) and t.head.weight.shape == t.prototypes.shape
    # the ranking and confidences come from the head: softmax of its logits
    emb = clf.encoder.encode(["alpha number 9"]).numpy()
    logits = emb @ t.head.weight.T + t.head.bias
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert np.allclose(clf.predict_proba(["alpha number 9"]), expected, atol=1e-6)
    p = clf.predict(["alpha number 9"])[0]
    assert p.intent_ranking[0].confidence == pytest.approx(float(expected.max()), abs=1e-6)
    # on its own training examples a C=10 logistic head is right (the tiny encoder is random; prototypes are not)
    assert [q.intent_ranking[0].name for q in clf.predict(DATA.texts)] == DATA.intents
    clf.add_intent("delta", ["delta one", "delta two"])
    assert isinstance(clf.table.head, LinearHead) and clf.table.head.weight.shape[0] == 4
    clf.remove_intent("beta")
    assert clf.labels == ["alpha", "gamma", "delta"] and clf.table.head.weight.shape[0] == 3


def test_prototype_head_still_available_and_saved_heads_round_trip(tiny_encoder, tmp_path):
    texts = ["alpha number 7", "gamma", "nothing like it"]
    for head in ("prototype", "linear"):
        clf = IntentClassifier(tiny_encoder, head=head).fit(DATA)
        before = [p.to_dict() for p in clf.predict(texts)]
        clf.save(tmp_path / head)
        config = json.loads((tmp_path / head / "config.json").read_text())
        assert config["classifier"]["head"] == head and config["classifier"]["head_c"] == clf.config.head_c
        assert f"head: {head}" in (tmp_path / head / "README.md").read_text()
        again = IntentClassifier.load(tmp_path / head)
        assert again.config.head == head
        assert [p.to_dict() for p in again.predict(texts)] == before
    proto = IntentClassifier(tiny_encoder, head="prototype").fit(DATA)
    assert isinstance(proto.table.head, PrototypeHead) and proto.table.head.to_tensors() == {}


def test_old_model_directory_without_a_head_loads_as_prototypes(tiny_encoder, tmp_path):
    clf = IntentClassifier(tiny_encoder, head="prototype").fit(DATA)
    clf.save(tmp_path / "m")
    config = format_1(json.loads((tmp_path / "m" / "config.json").read_text()))
    del config["head"], config["head_c"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    assert IntentClassifier.load(tmp_path / "m").config.head == "prototype"
    config["head"] = "linear"  # says linear but has no head tensors: corrupt, not silently prototypes
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(FewIntentError, match="linear head"):
        IntentClassifier.load(tmp_path / "m")
    config["head"] = "forest"
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(FewIntentError, match="unknown head"):
        IntentClassifier.load(tmp_path / "m")


def test_adapt_arguments_validate_the_head():
    assert AdaptArguments.from_dict({"head": "prototype"}).head == "prototype"
    with pytest.raises(FewIntentError, match="unknown head"):
        AdaptArguments(head="forest")
    with pytest.raises(FewIntentError, match="head_c"):
        AdaptArguments(head_c=0)

"""The Python API's argument checks: a wrong argument is a FewIntentError that names it, and leaves the model
as it was."""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
import warnings

import numpy as np
import pytest
from conftest import ROOT
from helpers import (
    DATA,
    ROWS,
    SMALL,
    edit_config,
    fit,
    one_line_error,
    read_intent_file_from_text,
    run,
    write_rows,
)

from fewintent import FewIntentError, IntentClassifier, IntentSet
from fewintent.errors import CorruptModelError, FewIntentWarning
from fewintent.model.crossval import cross_validate

# --- thresholds ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 5, -1.5, "0.5", True, None])
def test_threshold_must_be_a_cosine(tiny_encoder, bad):
    clf = IntentClassifier(tiny_encoder).fit(read_intent_file_from_text(SMALL))
    before = clf.threshold
    with pytest.raises(FewIntentError, match="threshold"):
        clf.threshold = bad
    assert clf.threshold == before


def test_a_threshold_is_checked_against_its_score_s_own_range(tiny_encoder, tmp_path):
    clf = IntentClassifier(tiny_encoder, head="prototype", oos_score="mahalanobis").fit(DATA)
    assert clf.threshold < 0  # minus a distance
    with pytest.raises(FewIntentError, match="above the highest score"):
        clf.threshold = 0.5  # every message would be out of scope
    clf.threshold = -100.0  # any reachable value is fine
    clf.save(tmp_path / "m")
    edit_config(tmp_path / "m", threshold=3.0)
    with pytest.raises(CorruptModelError, match="above the highest score"):
        IntentClassifier.load(tmp_path / "m")
    energy = IntentClassifier(tiny_encoder, head="linear", oos_score="energy").fit(DATA)
    energy.threshold = 5.0  # unbounded scores take any finite number


# --- adapt ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bogus": 1}, "unknown adapt argument"),
        ({"steps": "5"}, "steps"),
        ({"steps": -3}, "steps"),
        ({"in_scope_recall": 5}, "in_scope_recall"),
        ({"seed": 2**70}, "seed"),
        ({"scale": float("nan")}, "scale"),
        ({"oos_label": None}, "oos_label"),
        ({"oos_label": ""}, "oos_label"),
        ({"inner_lr": float("nan")}, "inner_lr"),
        ({"inner_lr": -5.0}, "inner_lr"),
        ({"device": "mps"}, "mps"),
    ],
)
def test_adapt_arguments_are_checked(kwargs, message):
    examples = {"a": ["x one", "x two"], "b": ["y one", "y two"]}
    with pytest.raises(FewIntentError, match=message):
        IntentClassifier.adapt(examples, adapter="none", **kwargs)


@pytest.mark.parametrize(
    "examples, message",
    [
        (["a", "b"], "mapping"),
        ({"a": ["x", "y"], "b": None}, "list of texts"),
        ({"a": [1, 2], "b": ["y", "z"]}, "strings"),
        ({3: ["x", "y"], "b": ["y", "z"]}, "intent names"),
        ({"a\nb": ["x", "y"], "c": ["y", "z"]}, "control character"),
    ],
)
def test_adapt_examples_are_checked(examples, message):
    with pytest.raises(FewIntentError, match=message):
        IntentClassifier.adapt(examples, adapter="none")


def test_a_mis_cased_base_name_suggests_the_registered_one(monkeypatch):
    from fewintent.encoder.encoder import resolve_base

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FewIntentError, match="did you mean 'mpnet'"):
        resolve_base("MPNET")
    with pytest.raises(FewIntentError, match="registered bases: minilm, mpnet"):
        resolve_base("mpnett")


# --- predict -------------------------------------------------------------------------------------------------------


def test_predict_takes_generators_odd_unicode_and_checks_top_k(tiny_encoder):
    clf = IntentClassifier(tiny_encoder).fit(read_intent_file_from_text(SMALL))
    assert len(clf.predict(t for t in ["where is my card", "hi"])) == 2  # consumed once, not twice
    assert clf.predict(["\ud800 where is my card"])[0].text == "? where is my card"
    for bad in ("3", 2.5, True):
        with pytest.raises(FewIntentError, match="top_k"):
            clf.predict(["hi"], top_k=bad)  # type: ignore[arg-type]
    with pytest.raises(FewIntentError, match="path"):
        IntentClassifier.load(None)  # type: ignore[arg-type]
    with pytest.raises(FewIntentError, match="control character"):
        clf.add_intent("evil\nname", ["reset my password"])
    clf.threshold = np.float32(0.5)  # numpy numbers are numbers
    assert clf.threshold == 0.5


def test_predict_with_one_string_returns_one_prediction(tiny_encoder):
    clf = IntentClassifier(tiny_encoder, head="prototype").fit(DATA)
    one = clf.predict("lost my card")
    assert one.to_dict() == clf.predict(["lost my card"])[0].to_dict()
    assert len(clf.predict(["hi"])) == 1


# --- live edits ----------------------------------------------------------------------------------------------------


def test_add_intent_refuses_a_bare_string_and_a_missing_name(tiny_encoder):
    clf = IntentClassifier(tiny_encoder).fit(read_intent_file_from_text(SMALL))
    with pytest.raises(FewIntentError, match="not a single string"):
        clf.add_intent("gift", "do you sell gift cards")  # type: ignore[arg-type]
    with pytest.raises(FewIntentError, match="non-empty name"):
        clf.add_intent(None, ["do you sell gift cards"])  # type: ignore[arg-type]
    with pytest.raises(FewIntentError, match="texts must be strings"):
        clf.add_intent("gift", ["ok", 3])  # type: ignore[list-item]
    with pytest.raises(FewIntentError, match="intent name is a string"):
        clf.remove_intent(None)  # type: ignore[arg-type]
    assert clf.labels == ["card", "balance"]


def test_python_api_edits_normalise_intent_names_like_files_and_http():
    clf = fit()
    nfd, nfc = unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFC", "café")
    clf.add_intent(nfd, ["a latte please", "a flat white"])
    assert nfc in clf.labels and nfd not in clf.labels
    known = clf.labels[0]
    with pytest.warns(FewIntentWarning, match="only by case"):
        clf.add_intent(known.upper(), ["something else entirely"])
    clf.remove_intent(nfd)  # the decomposed spelling finds the composed intent
    assert nfc not in clf.labels


def test_examples_must_be_a_list_of_texts_not_a_mapping_or_bytes():
    clf = fit()
    for bad in ({"a latte": 1}, b"a latte"):
        with pytest.raises(FewIntentError, match="list of texts"):
            clf.add_intent("coffee", bad)  # type: ignore[arg-type]
    assert "coffee" not in clf.labels


# --- evaluation and cross-validation -------------------------------------------------------------------------------


def test_cv_folds_are_clamped_and_impossible_cv_says_why(tiny_encoder):
    data = IntentSet.from_pairs([*ROWS, ("hi", "greet")])
    result = cross_validate(IntentClassifier(tiny_encoder), data, 1000)
    assert result.folds == 2 and any("1000 folds asked, 2 run" in w for w in result.warnings)
    assert any("one example (greet)" in w for w in result.warnings)
    singles = IntentSet.from_pairs([("a", "x"), ("b", "y"), ("c", "z"), ("d", "z")])
    for folds in (2, 5, "loo"):
        with pytest.raises(FewIntentError, match="at least two intents with two or more examples"):
            cross_validate(IntentClassifier(tiny_encoder), singles, folds)


def test_python_api_mistakes_are_fewintent_errors(tmp_path):
    from fewintent import evaluate

    with pytest.raises(FewIntentError, match="pair"):
        IntentSet.from_pairs([("a", "b", "c")])  # type: ignore[list-item]
    with pytest.raises(FewIntentError, match="not a single string"):
        IntentSet.from_pairs("ab")  # type: ignore[arg-type]
    clf = fit()
    test = write_rows(tmp_path / "t.jsonl", [("where is my card", "card"), ("what is the weather", "oos")])
    assert evaluate(clf, test).n == 2  # a path, as calibrate takes
    with pytest.raises(FewIntentError, match="IntentSet or a labelled file"):
        evaluate(clf, 5)  # type: ignore[arg-type]


# --- the README's Python example -----------------------------------------------------------------------------------


def _readme_python() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Python\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    """The README's Python block, on the demo files, with the real packaged encoder (the ONNX line needs the
    onnx extra and is run by tests/test_onnx.py's export tests instead)."""
    code = _readme_python()
    assert "data/demo_company.jsonl" in code
    shutil.copytree(ROOT / "data", tmp_path / "data", ignore=shutil.ignore_patterns("benchmarks"))
    monkeypatch.chdir(tmp_path)
    lines = [line for line in code.splitlines() if "IntentClassifier.export(" not in line]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewIntentWarning)
        namespace: dict = {}
        exec("\n".join(lines), namespace)  # noqa: S102 - our own README
    assert namespace["found"].clusters, "the demo's logs give candidate intents"
    assert IntentClassifier.load(tmp_path / "models" / "demo").labels == namespace["clf"].labels


def test_a_fewintent_model_given_as_base_names_its_base(tmp_path):
    from fewintent.encoder.encoder import resolve_base

    model = fit().save(tmp_path / "m")
    base = json.loads((model / "config.json").read_text())["base_model"]
    with pytest.raises(FewIntentError, match=rf"is a fewintent model, not an encoder base: .*\(--base {base}\)"):
        resolve_base(model)
    data = write_rows(tmp_path / "d.jsonl", ROWS)
    one_line_error(run("adapt", data, "-o", tmp_path / "x", "--base", model), "is a fewintent model")

"""Hostile input that once gave a silent garbage model or a traceback: each case is refused or handled clearly."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_model_dir
from typer.testing import CliRunner

from fewintent import FewIntentError, IntentClassifier, IntentSet
from fewintent.cli.main import app
from fewintent.data import read_intent_file
from fewintent.encoder.registry import MINILM

runner = CliRunner()
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
SMALL = "\n".join(
    json.dumps({"text": t, "intent": i})
    for t, i in [
        ("where is my card", "card"),
        ("my card did not arrive", "card"),
        ("what is my balance", "balance"),
        ("how much money is left", "balance"),
    ]
)


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def small_file(tmp_path) -> Path:
    p = tmp_path / "small.jsonl"
    p.write_text(SMALL)
    return p


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1, result.output
    for needle in needles:
        assert needle in result.output, result.output


def _base_without_tokenizer(tmp_path: Path) -> Path:
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir(), base)
    for name in TOKENIZER_FILES:
        (base / name).unlink(missing_ok=True)
    return base


# ------------------------------------------------------------------ 1. tokenizer missing or not matching the weights
def test_base_without_tokenizer_is_refused_at_adapt(small_file, tmp_path):
    base = _base_without_tokenizer(tmp_path)
    result = run("adapt", small_file, "-o", tmp_path / "m", "--base", base, "--adapter", "none")
    _one_line_error(result, "tokenizer")
    assert not (tmp_path / "m").exists()


def test_model_whose_base_lost_its_tokenizer_refuses_to_load(small_file, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir(), base)
    assert run("adapt", small_file, "-o", tmp_path / "m", "--base", base, "--adapter", "none").exit_code == 0
    assert json.loads((tmp_path / "m" / "config.json").read_text())["tokenizer_sha256"]
    for name in TOKENIZER_FILES:
        (base / name).unlink(missing_ok=True)
    _one_line_error(run("predict", tmp_path / "m", "hello"), "tokenizer")


def test_model_whose_base_tokenizer_was_replaced_refuses_to_load(small_file, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir(), base)
    assert run("adapt", small_file, "-o", tmp_path / "m", "--base", base, "--adapter", "none").exit_code == 0
    vocab = (base / "tokenizer.json").read_text()
    (base / "tokenizer.json").write_text(vocab.replace('"hello"', '"hellp"'))  # same size, another tokenizer
    _one_line_error(run("predict", tmp_path / "m", "hello"), "tokenizer")


# ------------------------------------------------------------------ 2. thresholds are finite cosines, JSON is strict
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 5, -1.5, "0.5", True, None])
def test_threshold_must_be_a_cosine(tiny_encoder, bad):
    clf = IntentClassifier(tiny_encoder).fit(read_intent_file_from_text(SMALL))
    before = clf.threshold
    with pytest.raises(FewIntentError, match="threshold"):
        clf.threshold = bad
    assert clf.threshold == before


def test_saved_config_is_strict_json_and_corrupt_thresholds_are_refused(tiny_encoder, tmp_path):
    clf = IntentClassifier(tiny_encoder).fit(read_intent_file_from_text(SMALL))
    clf.threshold = 0.25
    clf.save(tmp_path / "m")

    def no_constants(name: str):
        raise AssertionError(f"non-standard JSON constant {name}")

    config = json.loads((tmp_path / "m" / "config.json").read_text(), parse_constant=no_constants)
    assert config["threshold"] == 0.25
    text = (tmp_path / "m" / "config.json").read_text().replace('"threshold": 0.25', '"threshold": NaN')
    (tmp_path / "m" / "config.json").write_text(text)
    _one_line_error(run("predict", tmp_path / "m", "hello"), "threshold")


# ------------------------------------------------------------------ 3. add_intent arguments
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


# ------------------------------------------------------------------ 4. format_version
@pytest.mark.parametrize("version", ["2", None, "abc", 0, -1, 1.5, True])
def test_bad_format_version_is_one_line(tiny_encoder, tmp_path, version):
    IntentClassifier(tiny_encoder).fit(read_intent_file_from_text(SMALL)).save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["format_version"] = version
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    _one_line_error(run("predict", tmp_path / "m", "hello"), "format_version")


# ------------------------------------------------------------------ 5. one example per intent
def test_one_example_per_intent_keeps_a_fallback_and_says_so(tmp_path, real_encoder):
    data = tmp_path / "one.jsonl"
    rows = [("where is my card", "card"), ("what is my balance", "balance"), ("i want to close my account", "close")]
    data.write_text("\n".join(json.dumps({"text": t, "intent": i}) for t, i in rows))
    result = run("adapt", data, "-o", tmp_path / "m", "--adapter", "none", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "cannot be calibrated" in result.output and result.output.count("cannot be calibrated") == 1
    assert IntentClassifier.load(tmp_path / "m").threshold == pytest.approx(MINILM.constants.fallback_threshold)
    out = run("predict", tmp_path / "m", "write me a poem about the sea", "where is my new card?", "--json")
    first, second = (json.loads(line) for line in out.stdout.splitlines())
    assert first["is_oos"] and not second["is_oos"] and second["intent"]["name"] == "card"


# ------------------------------------------------------------------ 6. YAML typing
def test_rasa_intent_names_stay_strings(tmp_path):
    p = tmp_path / "nlu.yml"
    p.write_text(
        'version: "3.1"\nnlu:\n- intent: yes\n  examples: |\n    - yes please\n    - sure\n'
        "- intent: 42\n  examples: |\n    - the answer\n    - forty two\n"
        "- intent: null\n  examples: |\n    - nothing\n    - none at all\n"
    )
    assert sorted(read_intent_file(p).labels) == ["42", "null", "yes"]


# ------------------------------------------------------------------ 7. the smaller annoyances
def test_killed_save_leftovers_are_cleaned_and_files_are_readable(tiny_encoder, tmp_path):
    clf = IntentClassifier(tiny_encoder).fit(read_intent_file_from_text(SMALL))
    dead = tmp_path / ".m.tmp-999999999-abc"  # a pid that cannot exist: its save was killed
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"half")
    alive = tmp_path / f".m.tmp-{os.getpid()}-xyz"  # a save in progress in a live process stays
    alive.mkdir()
    old = os.umask(0o022)
    try:
        clf.save(tmp_path / "m")
    finally:
        os.umask(old)
    assert not dead.exists() and alive.exists()
    for f in (tmp_path / "m").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_conflict_warning_is_short_and_printed_once(tmp_path):
    long = "where is my card " * 100
    rows = [(long, "card"), (long, "balance"), ("card please", "card"), ("balance", "balance"), ("cards", "card")]
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(json.dumps({"text": t, "intent": i}) for t, i in rows + [("money", "balance")]))
    result = run("adapt", p, "-o", tmp_path / "m", "--base", tiny_model_dir(), "--adapter", "none")
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if "labelled both" in line]
    assert len(warning) == 1 and len(warning[0]) < 200


def test_semicolon_csv_gets_a_delimiter_hint(tmp_path):
    p = tmp_path / "semi.csv"
    p.write_text("text;intent\nhello;greet\nbye;leave\n")
    _one_line_error(run("adapt", p, "-o", tmp_path / "m"), "';'-separated")


@pytest.mark.parametrize("value", ["42", "true", "[1, 2]", '{"a": 1}'])
def test_jsonl_text_must_be_a_string(tmp_path, value):
    p = tmp_path / "t.jsonl"
    p.write_text(f'{{"text": {value}, "intent": "a"}}\n{{"text": "b", "intent": "b"}}\n')
    _one_line_error(run("adapt", p, "-o", tmp_path / "m"), ":1:", "must be a string")


def test_copy_of_the_packaged_base_gets_the_shipped_adapter(tmp_path, small_file):
    from fewintent.encoder.encoder import packaged_model_path

    base = tmp_path / "minilm-copy"
    shutil.copytree(packaged_model_path(), base)
    result = run("adapt", small_file, "-o", tmp_path / "m", "--base", base, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "adapter: minilm-meta," in result.output


def test_large_support_warns_and_shows_plain_progress(tmp_path, monkeypatch, capsys):
    from fewintent.cli import _common, adapt

    monkeypatch.setattr(adapt, "LARGE_SUPPORT", 3)
    result = run("adapt", tmp_path / "missing-dir" / "x.jsonl", "-o", tmp_path / "m")
    assert result.exit_code == 1  # (sanity: the flag path exists)
    p = tmp_path / "big.jsonl"
    p.write_text(SMALL)
    result = run("adapt", p, "-o", tmp_path / "m", "--base", tiny_model_dir(), "--adapter", "none")
    assert result.exit_code == 0 and "fewintent is built for 5-10 per intent" in result.output
    monkeypatch.setattr(_common, "PLAIN_PROGRESS_MIN", 10)
    with _common.progress_bar("encoding", 300) as advance:  # stderr is not a terminal under pytest
        for _ in range(30):
            advance(10)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("encoding:")]
    assert lines[0] == "encoding: 30/300" and lines[-1] == "encoding: 300/300" and len(lines) == 10


def test_unknown_hub_id_offline_is_one_line(tmp_path, small_file, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _one_line_error(run("adapt", small_file, "-o", tmp_path / "m", "--base", "unknown-org/unknown-model"), "unknown")


def read_intent_file_from_text(text: str) -> IntentSet:
    pairs = [(r["text"], r["intent"]) for r in map(json.loads, text.splitlines())]
    return IntentSet.from_pairs(pairs)


# ------------------------------------------------------------------ the hostile pass of this change
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


@pytest.mark.parametrize(
    "key, value",
    [
        ("labels", "ab"),
        ("labels", [0, 1]),
        ("labels", ["card", "card"]),
        ("oos_label", 7),
        ("head", "forest"),
        ("intent_names", "yes"),
        ("max_length", "long"),
        ("threshold_manual", "no"),
    ],
)
def test_config_fields_of_the_wrong_type_are_refused(tiny_encoder, tmp_path, key, value):
    IntentClassifier(tiny_encoder).fit(read_intent_file_from_text(SMALL)).save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (config["classifier"] if key in config["classifier"] else config)[key] = value
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    _one_line_error(run("predict", tmp_path / "m", "hello"), key)


def test_cli_edge_cases(tmp_path, small_file):
    p = tmp_path / "nl.jsonl"
    p.write_text(SMALL + "\n" + json.dumps({"text": "cancel it", "intent": "a\nb"}))
    _one_line_error(run("adapt", p, "-o", tmp_path / "m"), "control character")
    y = tmp_path / "nlu.yml"
    y.write_text("nlu:\n- intent: [greet, hello]\n  examples: |\n    - hi\n    - hello\n")
    _one_line_error(run("data", "validate", y), "plain text")
    base = tiny_model_dir()
    assert run("adapt", small_file, "-o", tmp_path / "m", "--base", base, "--adapter", "none").exit_code == 0
    _one_line_error(run("predict", tmp_path / "m", "hi", "--device", "mps"), "mps")
    out = run("predict", tmp_path / "m", "\udcff\udcfe bad bytes", "--json")  # what argv holds for bad bytes
    assert out.exit_code == 0, out.output
    unknown = tmp_path / "u.jsonl"
    unknown.write_text(json.dumps({"text": "hello friend", "intent": "nope"}))
    result = run("evaluate", tmp_path / "m", unknown, "--json")
    assert result.exit_code == 0 and "unknown to the model" in result.stderr
    assert json.loads(result.stdout)["unknown_intents"] == ["nope"]


def test_case_variants_of_the_oos_label_are_not_intents(tiny_encoder, tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(SMALL + "\n" + json.dumps({"text": "tell me a joke", "intent": "OOS"}))
    _one_line_error(run("adapt", p, "-o", tmp_path / "m"), "only by case")
    clf = IntentClassifier(tiny_encoder).fit(read_intent_file_from_text(SMALL))
    with pytest.raises(FewIntentError, match="out-of-scope label"):
        clf.add_intent("OOS", ["tell me a joke"])


def test_many_intents_warn_about_the_linear_head(tmp_path, monkeypatch):
    from fewintent.cli import adapt

    monkeypatch.setattr(adapt, "MANY_INTENTS", 1)
    p = tmp_path / "t.jsonl"
    p.write_text(SMALL)
    result = run("adapt", p, "-o", tmp_path / "m", "--base", tiny_model_dir(), "--adapter", "none")
    assert result.exit_code == 0 and "--head prototype fits instantly" in result.output

"""Issue 34, third pass: a config.json missing what its format needs, outputs inside a model directory, --help that
reads well, and the rough edges a newcomer meets. Tiny models; the format-2 fixture only where a real adapter is
needed (its config is refused before any encoder loads)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fewintent import IntentClassifier, IntentSet
from fewintent.cli.main import app
from fewintent.errors import CorruptModelError, FewIntentError

FIXTURE = Path(__file__).parent / "fixtures" / "model-format-2"
EXAMPLES = {
    "greet": ["hello there", "hi", "good morning", "hey"],
    "card": ["lost my card", "card stolen", "block my card", "card missing"],
    "weather": ["will it rain", "weather today", "is it sunny", "forecast please"],
}
DATA = IntentSet.from_pairs([(t, i) for i, texts in EXAMPLES.items() for t in texts])
runner = CliRunner()


def _fixture_copy(tmp_path: Path) -> Path:
    target = tmp_path / "m"
    shutil.copytree(FIXTURE, target)
    return target


def _edit(model: Path, **changes: object) -> None:
    config = json.loads((model / "config.json").read_text())
    for key, value in changes.items():
        if value is ...:
            config.pop(key, None)
        else:
            config[key] = value
    (model / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lora", ...),
        ("lora", None),
        ("classifier", ...),
        ("classifier", None),
        ("threshold", ...),
        ("base_model", ...),
        ("oos_temperature", ...),
        ("max_length", ...),
    ],
)
def test_a_config_missing_what_its_format_needs_is_refused(tmp_path, key, value):
    model = _fixture_copy(tmp_path)
    _edit(model, **{key: value})
    with pytest.raises(CorruptModelError, match=f"lacks '{key}'"):
        IntentClassifier.load(model)
    result = runner.invoke(app, ["predict", str(model), "hello"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and f"lacks '{key}'" in result.output


def test_lora_is_required_when_the_meta_names_an_adapter_even_without_the_file(tmp_path):
    model = _fixture_copy(tmp_path)
    (model / "lora.safetensors").unlink()
    _edit(model, lora=None)
    with pytest.raises(CorruptModelError, match="lacks 'lora'"):
        IntentClassifier.load(model)


def test_classifier_must_be_an_object(tmp_path):
    model = _fixture_copy(tmp_path)
    _edit(model, classifier=["linear"])
    with pytest.raises(CorruptModelError, match='"classifier" must be an object'):
        IntentClassifier.load(model)


def test_a_model_without_an_adapter_still_loads_with_lora_null(tiny_encoder, tmp_path):
    clf = IntentClassifier(tiny_encoder, head="prototype").fit(DATA)
    clf.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["lora"] is None
    again = IntentClassifier.load(tmp_path / "m")
    texts = ["hi", "lost my card"]
    assert [p.to_dict() for p in again.predict(texts)] == [p.to_dict() for p in clf.predict(texts)]


# --- a model directory is replaced whole: nothing is written inside one, and none holds another ---------------------


@pytest.fixture
def tiny_model(tiny_encoder, tmp_path) -> Path:
    IntentClassifier(tiny_encoder, head="prototype").fit(DATA).save(tmp_path / "m")
    return tmp_path / "m"


def test_a_model_is_never_saved_inside_another_model(tiny_model, tmp_path):
    clf = IntentClassifier.load(tiny_model)
    with pytest.raises(FewIntentError, match="inside the model directory .* replaced whole"):
        clf.save(tiny_model / "onnx")
    assert not (tiny_model / "onnx").exists()
    result = runner.invoke(app, ["adapt", str(tmp_path / "train.csv"), "-o", str(tiny_model / "sub" / "x")])
    assert result.exit_code == 1 and "inside the model directory" in result.output


def test_a_model_holding_another_is_not_replaced_by_a_save(tiny_model):
    shutil.copytree(tiny_model, tiny_model / "old")  # as an earlier release let `export m -o m/old` write it
    clf = IntentClassifier.load(tiny_model)
    with pytest.raises(FewIntentError, match="holds another model"):
        clf.save(tiny_model)
    assert (tiny_model / "old" / "config.json").exists()
    with pytest.raises(FewIntentError, match="inside the model directory"):
        IntentClassifier.load(tiny_model / "old").save(tiny_model / "old")


def test_export_onto_another_existing_model_needs_force(tiny_model, tiny_encoder, tmp_path):
    IntentClassifier(tiny_encoder, head="prototype").fit(DATA).save(tmp_path / "other")
    before = (tmp_path / "other" / "config.json").read_text()
    result = runner.invoke(app, ["export", str(tiny_model), "-o", str(tmp_path / "other")])
    assert result.exit_code == 1 and "--force" in result.output and result.output.count("\n") == 1
    assert (tmp_path / "other" / "config.json").read_text() == before
    result = runner.invoke(app, ["export", str(tiny_model), "-o", str(tiny_model / "onnx"), "--force"])
    assert result.exit_code == 1 and "inside the model directory" in result.output


# --- --help: -h, no Python types or <bool>, choices shown, usage names arguments as the text does -----------------


def _commands(command, path=()):
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_every_help_reads_well_at_80_columns():
    import typer.main

    for path in _commands(typer.main.get_command(app)):
        result = runner.invoke(app, [*path, "-h"], terminal_width=80)
        text = result.output
        assert result.exit_code == 0, (path, text)
        assert text.startswith(f"Usage: fewintent {' '.join(path)}".rstrip()), (path, text[:80])
        for bad in ("<bool>", "list[", "<str>", "<float", "<int range>", "Path]"):
            assert bad not in text, (path, bad, text)
        assert "{" not in text.splitlines()[0], text
        assert max(map(len, text.splitlines())) <= 80, (path, text)
        assert "-h, --help" in text
    adapt = runner.invoke(app, ["adapt", "--help"], terminal_width=80).output
    assert adapt.startswith("Usage: fewintent adapt [OPTIONS] TRAIN_FILE...\n") and len(adapt.splitlines()) < 90
    assert "--device <auto|cpu|cuda>" in adapt and "--head <linear|prototype" in adapt
    assert "--json  " in runner.invoke(app, ["predict", "-h"]).output  # a flag takes no value
    predict = runner.invoke(app, ["predict", "-h"]).output
    assert "MODEL_DIR [TEXTS]..." in predict.splitlines()[0]
    evaluate = runner.invoke(app, ["evaluate", "-h"]).output
    assert "MODEL_DIR|TRAIN_FILE [TEST_FILES]..." in evaluate.splitlines()[0]
    assert "--log-level <critical|error|warning|info|debug>" in runner.invoke(app, ["serve", "-h"]).output
    assert "--quantize <int8>" in runner.invoke(app, ["export", "-h"]).output


def test_meta_train_algo_choices_are_the_algorithms():
    from fewintent.cli.meta_train import ALGORITHMS
    from fewintent.meta.args import Algorithm

    assert ALGORITHMS == "<" + "|".join(a.value for a in Algorithm) + ">"


# --- rough edges ----------------------------------------------------------------------------------------------------


def test_a_threshold_is_checked_against_its_score_s_own_range(tiny_encoder, tmp_path):
    clf = IntentClassifier(tiny_encoder, head="prototype", oos_score="mahalanobis").fit(DATA)
    assert clf.threshold < 0  # minus a distance
    with pytest.raises(FewIntentError, match="above the highest score"):
        clf.threshold = 0.5  # every message would be out of scope
    clf.threshold = -100.0  # any reachable value is fine
    clf.save(tmp_path / "m")
    _edit(tmp_path / "m", threshold=3.0)
    with pytest.raises(CorruptModelError, match="above the highest score"):
        IntentClassifier.load(tmp_path / "m")
    energy = IntentClassifier(tiny_encoder, head="linear", oos_score="energy").fit(DATA)
    energy.threshold = 5.0  # unbounded scores take any finite number


def test_predict_with_one_string_returns_one_prediction(tiny_encoder):
    clf = IntentClassifier(tiny_encoder, head="prototype").fit(DATA)
    one = clf.predict("lost my card")
    assert one.to_dict() == clf.predict(["lost my card"])[0].to_dict()
    assert len(clf.predict(["hi"])) == 1


RASA = """version: "3.1"
nlu:
- intent: greet
  examples: |
    - hello there
    - hi
- synonym: credit
  examples: |
    - credit card
- regex: account_number
  examples: |
    - \\d{10,12}
- lookup: city
  examples: |
    - Berlin
"""


def test_rasa_synonym_regex_and_lookup_blocks_are_reported_as_skipped(tmp_path):
    from fewintent.data import read_intent_file

    (tmp_path / "nlu.yml").write_text(RASA + "- intent: bye\n  examples: |\n    - goodbye\n    - see you\n")
    data = read_intent_file(tmp_path / "nlu.yml")
    note = next(w for w in data.warnings if "skipped" in w)
    assert "1 synonym block" in note and "1 regex block" in note and "1 lookup block" in note


def test_adapt_reads_several_files_or_a_rasa_folder_as_one(tmp_path):
    from fewintent.data import read_intent_files

    nlu = tmp_path / "data" / "nlu"
    nlu.mkdir(parents=True)
    (nlu / "greet.yml").write_text(RASA)
    (nlu / "card.yml").write_text("nlu:\n- intent: card\n  examples: |\n    - lost my card\n    - hi\n")
    (tmp_path / "data" / "stories.yml").write_text("stories:\n- story: happy\n  steps: []\n")
    data = read_intent_files([tmp_path / "data"])
    assert sorted(data.labels) == ["card", "greet"]
    assert data.texts.count("hi") == 1  # cleaning runs across files: 'hi' under two intents keeps the first
    assert any("stories.yml: skipped" in w for w in data.warnings)
    csv = tmp_path / "more.csv"
    csv.write_text("text,intent\nwhat is the weather,weather\nwill it rain,weather\n")
    both = read_intent_files([nlu / "greet.yml", csv])
    assert sorted(both.labels) == ["greet", "weather"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FewIntentError, match="no intent files"):
        read_intent_files([tmp_path / "empty"])


def test_adapt_flags_that_would_be_ignored_are_not_silent(tmp_path):
    train = tmp_path / "train.csv"
    rows = [f"{w} {i},{w}" for w in ("alpha", "beta") for i in range(3)] + ["write a poem,oos"] * 1
    train.write_text("text,intent\n" + "\n".join(rows) + "\n")
    result = runner.invoke(app, ["adapt", str(train), "-o", str(tmp_path / "m"), "--tune-time", "30"])
    assert result.exit_code == 1 and "--tune-time is the time budget of --tune" in result.output
    from conftest import tiny_model_dir

    base = ["--base", str(tiny_model_dir()), "--adapter", "none", "--head", "prototype"]
    result = runner.invoke(app, ["adapt", str(train), "-o", str(tmp_path / "m"), *base, "--in-scope-recall", "0.9"])
    assert result.exit_code == 0, result.output
    assert "--in-scope-recall 0.9 is only a floor here: the file's 1 'oos' rows set the threshold" in result.output


def test_a_mis_cased_base_name_suggests_the_registered_one(monkeypatch):
    from fewintent.encoder.encoder import resolve_base

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FewIntentError, match="did you mean 'mpnet'"):
        resolve_base("MPNET")
    with pytest.raises(FewIntentError, match="registered bases: minilm, mpnet"):
        resolve_base("mpnett")

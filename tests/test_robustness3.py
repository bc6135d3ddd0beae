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

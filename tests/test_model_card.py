"""The model card (README.md in a model directory): its text agrees with its YAML front matter."""

from __future__ import annotations

import pytest
import yaml
from helpers import DATA
from test_tuning import _tiny_adapter, _tuned

from fewintent import IntentClassifier


def _card(model) -> tuple[dict, str]:
    text = (model / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def test_a_model_tuned_on_an_adapter_says_both_ranks(tmp_path):
    clf = _tuned(adapter=str(_tiny_adapter(tmp_path)))
    clf.save(tmp_path / "m")
    front, body = _card(tmp_path / "m")
    rank, saved = front["tuning"]["recipe"]["rank"], front["tuning"]["lora"]["r"]
    assert saved == rank + 8  # the adapter's rank-8 layers and the tuned ones, joined
    assert f"rank-{rank} LoRA layers on top of the adapter (saved joined with it as one rank-{saved} adapter" in body


def test_an_int8_export_says_onnx_and_int8(tiny_encoder, tmp_path):
    pytest.importorskip("onnxruntime")
    IntentClassifier(tiny_encoder).fit(DATA).save(tmp_path / "m")
    front, body = _card(tmp_path / "m")
    assert "encoder_format" not in front and "ONNX" not in body
    IntentClassifier.export(tmp_path / "m", tmp_path / "int8", quantize="int8")
    front, body = _card(tmp_path / "int8")
    assert front["encoder_format"] == "onnx" and front["quantize"] == "int8" and "int8" in front["tags"]
    assert "The encoder is an ONNX graph with int8-quantized weights" in body
    IntentClassifier.export(tmp_path / "m", tmp_path / "fp32")
    front, body = _card(tmp_path / "fp32")
    assert front["quantize"] is None and "ONNX graph (float32)" in body


def test_the_card_shows_rounded_numbers_and_config_json_keeps_them_whole(tmp_path):
    import json

    clf = _tuned()
    clf.meta["tune"]["held_out_accuracy"] = [0.1 + 0.2, 0.9999999999999999] + clf.meta["tune"]["held_out_accuracy"][2:]
    clf.save(tmp_path / "m")
    front, _ = _card(tmp_path / "m")
    assert front["tuning"]["held_out_accuracy"][:2] == [0.3, 1.0]
    assert "0.9999999999999999" not in (tmp_path / "m" / "README.md").read_text()
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["meta"]["tune"]["held_out_accuracy"][:2] == [0.1 + 0.2, 0.9999999999999999]

"""The encoder registry, the one ClassifierConfig, and old model directories loading unchanged."""

from __future__ import annotations

import json
import shutil
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
import torch
from conftest import ROOT, tiny_model_dir
from typer.testing import CliRunner

from fewintent import ClassifierConfig, FewIntentError, IntentClassifier
from fewintent.cli.main import app
from fewintent.encoder.encoder import SentenceEncoder, packaged_model_path, pool, read_pooling, resolve_base
from fewintent.encoder.lora import SHIPPED_ADAPTERS_DIR, attach_lora, read_adapter, resolve_adapter, shipped_adapters
from fewintent.encoder.registry import BASES, MINILM, constants_for, registered

FIXTURE = ROOT / "tests" / "fixtures" / "model-format-1"


def test_bases_json_lists_every_registered_base():
    result = CliRunner().invoke(app, ["bases", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == list(BASES)
    minilm = rows[0]
    assert minilm["name"] == "minilm" and minilm["installed"] is True and minilm["install"] is None
    assert minilm["hub_id"] == "sentence-transformers/all-MiniLM-L6-v2" and minilm["dim"] == 384
    assert minilm["parameters"] == 22_713_216 and minilm["default_adapter"] == "minilm-meta"
    for row in rows:
        assert row["installed"] or row["install"].startswith(("pip install", "fewintent bases install"))
    assert {r["name"]: r["default_adapter"] for r in rows} == {"minilm": "minilm-meta", "mpnet": "mpnet-meta"}
    table = CliRunner().invoke(app, ["bases"])
    assert table.exit_code == 0 and "minilm" in table.output


def test_every_shipped_adapter_was_trained_on_its_base_and_auto_finds_each_bases_default():
    for spec in BASES.values():
        assert spec.default_adapter is not None
        assert resolve_adapter("auto", spec.name) == SHIPPED_ADAPTERS_DIR / spec.default_adapter
    for name in shipped_adapters():
        spec = registered(name.split("-meta")[0])
        assert spec is not None, name
        config, state = read_adapter(SHIPPED_ADAPTERS_DIR / name)
        assert config["base_sha256"] == spec.weights_sha256, name
        assert set(config["lora"]["target_modules"]) == set(spec.lora_targets), name
        assert state and all(torch.isfinite(t).all() for t in state.values()), name


def test_registered_names_aliases_and_byte_identical_copies_resolve_to_the_spec(tmp_path):
    for name in (None, "", "minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        base = resolve_base(name)
        assert base.spec is MINILM and base.name == MINILM.hub_id and base.location == packaged_model_path()
    copy = tmp_path / "copy"
    shutil.copytree(packaged_model_path(), copy)
    assert resolve_base(str(copy)).spec is MINILM  # its adapters and constants apply
    assert resolve_adapter("auto", str(copy), MINILM.weights_sha256) is not None
    assert resolve_adapter("auto", str(tiny_model_dir())) is None  # an unregistered base: the frozen encoder
    assert registered("bert-base-uncased") is None
    assert constants_for("bert-base-uncased") == constants_for("minilm")  # MiniLM's numbers, the only measured


def test_a_registered_file_changed_by_one_byte_is_refused(tmp_path, monkeypatch):
    import fewintent.encoder.sources as sources

    copy = tmp_path / "model"
    shutil.copytree(packaged_model_path(), copy)
    data = bytearray((copy / "vocab.txt").read_bytes())
    data[100] ^= 1
    (copy / "vocab.txt").write_bytes(bytes(data))
    monkeypatch.setattr(
        sources.PackageSource, "locate", lambda self, files: sources.verify_files(copy, files, fix="reinstall")
    )
    with pytest.raises(FewIntentError, match=r"vocab.txt \(sha256 differs\).*reinstall"):
        resolve_base("minilm")


def test_unregistered_hub_id_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FewIntentError, match="HF_HUB_OFFLINE is set and it is not in the Hugging Face cache"):
        SentenceEncoder("someone/not-cached-model")


def test_unregistered_local_model_records_its_weights_hash_and_finds_lora_targets():
    enc = SentenceEncoder(str(tiny_model_dir()), device="cpu")
    assert enc.spec is None and enc.sha256 and len(enc.sha256) == 64  # an adapter's base check never skips
    settings = attach_lora(enc)
    assert settings.target_modules == ["query", "key", "value"]


def test_pooling_is_read_from_the_models_sentence_transformers_config(tmp_path):
    assert read_pooling(packaged_model_path()) == "mean"
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert read_pooling(tmp_path) == "cls"
    assert read_pooling(tmp_path / "nowhere", default="max") == "max"
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [9.0, 9.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 2.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 0.0]]
    assert pool(hidden, mask, "max").tolist() == [[3.0, 4.0]]  # the padded token never wins


def test_classifier_config_is_frozen_checked_and_round_trips():
    config = ClassifierConfig(head="prototype", head_c=3)
    assert config.head == "prototype" and config.head_c == 3.0
    with pytest.raises(FrozenInstanceError):
        config.head_c = 1.0  # type: ignore[misc]
    assert ClassifierConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(FewIntentError, match="unknown setting"):
        ClassifierConfig.from_dict({"head": "linear", "heed": 1})
    with pytest.raises(FewIntentError, match="unknown OOS score 'energie'"):
        ClassifierConfig(oos_score="energie")
    resolved = ClassifierConfig().resolved(MINILM.constants)
    assert resolved.head_c == MINILM.constants.head_c and resolved.scale == MINILM.constants.scale
    assert ClassifierConfig(head_c=5.0).resolved(MINILM.constants).head_c == 5.0  # set by the user: kept


def test_a_model_directory_from_the_previous_release_loads_and_predicts_the_same(tmp_path):
    expected = json.loads((FIXTURE.parent / "model-format-1-expected.json").read_text())
    path = tmp_path / "old"
    shutil.copytree(FIXTURE, path)
    clf = IntentClassifier.load(path, device="cpu")
    assert clf.config.intent_names and clf.config.head == "linear"
    assert clf.training is not None and clf.training.adapter == "minilm-meta"  # provenance, not a setting
    predictions = clf.predict(expected["texts"])
    assert [p.intent.name for p in predictions] == expected["intents"]
    assert [p.intent.confidence for p in predictions] == pytest.approx(expected["confidences"], abs=1e-4)
    clf.save(path)  # written again in the current format, same answers
    again = IntentClassifier.load(path, device="cpu")
    assert json.loads((path / "config.json").read_text())["format_version"] == 2
    assert [p.intent.name for p in again.predict(expected["texts"])] == expected["intents"]


def test_a_model_directory_from_the_release_before_the_trainer_loads_and_predicts_the_same(tmp_path):
    """Format 2 as written before the trainer split: training arguments inside "classifier", no "training"."""
    fixture = FIXTURE.parent / "model-format-2"
    config = json.loads((fixture / "config.json").read_text())
    assert "training" not in config and config["classifier"]["adapter"] == "auto"
    expected = json.loads((FIXTURE.parent / "model-format-2-expected.json").read_text())
    path = tmp_path / "old"
    shutil.copytree(fixture, path)
    clf = IntentClassifier.load(path, device="cpu")
    assert clf.training is not None and clf.training.adapter == "auto" and clf.config.head == "linear"
    predictions = clf.predict(expected["texts"])
    assert [p.intent.name for p in predictions] == expected["intents"]
    assert [p.intent.confidence for p in predictions] == pytest.approx(expected["confidences"], abs=1e-4)
    assert [p.oos_score for p in predictions] == pytest.approx(expected["oos_scores"], abs=1e-4)
    clf.save(path)  # written again: settings and provenance apart, same answers
    saved = json.loads((path / "config.json").read_text())
    assert "adapter" not in saved["classifier"] and saved["training"]["adapter"] == "auto"
    again = IntentClassifier.load(path, device="cpu")
    assert [p.intent.confidence for p in again.predict(expected["texts"])] == pytest.approx(
        expected["confidences"], abs=1e-4
    )


def test_fixture_directory_is_what_the_previous_release_wrote():
    config = json.loads((FIXTURE / "config.json").read_text())
    assert config["format_version"] == 1 and "classifier" not in config and config["head"] == "linear"
    assert Path(FIXTURE / "lora.safetensors").is_file()


def test_a_setting_is_one_field_saved_as_it_is(tmp_path):
    clf = IntentClassifier.adapt(
        {"greet": ["hi", "hello"], "bye": ["bye", "see you"]}, adapter="none", max_length=16, device="cpu"
    )
    assert clf.encoder.max_length == 16 and clf.config.max_length == 16
    clf.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["classifier"]
    assert saved == clf.config.to_dict() and saved["max_length"] == 16
    assert IntentClassifier.load(tmp_path / "m", device="cpu").config == clf.config
    with pytest.raises(FewIntentError, match="max_length"):
        ClassifierConfig(max_length=0)


def test_an_unreachable_hub_fails_fast_in_one_line(monkeypatch):
    import socket

    import huggingface_hub

    def refuse(*args, **kwargs):
        raise OSError("Name or service not known")

    def download(*args, **kwargs):
        if not kwargs.get("local_files_only"):
            pytest.fail("no download may start once the hub is known to be unreachable")
        raise FileNotFoundError("not cached")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    with pytest.raises(FewIntentError, match="cannot be reached"):
        SentenceEncoder("someone/not-cached-model")

"""ONNX and int8 model directories: export, load, the same predictions as torch, live edits, damaged graphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_encoder
from typer.testing import CliRunner

from fewintent import FewIntentError, IntentClassifier, IntentSet
from fewintent.cli.main import app
from fewintent.errors import CorruptModelError

pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
DATA = IntentSet.from_pairs(
    [(f"{w} number {i}", w) for w in ("alpha", "beta", "gamma") for i in range(4)] + [("unrelated thing", "oos")]
)
TEXTS = ["alpha number 9", "gamma", "something else entirely", "beta beta beta number"]


@pytest.fixture
def torch_model(tmp_path) -> Path:
    IntentClassifier(make_tiny_encoder()).fit(DATA).save(tmp_path / "torch")
    return tmp_path / "torch"


def test_fp32_export_predicts_like_torch_and_keeps_everything(torch_model, tmp_path):
    out = tmp_path / "onnx"
    result = runner.invoke(app, ["export", str(torch_model), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"encoder.onnx", "tokenizer.json", "model.safetensors", "config.json"}
    before, after = IntentClassifier.load(torch_model), IntentClassifier.load(out)
    assert type(after.encoder).__name__ == "OnnxEncoder"
    assert after.labels == before.labels and after.threshold == before.threshold and after.config == before.config
    assert np.allclose(after.predict_proba(TEXTS), before.predict_proba(TEXTS), atol=1e-4)
    a, b = before.predict(TEXTS), after.predict(TEXTS)
    assert [p.intent.name for p in a] == [p.intent.name for p in b]
    assert np.allclose([p.oos_score for p in a], [p.oos_score for p in b], atol=1e-5)
    config = json.loads((out / "config.json").read_text())
    assert config["encoder"]["format"] == "onnx" and config["encoder"]["quantize"] is None


def test_long_batches_run_in_pieces_of_bounded_tokens_in_input_order(torch_model, tmp_path, monkeypatch):
    import fewintent.encoder.onnx_runtime as onnx_runtime

    monkeypatch.setattr(onnx_runtime, "MAX_BATCH_TOKENS", 24)
    encoder = IntentClassifier.export(torch_model, tmp_path / "onnx").encoder
    shapes, run = [], encoder.session.run

    class Recording:  # onnxruntime's session type cannot be patched: wrap it
        def run(self, outputs, feeds):
            shapes.append(feeds["input_ids"].shape)
            return run(outputs, feeds)

    texts = [" ".join(["alpha"] * (i % 7 + 1) + [f"number {i}"]) for i in range(20)] + ["beta " * 40]
    encoder.session = Recording()
    together = encoder.encode(texts)
    assert len(shapes) > 1 and all(rows == 1 or rows * width <= 24 for rows, width in shapes), shapes
    assert sum(rows for rows, _ in shapes) == len(texts)
    alone = np.concatenate([encoder.encode([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)


def test_int8_export_is_smaller_and_loads(torch_model, tmp_path):
    fp32, int8 = tmp_path / "fp32", tmp_path / "int8"
    IntentClassifier.export(torch_model, fp32)
    clf = IntentClassifier.export(torch_model, int8, quantize="int8")

    def size(d):
        return sum((d / f).stat().st_size for f in ("encoder.onnx", "encoder.onnx.data"))

    assert size(int8) < size(fp32) / 2
    assert len(clf.predict(TEXTS)) == 4 and IntentClassifier.load(int8).labels == ["alpha", "beta", "gamma"]


def test_the_graph_weights_live_beside_it_are_copied_on_save_and_verified(torch_model, tmp_path):
    out, copy = tmp_path / "int8", tmp_path / "copy"
    clf = IntentClassifier.export(torch_model, out, quantize="int8")
    # the weights are ONNX external data (a worker maps them instead of holding two copies while loading)
    assert (out / "encoder.onnx.data").stat().st_size > (out / "encoder.onnx").stat().st_size
    clf.add_intent("delta", ["delta one", "delta two"])
    clf.save(copy)
    again = IntentClassifier.load(copy)
    assert [p.intent.name for p in again.predict(TEXTS)] == [p.intent.name for p in clf.predict(TEXTS)]
    data = copy / "encoder.onnx.data"
    data.write_bytes(data.read_bytes()[:-1] + b"\x00")
    with pytest.raises(CorruptModelError, match="encoder.onnx.data: sha256"):
        IntentClassifier.load(copy)
    data.unlink()
    with pytest.raises(CorruptModelError, match="lacks encoder.onnx.data"):
        IntentClassifier.load(copy)


def test_edits_on_an_onnx_model_persist_with_its_graph(torch_model, tmp_path):
    out = tmp_path / "onnx"
    clf = IntentClassifier.export(torch_model, out)
    clf.add_intent("delta", ["delta one", "delta two"])
    clf.remove_intent("beta")
    clf.save(out)  # over itself, as the server's edits do
    again = IntentClassifier.load(out)
    assert again.labels == ["alpha", "gamma", "delta"]
    assert [p.intent.name for p in again.predict(TEXTS)] == [p.intent.name for p in clf.predict(TEXTS)]
    clf.save(tmp_path / "copy")  # and elsewhere: the graph is copied along
    assert IntentClassifier.load(tmp_path / "copy").labels == again.labels


def test_damaged_onnx_directories_are_refused_in_one_line(torch_model, tmp_path):
    out = tmp_path / "onnx"
    IntentClassifier.export(torch_model, out)
    graph = out / "encoder.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])  # truncated
    result = runner.invoke(app, ["predict", str(out), "hello"])
    assert result.exit_code == 1 and "encoder.onnx" in result.output and result.output.count("\n") == 1
    graph.unlink()  # missing
    result = runner.invoke(app, ["predict", str(out), "hello"])
    assert result.exit_code == 1 and "lacks encoder.onnx" in result.output
    with pytest.raises(FewIntentError, match="other than the model itself"):
        IntentClassifier.export(torch_model, torch_model)
    with pytest.raises(FewIntentError, match="unknown --quantize"):
        IntentClassifier.export(torch_model, tmp_path / "x", quantize="int4")
    IntentClassifier.export(torch_model, tmp_path / "again")
    with pytest.raises(FewIntentError, match="already an ONNX model"):
        IntentClassifier.export(tmp_path / "again", tmp_path / "y")


def test_missing_onnxruntime_says_how_to_install(torch_model, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    IntentClassifier.export(torch_model, tmp_path / "onnx")
    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    result = runner.invoke(app, ["predict", str(tmp_path / "onnx"), "hello"])
    assert result.exit_code == 1 and "'.[onnx]'` in the fewintent checkout" in result.output  # what works from a clone
    assert "pip install -e '.[onnx]'" in result.output  # this checkout is installed editable
    result = runner.invoke(app, ["export", str(torch_model), "-o", str(tmp_path / "again")])
    assert result.exit_code == 1 and "exporting to ONNX needs onnxruntime" in result.output
    assert "torch model directory" not in result.output  # advice that does not apply to export


def test_real_minilm_int8_agrees_with_torch(tmp_path):
    from fewintent.data import read_intent_file

    torch_dir = tmp_path / "demo"
    IntentClassifier.adapt(ROOT / "data" / "demo_company.jsonl", device="cpu").save(torch_dir)
    IntentClassifier.export(torch_dir, tmp_path / "int8", quantize="int8")
    test = read_intent_file(ROOT / "data" / "demo_company_test.jsonl", for_training=False)
    texts = test.texts + test.oos_texts
    a = IntentClassifier.load(torch_dir).predict(texts)
    b = IntentClassifier.load(tmp_path / "int8").predict(texts)
    same = np.mean([x.intent.name == y.intent.name for x, y in zip(a, b)])
    assert same >= 0.9, same


def test_served_onnx_model_predicts_and_edits_like_torch(torch_model, tmp_path):
    from test_serve import serving

    out = tmp_path / "onnx"
    IntentClassifier.export(torch_model, out, quantize="int8")
    with serving(out) as server, server.client() as c:
        r = c.post("/predict", json={"texts": TEXTS})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 4
        assert c.post("/intents", json={"name": "delta", "examples": ["delta one", "delta two"]}).status_code == 200
        assert c.delete("/intents/beta").status_code == 200
        assert c.delete("/intents/nope").status_code == 404
    again = IntentClassifier.load(out)  # the edits were saved with the graph
    assert again.labels == ["alpha", "gamma", "delta"] and type(again.encoder).__name__ == "OnnxEncoder"


def test_onnx_report_table_reads_the_protocol_rows():
    from fewintent.bench.lean import onnx_table

    row = {
        "protocol": "onnx",
        "dataset": "banking77",
        "top1_agreement": 0.995,
        "top1_accuracy": 0.86,
        "oos_decision_agreement": 0.99,
        "latency_p50_ms": 5.0,
        "latency_p99_ms": 9.0,
        "throughput_qps": 400.0,
        "p50_speedup_vs_torch": 2.5,
        "throughput_vs_torch": 2.1,
        "disk_mb": 22.8,
        "worker_peak_rss_mb": 240.0,
        "worker_seconds": 3.1,
    }
    rows = [
        {**row, "method": m, "device": f"cpu, {t} thread{'s' if t > 1 else ''}"}
        for m in ("torch-fp32", "onnx-int8")
        for t in (1, 2)
    ]
    lines = onnx_table(rows)
    table = [line for line in lines if line.startswith("| `")]
    assert len(table) == 4 and "99.50%" in table[0] and "2.50×" in table[0]
    assert onnx_table([{"protocol": "fullway"}]) == []


def test_a_base_without_token_type_ids_exports_and_predicts_like_torch(tmp_path):
    """MPNet-style encoders take no token_type_ids: the graph must not ask for them, and LoRA finds q/k/v."""
    import torch
    from conftest import tiny_model_dir
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel

    from fewintent.encoder.encoder import SentenceEncoder
    from fewintent.encoder.lora import attach_lora

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir()))
    config = MPNetConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=160,
    )
    base = tmp_path / "tiny-mpnet"
    MPNetModel(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    encoder = SentenceEncoder(str(base), device="cpu")
    assert not encoder.takes_token_type_ids and "token_type_ids" not in encoder.tokenize(["hi there"])
    assert attach_lora(SentenceEncoder(str(base), device="cpu")).target_modules == ["q", "k", "v"]
    IntentClassifier(encoder).fit(DATA).save(tmp_path / "torch")
    result = runner.invoke(app, ["export", str(tmp_path / "torch"), "-o", str(tmp_path / "onnx")])
    assert result.exit_code == 0, result.output
    after = IntentClassifier.load(tmp_path / "onnx")
    assert "token_type_ids" not in after.encoder.input_names
    before = IntentClassifier.load(tmp_path / "torch")
    assert np.allclose(after.predict_proba(TEXTS), before.predict_proba(TEXTS), atol=1e-4)

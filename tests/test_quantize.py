"""int8 recipes: which nodes stay fp32, the blockwise 8-bit MatMul rewrite, and what ``export --quantize int8``
writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_tiny_encoder

from fewintent import IntentClassifier, IntentSet

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from fewintent.encoder.quantize import INT8, Int8Recipe, fp32_nodes, quantize_int8  # noqa: E402

DATA = IntentSet.from_pairs([(f"{w} number {i}", w) for w in ("alpha", "beta", "gamma") for i in range(4)])
FFN_OUT = r"/layer\.\d+/output/dense/"


@pytest.fixture(scope="module")
def fp32_graph(tmp_path_factory):
    """A tiny BERT exported to fp32 ONNX through the product's path (three layers: first, middle, last)."""
    root = tmp_path_factory.mktemp("quantize")
    IntentClassifier(make_tiny_encoder(layers=3)).fit(DATA).save(root / "torch")
    IntentClassifier.export(root / "torch", root / "fp32")
    return root / "fp32" / "encoder.onnx"


def _run(graph, feeds):
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in names})[0]


def test_keep_patterns_name_the_feed_forward_output_and_the_last_layer(fp32_graph):
    model = onnx.load(str(fp32_graph))
    ffn = fp32_nodes(model, Int8Recipe(keep=(FFN_OUT,)))
    # the feed-forward output of every layer, not BERT's attention output (attention/output/dense)
    assert ffn == [f"/model/encoder/layer.{i}/output/dense/MatMul" for i in range(3)]
    last = fp32_nodes(model, Int8Recipe(keep=(r"/layer\.{last}/",)))
    assert last and all("/layer.2/" in n for n in last) and len(last) == 6  # q, k, v, attention out, ffn in, out
    assert fp32_nodes(model, Int8Recipe()) == []
    tables = fp32_nodes(model, Int8Recipe(embeddings=False))
    assert "/model/embeddings/word_embeddings/Gather" in tables and all("Gather" in n for n in tables)


def test_kept_nodes_stay_float_matmuls_and_the_rest_become_int8(fp32_graph, tmp_path):
    out = tmp_path / "int8.onnx"
    quantize_int8(fp32_graph, out, Int8Recipe(keep=(r"/layer\.0/output/dense/",)))
    nodes = onnx.load(str(out)).graph.node
    float_weighted = [n.name for n in nodes if n.op_type == "MatMul" and "/self/MatMul" not in n.name]
    assert float_weighted == ["/model/encoder/layer.0/output/dense/MatMul"]
    assert sum(n.op_type == "MatMulInteger" for n in nodes) == 3 * 6 - 1


def test_blockwise_matmul_computes_the_float_product(tmp_path):
    """MatMulNBits reads its weight as [N, blocks, block]: a wrong layout would be far off, not slightly."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    k, n = 40, 24  # K not a multiple of the block: the last block is padded
    weight = rng.standard_normal((k, n)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="/model/encoder/layer.0/output/dense/MatMul")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", n])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "f.onnx"))
    quantize_int8(tmp_path / "f.onnx", tmp_path / "q.onnx", Int8Recipe(blockwise=(FFN_OUT,), block_size=16))
    q = onnx.load(str(tmp_path / "q.onnx"))
    assert [n.op_type for n in q.graph.node] == ["MatMulNBits"] and "w" not in {i.name for i in q.graph.initializer}
    x = rng.standard_normal((5, k)).astype(np.float32)
    got, want = _run(tmp_path / "q.onnx", {"x": x}), x @ weight
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_int8_export_follows_the_recipe_and_records_it(fp32_graph, tmp_path):
    torch_dir = fp32_graph.parent.parent / "torch"
    clf = IntentClassifier.export(torch_dir, tmp_path / "int8", quantize="int8")
    spec = json.loads((tmp_path / "int8" / "config.json").read_text())["encoder"]
    assert Int8Recipe.from_dict(spec["int8"]) == INT8
    nodes = onnx.load(str(tmp_path / "int8" / "encoder.onnx")).graph.node
    kept = {n.name for n in nodes if n.op_type == "MatMul"}
    assert set(fp32_nodes(onnx.load(str(fp32_graph)), INT8)) <= kept
    assert any(n.op_type in ("MatMulInteger", "MatMulNBits") for n in nodes)
    fp32 = IntentClassifier.load(fp32_graph.parent)
    texts = ["alpha number 9", "gamma", "beta beta"]
    cos = np.sum(np.asarray(clf.encoder.encode(texts)) * np.asarray(fp32.encoder.encode(texts)), axis=1)
    assert cos.min() > 0.95


def test_recipe_round_trips_and_refuses_an_unknown_weight_type(tmp_path, fp32_graph):
    recipe = Int8Recipe(keep=("a",), blockwise=("b",), block_size=64, reduce_range=False)
    assert Int8Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    with pytest.raises(ValueError, match="qint8 or quint8"):
        quantize_int8(fp32_graph, tmp_path / "x.onnx", Int8Recipe(weight_type="int4"))


def test_onnx_table_keeps_bases_apart_and_names_their_adapters():
    from fewintent.bench.lean import onnx_table

    row = {
        "protocol": "onnx",
        "dataset": "banking77",
        "top1_agreement": 0.99,
        "top1_accuracy": 0.86,
        "latency_p50_ms": 5.0,
        "latency_p99_ms": 9.0,
        "throughput_qps": 400.0,
        "p50_speedup_vs_torch": 2.5,
        "throughput_vs_torch": 2.1,
        "disk_mb": 22.8,
        "worker_peak_rss_mb": 140.0,
        "worker_seconds": 0.9,
        "torch_imported": False,
        "device": "cpu, 1 thread",
    }
    rows = [
        {**row, "method": "onnx-int8", "base": "mpnet", "adapter": "none"},
        {**row, "method": "onnx-int8", "base": "minilm", "adapter": "minilm-meta-no-banking77"},
    ]
    lines = onnx_table(rows)
    table = [line for line in lines if line.startswith("| `")]
    assert table[0].startswith("| `onnx-int8` |") and table[1].startswith("| `onnx-int8@mpnet` |")
    assert "minilm: `minilm-meta-no-banking77`, mpnet: frozen" in lines[0] and "import no torch" in lines[0]

"""The `valid`-split screen of int8 quantisation recipes (``Int8Recipe``), re-runnable; never reads a ``test`` split.

Models come from the product's path, as the benchmark's ``onnx`` protocol builds them: ``IntentClassifier.adapt`` on
``train_10`` with the base's leave-one-out adapter (the frozen encoder where the base ships none for that corpus),
saved, then ``IntentClassifier.export`` (fp32 ONNX). Each recipe quantises that fp32 graph; the int8 encoder is put
in the exported classifier (as ``export`` does) and its decisions are compared with the torch model's on
BANKING77 / CLINC150 / HWU64 ``valid`` (top-1 agreement, as the ``onnx`` protocol counts it) and CLINC150
``valid`` + ``oos_valid`` (OOS decision agreement). Also: the int8 graph's size, and the mean cosine of int8 to
fp32 embeddings.

    OMP_NUM_THREADS=1 python scripts/valid_int8.py --base minilm --work /tmp/int8 --out /tmp/int8/minilm.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewintent.bench.config import resolve_adapter_for
from fewintent.bench.data import FULLWAY_DATASETS, Corpora
from fewintent.encoder.onnx import GRAPH, OnnxEncoder
from fewintent.encoder.quantize import FFN_IN, FFN_OUT, Int8Recipe, quantize_int8
from fewintent.encoder.registry import BASES
from fewintent.model import IntentClassifier

OOS_CORPUS = "clinc150"
TODAY = "today"  # the recipe before this screen: onnxruntime's defaults, per-channel s8 weights, 7 bits
U8 = {"weight_type": "quint8", "reduce_range": False}
RECIPES: dict[str, Int8Recipe] = {
    "s8-7bit": Int8Recipe(),
    "s8-8bit": Int8Recipe(reduce_range=False),
    "u8": Int8Recipe(**U8),
    "u8-tensor": Int8Recipe(**U8, per_channel=False),
    "u8-emb32": Int8Recipe(**U8, embeddings=False),
    "u8-first32": Int8Recipe(**U8, keep=(r"/layer\.0/",)),
    "u8-last32": Int8Recipe(**U8, keep=(r"/layer\.{last}/",)),
    "u8-ffnout32": Int8Recipe(**U8, keep=(FFN_OUT,)),
    "u8-ffnout32-first": Int8Recipe(**U8, keep=(r"/layer\.0/output/dense/",)),
    "u8-ffnout32-last": Int8Recipe(**U8, keep=(r"/layer\.{last}/output/dense/",)),
    "u8-ffnout32-first-last": Int8Recipe(**U8, keep=(r"/layer\.(0|{last})/output/dense/",)),
    "u8-first32-ffnout32-last": Int8Recipe(**U8, keep=(r"/layer\.0/", r"/layer\.{last}/output/dense/")),
    "s8-7bit-ffnout32": Int8Recipe(keep=(FFN_OUT,)),
    "s8-7bit-ffnout32-first": Int8Recipe(keep=(r"/layer\.0/output/dense/",)),
    "s8-7bit-first32": Int8Recipe(keep=(r"/layer\.0/",)),
    "s8-7bit-nbits-ffnout": Int8Recipe(blockwise=(FFN_OUT,)),
    "s8-8bit-nbits-ffnout": Int8Recipe(reduce_range=False, blockwise=(FFN_OUT,)),
    "s8-7bit-first32-nbits-ffnout": Int8Recipe(keep=(r"/layer\.0/",), blockwise=(FFN_OUT,)),
    "nbits-all": Int8Recipe(blockwise=(".",)),
    "nbits-all-128": Int8Recipe(blockwise=(".",), block_size=128),
    "nbits-ffn": Int8Recipe(blockwise=(FFN_IN, FFN_OUT)),
    "nbits-ffn-128": Int8Recipe(blockwise=(FFN_IN, FFN_OUT), block_size=128),
}


def _quantize(name: str, src: Path, dst: Path) -> None:
    if name != TODAY:
        quantize_int8(src, dst, RECIPES[name])
        return
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)


def _adapter(base: str, dataset: str) -> str:
    spec = BASES[base]
    if spec.leave_out_adapter is None:
        return "none"
    path, _ = resolve_adapter_for("{leave_out}", dataset, [Path("fewintent/adapters")], spec)
    return str(path) if path is not None else "none"


def _models(base: str, dataset: str, corpora: Corpora, work: Path) -> tuple[Path, Path, str]:
    """The torch and fp32 ONNX model directories of ``dataset``'s ``train_10`` model (built once, kept in work)."""
    adapter = _adapter(base, dataset)
    torch_dir, onnx_dir = work / f"{base}-{dataset}-torch", work / f"{base}-{dataset}-fp32"
    if not (onnx_dir / "config.json").is_file():
        support = corpora.support(dataset, "train_10")
        IntentClassifier.adapt(support, base=base, adapter=adapter, device="cpu").save(torch_dir)
        IntentClassifier.export(torch_dir, onnx_dir)
    return torch_dir, onnx_dir, Path(adapter).name


def _texts(corpora: Corpora, dataset: str) -> tuple[list[str], int]:
    """The ``valid`` texts scored for ``dataset`` (CLINC150: ``oos_valid`` after them) and how many are in scope."""
    if dataset == OOS_CORPUS:
        data = corpora.labelled(dataset, "valid", "oos_valid")
        return data.texts + data.oos_texts, len(data.texts)
    data = corpora.labelled(dataset, "valid")
    return data.texts, len(data.texts)


def _decisions(clf: IntentClassifier, texts: list[str]) -> tuple[list[str], list[bool], np.ndarray]:
    emb = clf.encoder.encode(texts)
    preds = clf.decide(texts, clf.table, emb, 1)
    return [p.intent_ranking[0].name for p in preds], [p.is_oos for p in preds], np.asarray(emb, dtype=np.float32)


def screen(base: str, corpora: Corpora, work: Path, names: list[str]) -> dict[str, Any]:
    torch.set_num_threads(1)
    out: dict[str, Any] = {"base": base, "datasets": {}, "recipes": {}}
    for dataset in FULLWAY_DATASETS:
        torch_dir, onnx_dir, adapter = _models(base, dataset, corpora, work)
        texts, n_in = _texts(corpora, dataset)
        ref_path = work / f"{base}-{dataset}-torch-valid.json"
        if not ref_path.is_file():
            start = time.perf_counter()
            top1, oos, _ = _decisions(IntentClassifier.load(torch_dir, device="cpu"), texts)
            ref_path.write_text(json.dumps({"top1": top1, "oos": oos}))
            print(f"{base} {dataset}: torch reference on {len(texts)} texts in {time.perf_counter() - start:.0f} s")
        ref = json.loads(ref_path.read_text())
        clf = IntentClassifier.load(onnx_dir, device="cpu")
        fp32_top1, fp32_oos, fp32_emb = _decisions(clf, texts)
        out["datasets"][dataset] = {
            "adapter": adapter,
            "n": n_in,
            "onnx_fp32_top1_agreement": _agree(fp32_top1[:n_in], ref["top1"][:n_in]),
        }
        spec = dict(clf.encoder.spec)
        spec.pop("sha256", None)
        for name in names:
            graph_dir = work / f"{base}-{adapter}-{name}"
            graph_dir.mkdir(parents=True, exist_ok=True)
            graph = graph_dir / GRAPH
            if not graph.is_file():
                _quantize(name, onnx_dir / GRAPH, graph)
            (graph_dir / "tokenizer.json").write_bytes((onnx_dir / "tokenizer.json").read_bytes())
            clf.encoder = OnnxEncoder(graph_dir, spec, name=clf.encoder.name)
            start = time.perf_counter()
            top1, oos, emb = _decisions(clf, texts)
            seconds = time.perf_counter() - start
            cell = {
                "top1_agreement": _agree(top1[:n_in], ref["top1"][:n_in]),
                "mean_cosine_to_fp32": round(float(np.mean(np.sum(emb * fp32_emb, axis=1))), 5),
                "seconds": round(seconds, 1),
            }
            if dataset == OOS_CORPUS:
                cell["oos_decision_agreement"] = _agree(oos, ref["oos"])
            recipe = out["recipes"].setdefault(name, {"graph_mb": round(graph.stat().st_size / 2**20, 1)})
            recipe[dataset] = cell
            print(f"{base} {dataset} {name}: {json.dumps(cell)}", flush=True)
    for recipe in out["recipes"].values():
        recipe["mean_top1_agreement"] = round(
            float(np.mean([recipe[d]["top1_agreement"] for d in FULLWAY_DATASETS])), 3
        )
        recipe["min_top1_agreement"] = min(recipe[d]["top1_agreement"] for d in FULLWAY_DATASETS)
    return out


def _agree(a: list[Any], b: list[Any]) -> float:
    return round(100 * float(np.mean([x == y for x, y in zip(a, b)])), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="minilm")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/fewintent-int8"))
    parser.add_argument("--recipes", default=",".join([TODAY, *RECIPES]))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result = screen(args.base, Corpora(args.data_dir), args.work, args.recipes.split(","))
    print(f"\n{'recipe':24} {'MB':>6} " + " ".join(f"{d:>10}" for d in FULLWAY_DATASETS) + f" {'min':>7} {'OOS':>7}")
    for name, r in result["recipes"].items():
        cells = " ".join(f"{r[d]['top1_agreement']:>10.2f}" for d in FULLWAY_DATASETS)
        oos = r[OOS_CORPUS]["oos_decision_agreement"]
        print(f"{name:24} {r['graph_mb']:>6.1f} {cells} {r['min_top1_agreement']:>7.2f} {oos:>7.2f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Exporting the sentence encoder as an ONNX graph (mean pooling and L2 normalisation inside), optionally
int8-quantised: lean CPU inference for chatbot backends (the ``[onnx]`` extra).

The graph is exported with PyTorch's exporter from the encoder with its LoRA merged, and quantised following the
base's int8 recipe (:mod:`fewintent.encoder.quantize`); the tokenizer is the model's own
``tokenizer.json``. Running it needs no torch: :mod:`fewintent.encoder.onnx_runtime` (``OnnxEncoder``).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from fewintent.encoder.encoder import SentenceEncoder, pool
from fewintent.encoder.onnx_runtime import (
    GRAPH,
    INPUTS,
    TOKENIZER,
    WEIGHTS,
    OnnxEncoder,
    onnxruntime_module,
    read_spec,
)
from fewintent.encoder.quantize import INT8, quantize_int8
from fewintent.encoder.sources import file_sha256
from fewintent.errors import FewIntentError

__all__ = ["GRAPH", "QUANTIZE", "TOKENIZER", "OnnxEncoder", "export_encoder", "read_spec"]

QUANTIZE = ("int8",)


class _Pooled(torch.nn.Module):
    """The transformer plus its pooling and normalisation, as one graph from token ids to embeddings."""

    def __init__(self, model: torch.nn.Module, inputs: tuple[str, ...], pooling: str) -> None:
        super().__init__()
        self.model, self.inputs, self.pooling = model, inputs, pooling

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        feeds = dict(zip(self.inputs, tensors))
        out = self.model(**feeds)
        return torch.nn.functional.normalize(
            pool(out.last_hidden_state, feeds["attention_mask"], self.pooling), dim=-1
        )


def export_encoder(encoder: SentenceEncoder, directory: Path, *, quantize: str | None = None) -> dict[str, Any]:
    """Write ``encoder`` (LoRA merged) as ``encoder.onnx`` + ``tokenizer.json`` into ``directory``; returns the
    ``encoder`` section of a model directory's config."""
    if quantize is not None and quantize not in QUANTIZE:
        raise FewIntentError(f"unknown --quantize '{quantize}': use {', '.join(QUANTIZE)}")
    if encoder.merged_lora is None and any("lora_" in n for n, _ in encoder.model.named_parameters()):
        raise FewIntentError("merge the LoRA adapter before exporting (IntentClassifier.load does)")
    onnxruntime_module(export=True)
    if not getattr(encoder.tokenizer, "is_fast", False):
        raise FewIntentError(f"{encoder.name}: ONNX export needs a fast (tokenizer.json) tokenizer")
    recipe = encoder.spec.int8 if encoder.spec is not None else INT8
    directory.mkdir(parents=True, exist_ok=True)
    encoder.tokenizer.backend_tokenizer.save(str(directory / TOKENIZER))
    sample = encoder.tokenize(["hello world", "where is my card, it has not arrived yet"])
    inputs = tuple(k for k in INPUTS if k in sample and (k != "token_type_ids" or encoder.takes_token_type_ids))
    args = tuple(sample[k].cpu() for k in inputs)
    module = _Pooled(encoder.model.to("cpu"), inputs, encoder.pooling).eval()
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / GRAPH
        with warnings.catch_warnings():  # tracer chatter about data-dependent branches fixed at export time
            warnings.simplefilter("ignore")
            _export(module, args, inputs, fp32)
        if quantize == "int8":
            quantize_int8(fp32, directory / GRAPH, recipe)
        else:
            fp32.replace(directory / GRAPH)
    _weights_beside(directory / GRAPH, directory / WEIGHTS)
    encoder.to(encoder.device)
    return {
        "format": "onnx",
        "file": GRAPH,
        "quantize": quantize,
        "sha256": file_sha256(directory / GRAPH),
        "data": WEIGHTS,
        "data_sha256": file_sha256(directory / WEIGHTS),
        "dim": encoder.dim,
        "max_length": encoder.max_length,
        "pooling": encoder.pooling,
        "base_sha256": encoder.sha256,
        **({"int8": recipe.to_dict()} if quantize == "int8" else {}),
        "exported_with": {"torch": torch.__version__, "onnxruntime": onnxruntime_module().__version__},
    }


def _weights_beside(graph: Path, weights: Path) -> None:
    """Move the graph's weights into ``weights`` next to it (ONNX external data): onnxruntime then maps them
    instead of holding the parsed graph and the session's copy at once, which lowers a worker's peak memory by
    about the graph's size (int8 mpnet: 324 -> 232 MB VmHWM through a 64-long-message request)."""
    import onnx

    model = onnx.load(str(graph))  # weights in memory (from the graph, or an earlier external file)
    weights.unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(model, str(graph), save_as_external_data=True, all_tensors_to_one_file=True, location=weights.name)


def _export(module: torch.nn.Module, args: tuple[torch.Tensor, ...], inputs: tuple[str, ...], path: Path) -> None:
    """PyTorch's TorchScript-based exporter (the dynamo one needs onnxscript); batch and sequence length dynamic."""
    axes = {k: {0: "batch", 1: "sequence"} for k in inputs}
    torch.onnx.export(
        module,
        args,
        str(path),
        input_names=list(inputs),
        output_names=["embedding"],
        dynamic_axes={**axes, "embedding": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )

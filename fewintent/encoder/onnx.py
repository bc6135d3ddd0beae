"""The sentence encoder as an ONNX graph (mean pooling and L2 normalisation inside), optionally int8-quantised,
run by onnxruntime: lean CPU inference for chatbot backends (the ``[onnx]`` extra).

The graph is exported with PyTorch's exporter from the encoder with its LoRA merged, and quantised with
onnxruntime's dynamic quantisation (per-channel int8 weights); the tokenizer is the model's own
``tokenizer.json``, read by the ``tokenizers`` library. Embeddings come back as torch tensors, like
:class:`~fewintent.encoder.encoder.SentenceEncoder`'s, so a classifier cannot tell the two apart.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewintent.encoder.encoder import SentenceEncoder, encode_sorted, pool
from fewintent.encoder.sources import file_sha256
from fewintent.errors import CorruptModelError, FewIntentError

GRAPH = "encoder.onnx"
TOKENIZER = "tokenizer.json"
QUANTIZE = ("int8",)
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise FewIntentError(
            "ONNX models need onnxruntime: pip install 'fewintent[onnx]' (or use the torch model directory)"
        ) from e
    return onnxruntime


class OnnxEncoder:
    """Tokenizer + ONNX graph of a sentence encoder, on the CPU; the same ``encode`` as ``SentenceEncoder``.

    Example:
        >>> spec = {"file": "encoder.onnx", "dim": 384, "max_length": 128}
        >>> enc = OnnxEncoder("models/shop-onnx", spec)  # doctest: +SKIP
        >>> enc.encode(["where is my card?"]).shape  # doctest: +SKIP
        torch.Size([1, 384])
    """

    merged_lora: dict[str, torch.Tensor] | None = None  # the adapter is inside the graph already

    def __init__(self, directory: str | Path, spec: dict[str, Any], *, name: str = "onnx") -> None:
        from tokenizers import Tokenizer

        self.directory = Path(directory)
        self.spec = dict(spec)
        graph = self.directory / str(spec.get("file", GRAPH))
        if not graph.is_file() or not (self.directory / TOKENIZER).is_file():
            raise CorruptModelError(f"{self.directory}: the ONNX model directory lacks {graph.name} or {TOKENIZER}")
        if spec.get("sha256") and file_sha256(graph) != spec["sha256"]:
            raise CorruptModelError(f"{graph}: sha256 does not match config.json (truncated or replaced)")
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        try:
            self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for a damaged graph
            raise CorruptModelError(f"{graph}: not a loadable ONNX graph ({type(e).__name__})") from e
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(str(self.directory / TOKENIZER))
        self.max_length = int(spec.get("max_length", 128))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()
        self.name = name
        self.dim = int(spec["dim"])
        self.sha256: str | None = spec.get("base_sha256")
        self.tokenizer_sha256: str | None = file_sha256(self.directory / TOKENIZER)
        self.device = torch.device("cpu")

    def files(self) -> dict[str, Path]:
        """What a model directory must hold for this encoder (copied by ``save``)."""
        return {
            str(self.spec.get("file", GRAPH)): self.directory / str(self.spec.get("file", GRAPH)),
            TOKENIZER: self.directory / TOKENIZER,
        }

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Embeddings in input order (float32, L2-normalised), length-sorted batches like the torch encoder."""
        return encode_sorted(texts, self._run, self.dim, batch_size, progress)

    def _run(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        feeds = {name: np.zeros((len(texts), width), dtype=np.int64) for name in _INPUTS}
        for row, e in enumerate(encodings):
            n = len(e.ids)
            feeds["input_ids"][row, :n] = e.ids
            feeds["attention_mask"][row, :n] = 1
            feeds["token_type_ids"][row, :n] = e.type_ids
        return self.session.run(None, {k: v for k, v in feeds.items() if k in self.input_names})[0]


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
    _onnxruntime()
    if not getattr(encoder.tokenizer, "is_fast", False):
        raise FewIntentError(f"{encoder.name}: ONNX export needs a fast (tokenizer.json) tokenizer")
    directory.mkdir(parents=True, exist_ok=True)
    encoder.tokenizer.backend_tokenizer.save(str(directory / TOKENIZER))
    sample = encoder.tokenize(["hello world", "where is my card, it has not arrived yet"])
    inputs = tuple(k for k in _INPUTS if k in sample and (k != "token_type_ids" or encoder.takes_token_type_ids))
    args = tuple(sample[k].cpu() for k in inputs)
    module = _Pooled(encoder.model.to("cpu"), inputs, encoder.pooling).eval()
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / GRAPH
        with warnings.catch_warnings():  # tracer chatter about data-dependent branches fixed at export time
            warnings.simplefilter("ignore")
            _export(module, args, inputs, fp32)
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # per-channel int8 weights: ~4x smaller; reduce_range keeps accuracy on CPUs without VNNI
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # its "consider pre-processing" advice goes to the root logger
            try:
                quantize_dynamic(
                    str(fp32), str(directory / GRAPH), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True
                )
            finally:
                root.setLevel(level)
        else:
            fp32.replace(directory / GRAPH)
    encoder.to(encoder.device)
    return {
        "format": "onnx",
        "file": GRAPH,
        "quantize": quantize,
        "sha256": file_sha256(directory / GRAPH),
        "dim": encoder.dim,
        "max_length": encoder.max_length,
        "pooling": encoder.pooling,
        "base_sha256": encoder.sha256,
        "exported_with": {"torch": torch.__version__, "onnxruntime": _onnxruntime().__version__},
    }


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


def read_spec(config: dict[str, Any]) -> dict[str, Any] | None:
    """The ``encoder`` section of a model config when the model runs on ONNX, else None."""
    spec = config.get("encoder")
    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("format") != "onnx" or "dim" not in spec:
        raise CorruptModelError(f'config.json has an invalid "encoder" section: {json.dumps(spec)[:80]}')
    return spec

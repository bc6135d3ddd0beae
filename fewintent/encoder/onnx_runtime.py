"""The sentence encoder as an ONNX graph at inference (mean pooling and L2 normalisation inside the graph), run by
onnxruntime on the CPU with the model's own ``tokenizer.json`` read by the ``tokenizers`` library.

No torch here: an exported model directory predicts, evaluates, edits and serves in a runtime-only install.
Writing the graph is :mod:`fewintent.encoder.onnx`'s (it needs torch).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fewintent.encoder.base import encode_sorted, num_threads
from fewintent.encoder.sources import file_sha256
from fewintent.errors import CorruptModelError, FewIntentError

GRAPH = "encoder.onnx"
WEIGHTS = "encoder.onnx.data"
"""The graph's weights (ONNX external data), in exports since the lean-serving release; older ones embed them."""
TOKENIZER = "tokenizer.json"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MAX_BATCH_TOKENS = 128
"""Most padded tokens (rows x width) in one graph run. A run's buffers grow with its tokens (the attention scores
with their square) and onnxruntime keeps the largest run's, so this caps a server's memory: 64 MiniLM messages of
128 tokens in one run held about 270 MB more, one at a time under 10 MB. On the CPU, runs this size are as fast per
text as larger ones."""


def onnxruntime_module() -> Any:
    """``import onnxruntime``, or the one-line error saying how to install it."""
    try:
        import onnxruntime
    except ImportError as e:
        raise FewIntentError(
            "ONNX models need onnxruntime: pip install 'fewintent[onnx]' (or use the torch model directory)"
        ) from e
    return onnxruntime


class OnnxEncoder:
    """Tokenizer + ONNX graph of a sentence encoder, on the CPU; the same ``encode`` as ``SentenceEncoder``
    (float32, L2-normalised rows in input order), as a numpy array.

    Example:
        >>> spec = {"file": "encoder.onnx", "dim": 384, "max_length": 128}
        >>> enc = OnnxEncoder("models/shop-onnx", spec)  # doctest: +SKIP
        >>> enc.encode(["where is my card?"]).shape  # doctest: +SKIP
        (1, 384)
    """

    merged_lora: Any = None  # the adapter is inside the graph already

    def __init__(self, directory: str | Path, spec: dict[str, Any], *, name: str = "onnx") -> None:
        from tokenizers import Tokenizer

        self.directory = Path(directory)
        self.spec = dict(spec)
        graph = self.directory / str(spec.get("file", GRAPH))
        if not graph.is_file() or not (self.directory / TOKENIZER).is_file():
            raise CorruptModelError(f"{self.directory}: the ONNX model directory lacks {graph.name} or {TOKENIZER}")
        if spec.get("sha256") and file_sha256(graph) != spec["sha256"]:
            raise CorruptModelError(f"{graph}: sha256 does not match config.json (truncated or replaced)")
        if spec.get("data"):
            weights = self.directory / str(spec["data"])
            if not weights.is_file():
                raise CorruptModelError(f"{self.directory}: the ONNX model directory lacks {weights.name}")
            if spec.get("data_sha256") and file_sha256(weights) != spec["data_sha256"]:
                raise CorruptModelError(f"{weights}: sha256 does not match config.json (truncated or replaced)")
        ort = onnxruntime_module()
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, num_threads())
        # No memory pattern (one block planned per input shape): a server peaks 1.5-2.5 MB lower; a run costs ~1.5%
        # more CPU time (50 us of a 3.4 ms single-message MiniLM run).
        options.enable_mem_pattern = False
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
        self.device = "cpu"

    def files(self) -> dict[str, Path]:
        """What a model directory must hold for this encoder (copied by ``save``)."""
        files = {
            str(self.spec.get("file", GRAPH)): self.directory / str(self.spec.get("file", GRAPH)),
            TOKENIZER: self.directory / TOKENIZER,
        }
        if self.spec.get("data"):
            files[str(self.spec["data"])] = self.directory / str(self.spec["data"])
        return files

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 16,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Embeddings in input order (float32, L2-normalised), length-sorted batches like the torch encoder;
        ``batch_size`` texts are tokenized together (their overflow tokens too), then run ``MAX_BATCH_TOKENS`` at
        a time."""
        return encode_sorted(texts, self._run, self.dim, batch_size, progress)

    def _run(self, texts: list[str]) -> np.ndarray:
        """One batch: tokenized together, run as few graph calls of at most ``MAX_BATCH_TOKENS`` padded tokens."""
        encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        start = 0
        while start < len(order):
            # Sorted by length, so the last row of a chunk sets its width; always at least one row.
            end = start + 1
            while end < len(order) and (end + 1 - start) * len(encodings[order[end]].ids) <= MAX_BATCH_TOKENS:
                end += 1
            rows = order[start:end]
            out[rows] = self._run_graph([encodings[i] for i in rows])
            start = end
        return out

    def _run_graph(self, encodings: list[Any]) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        feeds = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in INPUTS}
        for row, e in enumerate(encodings):
            n = len(e.ids)
            feeds["input_ids"][row, :n] = e.ids
            feeds["attention_mask"][row, :n] = 1
            feeds["token_type_ids"][row, :n] = e.type_ids
        return self.session.run(None, {k: v for k, v in feeds.items() if k in self.input_names})[0]


def read_spec(config: dict[str, Any]) -> dict[str, Any] | None:
    """The ``encoder`` section of a model config when the model runs on ONNX, else None."""
    spec = config.get("encoder")
    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("format") != "onnx" or "dim" not in spec:
        raise CorruptModelError(f'config.json has an invalid "encoder" section: {json.dumps(spec)[:80]}')
    return spec

"""The sentence encoder as an ONNX graph at inference (mean pooling and L2 normalisation inside the graph), run by
onnxruntime on the CPU with the model's own ``tokenizer.json`` read by the ``tokenizers`` library.

No torch here: an exported model directory predicts, evaluates, edits and serves in a runtime-only install.
Writing the graph is :mod:`fewintent.encoder.onnx`'s (it needs torch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fewintent.encoder.base import encode_sorted, num_threads
from fewintent.errors import CorruptModelError, FewIntentError, extra_install

logger = logging.getLogger(__name__)

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


def onnxruntime_module(*, export: bool = False) -> Any:
    """``import onnxruntime``, or the one-line error saying how to install it."""
    try:
        import onnxruntime
    except ImportError as e:
        raise FewIntentError(
            f"exporting to ONNX needs onnxruntime: {extra_install('onnx')}"
            if export
            else f"ONNX models need onnxruntime: {extra_install('onnx')} (or use the torch model directory)"
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
        # The model config's tokenizer hash (read_spec passes it here); kept out of the spec that is saved again.
        expected_tokenizer = self.spec.pop("tokenizer_sha256", None)
        graph = self.directory / str(spec.get("file", GRAPH))
        if not graph.is_file() or not (self.directory / TOKENIZER).is_file():
            raise CorruptModelError(f"{self.directory}: the ONNX model directory lacks {graph.name} or {TOKENIZER}")
        self._loaded: dict[str, _Loaded] = {}  # what was read from each file: its sha256 and stat
        graph_bytes = self._read(graph, spec.get("sha256"))
        data = str(spec["data"]) if spec.get("data") else None
        if data is not None and (Path(data).name != data or not (self.directory / data).is_file()):
            raise CorruptModelError(f"{self.directory}: the ONNX model directory lacks {data}")
        tokenizer_bytes = self._read(self.directory / TOKENIZER, expected_tokenizer, what="the tokenizer")
        ort = onnxruntime_module()
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, num_threads())
        # No memory pattern (one block planned per input shape): a server peaks 1.5-2.5 MB lower; a run costs ~1.5%
        # more CPU time (50 us of a 3.4 ms single-message MiniLM run).
        options.enable_mem_pattern = False
        self.session = self._session(ort, options, graph, graph_bytes, data, spec.get("data_sha256"))
        self.input_names = {i.name for i in self.session.get_inputs()}
        try:
            self.tokenizer = Tokenizer.from_str(tokenizer_bytes.decode("utf-8"))
        except Exception as e:  # tokenizers raises a bare Exception ("Model missing") for a JSON that is no tokenizer
            raise CorruptModelError(
                f"{self.directory / TOKENIZER}: not a tokenizer file ({str(e).splitlines()[0][:120] if str(e) else e})"
                "; restore it from the model it was exported with"
            ) from e
        self.max_length = int(spec.get("max_length", 128))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()
        self.name = name
        self.dim = int(spec["dim"])
        self.sha256: str | None = spec.get("base_sha256")
        # What was checked and loaded, never what the file holds now: a save writes this hash, so it cannot record
        # a tokenizer swapped in after the model was loaded.
        self.tokenizer_sha256: str | None = self._loaded[TOKENIZER].sha256
        self.device = "cpu"

    def _session(
        self, ort: Any, options: Any, graph: Path, graph_bytes: bytes, data: str | None, expected: str | None
    ) -> Any:
        """An inference session on private copies of the graph and its weights, each checked against its sha256.

        onnxruntime maps a graph's weights file into memory, and a mapped file truncated under a running server
        kills it (SIGBUS) on its next request. So the weights are copied, through the hash, into a temporary file
        that is unlinked as soon as the session has mapped it: nothing outside this process can reach it, and memory
        stays what mapping gives (bytes handed to onnxruntime instead held ~40 MB more for MiniLM fp32)."""
        try:
            with tempfile.TemporaryDirectory(prefix="fewintent-onnx-") as scratch:
                private = Path(scratch) / graph.name
                private.write_bytes(graph_bytes)
                if data is not None:
                    self._copy(self.directory / data, Path(scratch) / data, expected)
                return self._open(ort, options, graph, str(private))
        except _ScratchError as e:  # no room for the private copy: hand onnxruntime the bytes (it copies them)
            logger.warning("%s: no private copy of the weights (%s); loading them into memory instead", graph, e)
        if data is not None:
            weights = self._read(self.directory / data, expected)
            options.add_external_initializers_from_files_in_memory([data], [weights], [len(weights)])
        return self._open(ort, options, graph, graph_bytes)

    @staticmethod
    def _open(ort: Any, options: Any, graph: Path, source: str | bytes) -> Any:
        try:
            return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for a damaged graph
            reason = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
            raise CorruptModelError(f"{graph}: not a loadable ONNX graph ({reason})") from e

    def _copy(self, source: Path, target: Path, expected: str | None) -> None:
        """Copy ``source`` to ``target`` hashing it on the way; refused unless the sha256 is ``expected``."""
        h = hashlib.sha256()
        try:
            src = open(source, "rb")
        except OSError as e:
            raise CorruptModelError(f"{source}: cannot be read ({e.strerror or e})") from e
        with src, open(target, "wb") as dst:
            before = _stamp(os.fstat(src.fileno()))
            while chunk := _read_chunk(src, source):
                h.update(chunk)
                try:
                    dst.write(chunk)
                except OSError as e:
                    raise _ScratchError(e.strerror or str(e)) from e
            if _stamp(os.fstat(src.fileno())) != before or src.tell() != before[2]:
                raise CorruptModelError(f"{source}: changed while it was being read; load the model again")
        loaded = _Loaded(h.hexdigest(), before)
        if expected and loaded.sha256 != expected:
            raise CorruptModelError(f"{source}: sha256 does not match config.json (truncated or replaced)")
        self._loaded[source.name] = loaded

    def _read(self, path: Path, expected: str | None, *, what: str = "") -> bytes:
        """``path``'s bytes, refused unless their sha256 is ``expected`` (when one is recorded)."""
        try:
            data, loaded = _read_file(path)
        except OSError as e:
            raise CorruptModelError(f"{path}: cannot be read ({e.strerror or e})") from e
        if expected and loaded.sha256 != expected:
            if what:
                raise CorruptModelError(
                    f"{path}: sha256 does not match config.json's tokenizer_sha256 ({loaded.sha256[:12]}... is not "
                    f"{str(expected)[:12]}...): {what} was replaced or damaged; restore the model's own {path.name}"
                )
            raise CorruptModelError(f"{path}: sha256 does not match config.json (truncated or replaced)")
        self._loaded[path.name] = loaded
        return data

    def files(self) -> dict[str, Path]:
        """What a model directory must hold for this encoder (copied by ``save``), each still the file that was
        loaded: a save refuses to copy a graph, weights or tokenizer replaced or truncated since."""
        names = [str(self.spec.get("file", GRAPH)), TOKENIZER]
        if self.spec.get("data"):
            names.append(str(self.spec["data"]))
        files = {name: self.directory / name for name in names}
        for name, path in files.items():
            loaded = self._loaded.get(name)
            if loaded is not None and not loaded.still(path):
                logger.error("%s changed on disk after the model was loaded; refusing to copy it into a save", path)
                raise CorruptModelError(
                    f"{path} changed on disk after this model was loaded (sha256 differs); the model in memory "
                    f"still answers, but saving would copy the changed file: restore {name}, or export the model again"
                )
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
    """The ``encoder`` section of a model config when the model runs on ONNX, else None; with the config's
    ``tokenizer_sha256``, which :class:`OnnxEncoder` checks ``tokenizer.json`` against."""
    spec = config.get("encoder")
    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("format") != "onnx" or "dim" not in spec:
        raise CorruptModelError(f'config.json has an invalid "encoder" section: {json.dumps(spec)[:80]}')
    # The graph and its weights are files of this directory, each with the sha256 every export records: a name
    # that points elsewhere (another model's files, /etc/...) or a missing hash would load unchecked bytes.
    for key, digest, default in (("file", "sha256", GRAPH), ("data", "data_sha256", None)):
        name = spec.get(key, default)
        if key == "data" and not name:
            continue  # an export before external data: the weights are inside the graph
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise CorruptModelError(
                f'config.json\'s "encoder.{key}" must be a file name inside the model directory, got {name!r:.60}'
            )
        if not isinstance(spec.get(digest), str):
            raise CorruptModelError(f"config.json lacks 'encoder.{digest}', which every export writes for {name}")
    tokenizer = config.get("tokenizer_sha256")
    if tokenizer is not None and not isinstance(tokenizer, str):
        raise CorruptModelError(f'config.json has an invalid "tokenizer_sha256" ({tokenizer!r:.30})')
    return {**spec, "tokenizer_sha256": tokenizer} if tokenizer else dict(spec)


@dataclass(frozen=True)
class _Loaded:
    """A file as it was read: its sha256 and the ``stat`` that identifies that content (an edit in place changes
    size or mtime; a replacement, the inode)."""

    sha256: str
    stamp: tuple[int, ...]

    def still(self, path: Path) -> bool:
        """Whether ``path`` still holds these bytes (re-hashed only when its ``stat`` changed)."""
        try:
            if _stamp(os.stat(path)) == self.stamp:
                return True
            return _stream_sha256(path) == self.sha256
        except OSError:
            return False


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


_DIGESTS: dict[tuple[int, ...], str] = {}
"""sha256 of files read in this process, by their ``stat``: a reload of an unchanged directory hashes nothing."""


def _read_file(path: Path) -> tuple[bytes, _Loaded]:
    """The bytes of ``path`` and their sha256; refused (OSError) when the file changes while it is read."""
    with open(path, "rb") as f:
        before = _stamp(os.fstat(f.fileno()))
        data = f.read()
        after = _stamp(os.fstat(f.fileno()))
    if before != after or len(data) != before[2]:
        raise OSError(f"{path.name} changed while it was being read")
    digest = _DIGESTS.get(before)
    if digest is None:
        digest = _DIGESTS[before] = hashlib.sha256(data).hexdigest()
    return data, _Loaded(digest, before)


class _ScratchError(OSError):
    """The private copy of the weights could not be written (no room in the temporary directory)."""


def _read_chunk(f: Any, path: Path) -> bytes:
    try:
        return bytes(f.read(1 << 20))
    except OSError as e:
        raise CorruptModelError(f"{path}: cannot be read ({e.strerror or e})") from e


def _stream_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

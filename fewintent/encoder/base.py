"""What every encoder shares, without torch: the protocol a classifier relies on, length-sorted batching, and the
CPU thread count (an ONNX model is served where torch is not installed)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

_threads: int | None = None


class Encoder(Protocol):
    """What a classifier needs of an encoder: ``SentenceEncoder`` (torch) or ``OnnxEncoder`` (onnxruntime).

    ``encode`` returns float32 L2-normalised rows in input order, as a numpy array or anything ``np.asarray``
    takes (the torch encoder returns a CPU tensor, which its training code keeps using)."""

    name: str
    sha256: str | None
    tokenizer_sha256: str | None
    max_length: int
    merged_lora: Any

    @property
    def dim(self) -> int: ...

    @property
    def device(self) -> Any: ...

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, progress: Callable[[int], None] | None = None
    ) -> Any: ...


def encode_sorted(
    texts: Sequence[str],
    run: Callable[[list[str]], Any],
    dim: int,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Embed ``texts`` in batches of similar length (little padding) with ``run``; rows come back in input order
    as one float32 array.

    ``progress`` is called with the number of texts done after each batch.
    """
    out = np.empty((len(texts), dim), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        out[idx] = np.asarray(run([texts[i] for i in idx]))
        if progress is not None:
            progress(len(idx))
    return out


def set_num_threads(threads: int) -> None:
    """CPU threads for this process: ONNX sessions created from now on, torch (now, or when it is first used by a
    torch encoder) and numpy's BLAS (scoring and head fits), so ``--threads`` / a worker's share holds for all."""
    global _threads
    _threads = int(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(_threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings it; without it numpy keeps its own count
        return
    threadpool_limits(limits=_threads, user_api="blas")


def configured_threads() -> int | None:
    """The count :func:`set_num_threads` set, None when nothing was asked for."""
    return _threads


def num_threads() -> int:
    """Threads an encoder should use: what was set, else torch's own count when torch is loaded, else every CPU
    this process may run on (torch's default)."""
    if _threads is not None:
        return _threads
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

"""A server process gives freed memory back to the system (glibc's malloc keeps it by default).

glibc serves a large allocation from ``mmap`` and unmaps it on free, until the first such free: then it raises its
threshold to that size and later large blocks come from the heap, whose middle is never returned. Loading an ONNX
graph frees several weight-sized blocks (the file's bytes, weights replaced by their packed copies), so a server
would keep about 10 MB it no longer uses, and a large request's temporary arrays would stay resident too. A fixed
threshold (what ``MALLOC_MMAP_THRESHOLD_`` sets) keeps large blocks on ``mmap``; the encoder's own arena, which
holds its reusable buffers, is not affected, and neither is latency. Two malloc arenas instead of one per thread
(``MALLOC_ARENA_MAX=2``) let the event loop, the encoder thread and edit threads reuse each other's free memory.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc's <malloc.h>
THRESHOLD = 128 * 1024  # glibc's default starting value, kept fixed
ARENAS = 2


def return_freed_memory() -> bool:
    """Keep blocks over 128 KiB on ``mmap`` and use at most two malloc arenas in this process (glibc only; a no-op
    elsewhere, or where the user set a ``MALLOC_*`` variable). Call before the model loads; True when it took
    effect.

    Example:
        >>> return_freed_memory()  # doctest: +SKIP
        True
    """
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (raises AttributeError outside glibc, e.g. musl)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(libc.mallopt(M_ARENA_MAX, ARENAS))
    except (OSError, AttributeError):
        return False

"""Dynamic micro-batching: the texts of concurrent ``predict`` calls share one encoder pass.

One forward pass over 32 texts costs far less than 32 passes over one, so under concurrency merging requests raises
throughput; a lone request must not wait for company, so the batcher only waits (``max_wait_ms``, a few ms) when it
has just seen several requests at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from fewintent.model.classifier import IntentClassifier, Prediction

logger = logging.getLogger("fewintent.serve")


@dataclass
class BatchStats:
    """Counters since start: how many encoder calls served how many requests and texts."""

    batches: int = 0
    requests: int = 0
    texts: int = 0
    largest_batch: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean_requests_per_batch"] = round(self.requests / self.batches, 3) if self.batches else 0.0
        return d


@dataclass
class _Pending:
    texts: list[str]
    top_k: int
    future: asyncio.Future[list[Prediction]]


class MicroBatcher:
    """Merges concurrent ``predict`` calls into one ``IntentClassifier.predict`` call, run in a worker thread.

    The event loop never blocks on the encoder; requests that arrive while a batch runs are merged into the next
    one (up to ``max_batch_texts`` texts). Each batch reads one classifier (and so one prototype table), so no
    prediction mixes two versions of the model. ``classifier`` may be a callable returning the current one, so a
    server can swap models between batches: it is called when a batch starts, after its requests were queued, so
    a request queued after a swap is answered by the new model (read-after-write).

    Example:
        >>> batcher = MicroBatcher(clf)  # doctest: +SKIP
        >>> async with batcher:  # doctest: +SKIP
        ...     preds = await asyncio.gather(*(batcher.predict([m]) for m in messages))
    """

    def __init__(
        self,
        classifier: IntentClassifier | Callable[[], IntentClassifier],
        *,
        max_batch_texts: int = 256,
        max_wait_ms: float = 2.0,
    ) -> None:
        if max_batch_texts < 1:
            raise ValueError("max_batch_texts must be at least 1")
        self._source: Callable[[], IntentClassifier] = (
            (lambda: classifier) if isinstance(classifier, IntentClassifier) else classifier
        )
        self.max_batch_texts = max_batch_texts
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.stats = BatchStats()
        self._pending: list[_Pending] = []
        self._pending_texts = 0
        self._arrived: asyncio.Event | None = None
        self._full: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._under_load = False

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start the background worker on the running event loop (``predict`` does it on first use)."""
        if self._worker is not None and not self._worker.done():
            return
        self._arrived, self._full = asyncio.Event(), asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="fewintent-batch")
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="fewintent-batcher")

    async def close(self) -> None:
        """Stop the worker; requests still waiting fail with ``RuntimeError``."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        for p in self._pending:
            if not p.future.done():
                p.future.set_exception(RuntimeError("the classifier is shutting down"))
        self._pending, self._pending_texts = [], 0
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def __aenter__(self) -> MicroBatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----------------------------------------------------------------- use
    async def predict(self, texts: Sequence[str], *, top_k: int = 5) -> list[Prediction]:
        """Classify ``texts`` (as ``IntentClassifier.predict`` would), sharing an encoder pass with other callers."""
        texts = list(texts)
        if not texts:
            return []
        if self._worker is None or self._worker.done():
            await self.start()
        assert self._arrived is not None and self._full is not None
        future: asyncio.Future[list[Prediction]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(texts, top_k, future))
        self._pending_texts += len(texts)
        self._arrived.set()
        if self._pending_texts >= self.max_batch_texts:
            self._full.set()
        return await future

    # ----------------------------------------------------------------- worker
    async def _run(self) -> None:
        assert self._arrived is not None and self._full is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            if self._under_load and self.max_wait > 0 and self._pending_texts < self.max_batch_texts:
                # Several requests came together last time: give the rest of this burst a moment to join.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.max_wait)
            batch = self._take()
            if not batch:
                continue
            self._under_load = len(batch) > 1 or bool(self._pending)
            try:
                await self._run_batch(loop, batch)
            except asyncio.CancelledError:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(RuntimeError("the classifier is shutting down"))
                raise

    def _take(self) -> list[_Pending]:
        """Whole requests from the front of the queue, up to ``max_batch_texts`` texts (always at least one)."""
        assert self._arrived is not None and self._full is not None
        batch: list[_Pending] = []
        n = 0
        while self._pending and (not batch or n + len(self._pending[0].texts) <= self.max_batch_texts):
            p = self._pending.pop(0)
            self._pending_texts -= len(p.texts)
            if p.future.done():  # the client went away
                continue
            batch.append(p)
            n += len(p.texts)
        if not self._pending:
            self._arrived.clear()
        if self._pending_texts < self.max_batch_texts:
            self._full.clear()
        return batch

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        texts = [t for p in batch for t in p.texts]
        k = max(p.top_k for p in batch)
        # Read once the batch is taken, so every request in it was queued before this read: a request that arrives
        # after the server swapped in an edited model is never answered by the model it replaced.
        try:
            clf = self._source()
        except Exception as e:  # every caller in the batch gets the error, the worker lives on
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(e)
            return
        try:
            predictions = await loop.run_in_executor(self._executor, lambda: clf.predict(texts, top_k=k))
        except Exception as e:
            if len(batch) == 1:  # the worker lives on; the caller gets the error
                if not batch[0].future.done():
                    batch[0].future.set_exception(e)
                return
            # One bad message must not fail the requests it shared a pass with: each is tried again on its own
            # (with the same classifier), and only those that fail alone get an error.
            logger.warning("a batch of %d requests failed (%s); answering each on its own", len(batch), e)
            for p in batch:
                await self._run_alone(loop, clf, p)
            return
        self._count(batch, len(texts))
        start = 0
        for p in batch:
            mine = predictions[start : start + len(p.texts)]
            start += len(p.texts)
            if p.top_k < k:  # rankings are sorted, so the first top_k are what predict(top_k=...) would give
                for pred in mine:
                    pred.intent_ranking = pred.intent_ranking[: p.top_k]
            if not p.future.done():
                p.future.set_result(mine)

    async def _run_alone(self, loop: asyncio.AbstractEventLoop, clf: IntentClassifier, p: _Pending) -> None:
        if p.future.done():
            return
        try:
            mine = await loop.run_in_executor(self._executor, lambda: clf.predict(p.texts, top_k=p.top_k))
        except Exception as e:
            if not p.future.done():
                p.future.set_exception(e)
            return
        self._count([p], len(p.texts))
        if not p.future.done():
            p.future.set_result(mine)

    def _count(self, batch: list[_Pending], texts: int) -> None:
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.texts += texts
        self.stats.largest_batch = max(self.stats.largest_batch, texts)

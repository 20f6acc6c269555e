"""Batches model work from concurrent requests into single model calls on one inference thread.

A `Batcher[In, Out]` wraps a batch function `run(items: list[In]) -> Sequence[Out]` (one output per item,
in order). Requests submit items and await their outputs; one worker takes whatever is queued (up to
`max_batch` items) and makes one call, so N concurrent requests cost about one model call per N items
instead of N calls. The queue is bounded: when inference falls behind, submitters wait (backpressure)
instead of piling up frames in memory.

Several batchers of one model (an embedder's clips and texts) share one single-thread executor, so
their calls never run at the same time and never compete for the cores.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


def inference_executor() -> ThreadPoolExecutor:
    """The one thread a model's calls run on."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")


@dataclass(slots=True)
class _Work(Generic[In, Out]):
    items: Sequence[In]
    future: asyncio.Future[tuple[list[Out], float]] = field(repr=False)


class Batcher(Generic[In, Out]):
    def __init__(
        self,
        run: Callable[[list[In]], Sequence[Out]],
        max_batch: int,
        *,
        name: str = "inference",
        executor: ThreadPoolExecutor | None = None,
        on_batch: Callable[[float], None] | None = None,
    ) -> None:
        self._run_batch = run
        self.max_batch = max(1, max_batch)
        self.name = name
        self._own_executor = executor is None
        self._executor = executor or inference_executor()
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Work[In, Out]] = asyncio.Queue(maxsize=self.max_batch * 4)
        self._worker: asyncio.Task[None] | None = None
        self.batches_run = 0

    def start(self) -> Batcher[In, Out]:
        self._worker = asyncio.create_task(self._work(), name=f"batcher-{self.name}")
        return self

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, item: In) -> tuple[Out, float]:
        """-> (the item's output, seconds the model call took)."""
        outputs, latency = await self.submit_many([item])
        return outputs[0], latency

    async def submit_many(self, items: Sequence[In]) -> tuple[list[Out], float]:
        """Items that stay together in one call (unless they alone exceed max_batch)."""
        work: _Work[In, Out] = _Work(items, asyncio.get_running_loop().create_future())
        await self._queue.put(work)
        return await work.future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        carry: _Work[In, Out] | None = None
        while True:
            batch = [carry if carry is not None else await self._queue.get()]
            carry = None
            count = len(batch[0].items)
            while count < self.max_batch and not self._queue.empty():
                work = self._queue.get_nowait()
                if count + len(work.items) > self.max_batch:
                    carry = work  # first in the next call: keeps the order
                    break
                batch.append(work)
                count += len(work.items)
            batch = [w for w in batch if not w.future.cancelled()]
            if batch:
                await self._call(loop, batch)

    async def _call(self, loop: asyncio.AbstractEventLoop, works: list[_Work[In, Out]]) -> None:
        items = [item for w in works for item in w.items]
        start = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(self._executor, self._run_batch, items)
            if len(outputs) != len(items):
                raise RuntimeError(f"model returned {len(outputs)} outputs for {len(items)} inputs")
        except Exception as exc:
            log.exception("%s: model call failed for a batch of %d", self.name, len(items))
            for w in works:
                if not w.future.done():
                    w.future.set_exception(exc)
            return
        latency = time.perf_counter() - start
        self.batches_run += 1
        if self._on_batch is not None:
            self._on_batch(latency)
        offset = 0
        for w in works:
            n = len(w.items)
            if not w.future.done():
                w.future.set_result((list(outputs[offset : offset + n]), latency))
            offset += n

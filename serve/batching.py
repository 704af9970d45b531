"""First-come-first-served batching of scoring requests, bounded by items, that drops requests
whose caller has gone and refuses those that could no longer finish in time.

Why not ``@serve.batch``: its bound counts requests, and one bound cannot fit both pointwise
traffic (1 item a request: batches of 512 requests are right) and listwise traffic (200 items a
request: 512 requests is minutes of CPU work in one uninterruptible engine call). Its item-sized
mode (``batch_size_fn``) sends a request that would overflow a batch to the back of the queue,
so under steady load a large request can be passed over again and again. Here a batch takes
requests from the head of the queue, whole, until it holds ``max_items`` (at least one request,
never split, never reordered). A caller that was cancelled while waiting (Serve cancels a
request when its HTTP client times out or disconnects) is dropped before its batch starts, so
an overloaded replica spends no engine time on answers nobody reads. With a deadline (the HTTP
timeout), a request that has waited so long that it could not finish before it is answered at
once with ``DeadlineMissed`` instead: scoring it would only delay the requests behind it past
their own deadlines, one timeout feeding the next.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np


class DeadlineMissed(RuntimeError):
    """The request waited so long that scoring it could not finish before its deadline."""


@dataclass
class Waiting:
    prompts: list[str]
    future: asyncio.Future
    arrived: float = 0.0  # time.monotonic() when it joined the queue


def take_batch(
    queue: deque,
    max_items: int,
    too_late: Callable[[Waiting, int], bool] = lambda waiting, items: False,
) -> tuple[list[Waiting], int, list[Waiting]]:
    """Pops the next batch from the head of ``queue``: whole requests, in order, while the batch
    holds fewer than ``max_items`` items (so one request larger than the bound goes alone).
    Cancelled requests are discarded on the way, and so are requests for which
    ``too_late(request, items the batch would then hold)`` is true. Returns the batch, how many
    cancelled requests were discarded, and the late ones (for the caller to answer)."""
    batch: list = []
    late: list = []
    items, cancelled = 0, 0
    while queue:
        head = queue[0]
        if head.future.done():  # cancelled by its caller (or otherwise settled): nothing to do
            queue.popleft()
            cancelled += 1
            continue
        if batch and items + len(head.prompts) > max_items:
            break
        if too_late(head, items + len(head.prompts)):
            late.append(queue.popleft())
            continue
        batch.append(queue.popleft())
        items += len(head.prompts)
    return batch, cancelled, late


class ItemBatcher:
    """Merges concurrent ``score`` calls into engine calls of at most ``max_items`` prompts (one
    at a time: the engine is a single in-process vLLM instance). ``engine`` maps a list of
    prompts to an [N, choices] array; ``on_batch(items, cancelled, late)`` observes each batch.
    ``deadline_s`` (0: none): a request that, at the engine's recent seconds per item, would
    finish later than this after it arrived gets ``DeadlineMissed`` without being scored."""

    def __init__(
        self,
        engine: Callable[[list[str]], Awaitable[np.ndarray]],
        max_items: int = 256,
        wait_s: float = 0.002,
        deadline_s: float = 0.0,
        on_batch: Callable[[int, int, int], None] | None = None,
    ):
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self.engine = engine
        self.max_items = max_items
        self.wait_s = wait_s
        self.deadline_s = deadline_s
        self.on_batch = on_batch or (lambda items, cancelled, late: None)
        # Decayed sums of engine seconds and items: their ratio is the recent seconds per item,
        # weighted by items so that one-item batches' fixed cost does not inflate it. (A call that
        # waited for an explain request on the same engine counts that wait: the estimate errs
        # slow for a few batches, refusing a little early rather than scoring too late.)
        self.engine_s = self.engine_items = 0.0
        # Plain totals since start (LevelModel.stats); engine_s includes any wait for the engine.
        self.totals = {"batches": 0, "items_scored": 0, "requests_dropped": 0, "requests_late": 0, "engine_s": 0.0}
        self.queue: deque[Waiting] = deque()
        self.arrived = asyncio.Event()
        self.worker: asyncio.Task | None = None

    async def score(self, prompts: Sequence[str]) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        self.queue.append(Waiting(list(prompts), future, time.monotonic()))
        self.arrived.set()
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self.run())
        # Cancelling this call (Serve does so when the client goes) cancels the future too.
        return await future

    def queued_items(self) -> int:
        return sum(len(waiting.prompts) for waiting in self.queue if not waiting.future.done())

    async def run(self) -> None:
        while True:
            if not self.queue:
                self.arrived.clear()
                await self.arrived.wait()
            if self.queued_items() < self.max_items:
                await asyncio.sleep(self.wait_s)  # let requests sent at the same moment join
            now = time.monotonic()
            batch, cancelled, late = take_batch(
                self.queue, self.max_items, lambda waiting, items: self.too_late(waiting, items, now)
            )
            for waiting in late:
                waiting.future.set_exception(
                    DeadlineMissed(
                        f"waited {now - waiting.arrived:.1f} s; scoring it would end past the {self.deadline_s:g} s "
                        f"deadline"
                    )
                )
            items = sum(len(w.prompts) for w in batch)
            self.totals["batches"] += bool(batch)
            self.totals["items_scored"] += items
            self.totals["requests_dropped"] += cancelled
            self.totals["requests_late"] += len(late)
            self.on_batch(items, cancelled, len(late))
            if batch:
                await self.settle(batch)

    def too_late(self, waiting: Waiting, batch_items: int, now: float) -> bool:
        if not self.deadline_s or not self.engine_items:
            return False
        finish = now + batch_items * self.engine_s / self.engine_items
        return finish - waiting.arrived > self.deadline_s

    async def settle(self, batch: list[Waiting]) -> None:
        prompts = [prompt for waiting in batch for prompt in waiting.prompts]
        started = time.monotonic()
        try:
            probs = await self.engine(prompts)
        except Exception as error:  # every caller of the batch gets the engine's error
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(error)
            return
        elapsed = time.monotonic() - started
        self.totals["engine_s"] += elapsed
        self.engine_s = 0.8 * self.engine_s + elapsed
        self.engine_items = 0.8 * self.engine_items + len(prompts)
        sizes = [len(waiting.prompts) for waiting in batch]
        for waiting, part in zip(batch, np.split(probs, np.cumsum(sizes)[:-1])):
            if not waiting.future.done():
                waiting.future.set_result(part)

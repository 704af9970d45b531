"""First-come-first-served batching of scoring requests, bounded by items, that drops requests
whose caller has gone.

Why not ``@serve.batch``: its bound counts requests, and one bound cannot fit both pointwise
traffic (1 item a request: batches of 512 requests are right) and listwise traffic (200 items a
request: 512 requests is minutes of CPU work in one uninterruptible engine call). Its item-sized
mode (``batch_size_fn``) sends a request that would overflow a batch to the back of the queue,
so under steady load a large request can be passed over again and again. Here a batch takes
requests from the head of the queue, whole, until it holds ``max_items`` (at least one request,
never split, never reordered). A caller that was cancelled while waiting (Serve cancels a
request when its HTTP client times out or disconnects) is dropped before its batch starts, so
an overloaded replica spends no engine time on answers nobody reads.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Waiting:
    prompts: list[str]
    future: asyncio.Future


def take_batch(queue: deque, max_items: int) -> tuple[list[Waiting], int]:
    """Pops the next batch from the head of ``queue``: whole requests, in order, while the batch
    holds fewer than ``max_items`` items (so one request larger than the bound goes alone).
    Cancelled requests are discarded on the way; returns the batch and how many were discarded."""
    batch, items, dropped = [], 0, 0
    while queue:
        head = queue[0]
        if head.future.done():  # cancelled by its caller (or otherwise settled): nothing to do
            queue.popleft()
            dropped += 1
            continue
        if batch and items + len(head.prompts) > max_items:
            break
        batch.append(queue.popleft())
        items += len(head.prompts)
    return batch, dropped


class ItemBatcher:
    """Merges concurrent ``score`` calls into engine calls of at most ``max_items`` prompts (one
    at a time: the engine is a single in-process vLLM instance). ``engine`` maps a list of
    prompts to an [N, choices] array; ``on_batch(items, dropped)`` observes each batch."""

    def __init__(self, engine: Callable[[list[str]], Awaitable[np.ndarray]], max_items: int = 256,
                 wait_s: float = 0.002, on_batch: Callable[[int, int], None] | None = None):
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self.engine = engine
        self.max_items = max_items
        self.wait_s = wait_s
        self.on_batch = on_batch or (lambda items, dropped: None)
        self.queue: deque[Waiting] = deque()
        self.arrived = asyncio.Event()
        self.worker: asyncio.Task | None = None

    async def score(self, prompts: Sequence[str]) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        self.queue.append(Waiting(list(prompts), future))
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
            batch, dropped = take_batch(self.queue, self.max_items)
            self.on_batch(sum(len(w.prompts) for w in batch), dropped)
            if batch:
                await self.settle(batch)

    async def settle(self, batch: list[Waiting]) -> None:
        try:
            probs = await self.engine([prompt for waiting in batch for prompt in waiting.prompts])
        except Exception as error:  # every caller of the batch gets the engine's error
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(error)
            return
        sizes = [len(waiting.prompts) for waiting in batch]
        for waiting, part in zip(batch, np.split(probs, np.cumsum(sizes)[:-1])):
            if not waiting.future.done():
                waiting.future.set_result(part)

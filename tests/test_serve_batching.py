"""The serving replica's batcher (serve/batching.py): whole requests first come first served,
bounded by items, and callers that left are dropped before they cost engine time."""

import asyncio
import json
import os
import subprocess
import sys
from collections import deque
from concurrent.futures import Future

import numpy as np
import pytest

from taosr.serve.batching import DeadlineMissed, ItemBatcher, Waiting, take_batch


def waiting(size: int, name: str = "p") -> Waiting:
    # take_batch only asks a future done() and is handed cancelled ones: a plain Future will do
    return Waiting([f"{name}{i}" for i in range(size)], Future())


def test_take_batch_keeps_order_never_splits_and_skips_the_cancelled():
    a, b, c, d = waiting(100, "a"), waiting(100, "b"), waiting(100, "c"), waiting(1, "d")
    b.future.cancel()
    queue = deque([a, b, c, d])
    batch, cancelled, late = take_batch(queue, max_items=200)
    assert [w.prompts[0] for w in batch] == ["a0", "c0"] and cancelled == 1 and late == []
    assert list(queue) == [d]  # d would pass 200 items: it waits for the next batch, still first
    assert take_batch(queue, max_items=200) == ([d], 0, [])


def test_take_batch_sends_a_request_larger_than_the_bound_alone():
    big, small = waiting(300), waiting(1)
    queue = deque([big, small])
    assert take_batch(queue, max_items=256) == ([big], 0, [])
    assert take_batch(queue, max_items=256) == ([small], 0, [])
    assert take_batch(deque(), max_items=256) == ([], 0, [])


def test_take_batch_sets_aside_requests_that_would_end_too_late():
    """``too_late`` sees each request with the items the batch would hold with it."""
    old, fresh, older = waiting(10, "old"), waiting(10, "fresh"), waiting(10, "older")
    old.arrived, fresh.arrived, older.arrived = 0.0, 50.0, 1.0
    seen = []

    def too_late(request, items):
        seen.append((request.prompts[0], items))
        return request.arrived < 10

    batch, cancelled, late = take_batch(deque([old, fresh, older]), max_items=100, too_late=too_late)
    assert batch == [fresh] and late == [old, older] and cancelled == 0
    assert seen == [("old0", 10), ("fresh0", 10), ("older0", 20)]


class SlowEngine:
    """Scores prompt "xN" as the row [N, 1] after ``delay`` seconds, and records each call."""

    def __init__(self, delay: float = 0.05):
        self.delay = delay
        self.calls: list[list[str]] = []

    async def __call__(self, prompts: list[str]) -> np.ndarray:
        self.calls.append(list(prompts))
        await asyncio.sleep(self.delay)
        return np.array([[float(p[1:]), 1.0] for p in prompts])


def test_concurrent_calls_share_engine_calls_and_each_gets_its_own_rows():
    engine = SlowEngine()
    seen = []

    async def main():
        batcher = ItemBatcher(engine, max_items=5, on_batch=lambda *counts: seen.append(counts))
        calls = [batcher.score([f"x{10 * r + i}" for i in range(size)]) for r, size in enumerate([2, 3, 4, 1])]
        return await asyncio.gather(*calls)

    results = asyncio.run(main())
    assert [r[:, 0].tolist() for r in results] == [[0, 1], [10, 11, 12], [20, 21, 22, 23], [30]]
    # 2 + 3 fill the first call; 4 + 1 the second: two engine calls for four requests
    assert [len(c) for c in engine.calls] == [5, 5] and seen == [(5, 0, 0), (5, 0, 0)]


def test_a_caller_cancelled_while_queued_costs_no_engine_time():
    engine = SlowEngine(delay=0.2)
    seen = []

    async def main():
        batcher = ItemBatcher(engine, max_items=3, on_batch=lambda *counts: seen.append(counts))
        first = asyncio.create_task(batcher.score(["x1", "x2", "x3"]))
        await asyncio.sleep(0.05)  # the first batch is on the engine now
        gone = asyncio.create_task(batcher.score(["x4", "x5"]))
        kept = asyncio.create_task(batcher.score(["x6"]))
        await asyncio.sleep(0.05)
        gone.cancel()  # as Serve does when the HTTP client times out
        return await first, await kept, gone, batcher.totals

    first, kept, gone, totals = asyncio.run(main())
    assert {k: v for k, v in totals.items() if k != "engine_s"} == {
        "batches": 2,
        "items_scored": 4,
        "requests_dropped": 1,
        "requests_late": 0,
    }
    assert totals["engine_s"] >= 0.4  # two calls of 0.2 s
    assert gone.cancelled()
    assert first[:, 0].tolist() == [1, 2, 3] and kept[:, 0].tolist() == [6]
    assert engine.calls == [["x1", "x2", "x3"], ["x6"]]
    assert seen == [(3, 0, 0), (1, 1, 0)]


def test_a_request_that_cannot_finish_by_its_deadline_is_refused_without_engine_time():
    """The engine takes 0.1 s an item. With a 0.5 s deadline, a 3-item request that arrives
    while a 3-item batch runs (0.3 s) would end ~0.55 s after it arrived: DeadlineMissed at once.
    A 1-item request behind it (~0.35 s) is scored. No estimate yet: nothing is refused."""
    engine = SlowEngine(delay=0.0)

    async def timed_engine(prompts):
        await asyncio.sleep(0.1 * len(prompts))
        return await engine(prompts)

    async def main():
        seen = []
        batcher = ItemBatcher(timed_engine, max_items=3, deadline_s=0.5, on_batch=lambda *counts: seen.append(counts))
        first = asyncio.create_task(batcher.score(["x1", "x2", "x3"]))  # no rate known: always scored
        await asyncio.sleep(0.05)
        doomed = asyncio.create_task(batcher.score(["x4", "x5", "x6"]))
        kept = asyncio.create_task(batcher.score(["x7"]))
        outcomes = await asyncio.gather(first, doomed, kept, return_exceptions=True)
        assert batcher.totals["requests_late"] == 1 and batcher.totals["items_scored"] == 4
        return outcomes, seen

    (first, doomed, kept), seen = asyncio.run(main())
    assert first[:, 0].tolist() == [1, 2, 3] and kept[:, 0].tolist() == [7]
    assert isinstance(doomed, DeadlineMissed) and "0.5 s deadline" in str(doomed)
    assert engine.calls == [["x1", "x2", "x3"], ["x7"]]
    assert seen == [(3, 0, 0), (1, 0, 1)]


def test_an_engine_error_reaches_every_caller_of_the_batch_and_the_next_batch_runs():
    async def failing(prompts):
        if "bad" in prompts:
            raise RuntimeError("engine broke")
        return np.ones((len(prompts), 2))

    async def main():
        batcher = ItemBatcher(failing, max_items=10)
        outcomes = await asyncio.gather(batcher.score(["bad"]), batcher.score(["ok"]), return_exceptions=True)
        return outcomes, await batcher.score(["fine", "too"])

    (first, second), after = asyncio.run(main())
    assert isinstance(first, RuntimeError) and isinstance(second, RuntimeError)
    assert after.shape == (2, 2)


def test_max_items_must_be_positive():
    with pytest.raises(ValueError, match="max_items"):
        ItemBatcher(SlowEngine(), max_items=0)


NICENESS_PROBE = """
import json, os, threading
from taosr.serve.app import set_process_niceness

def niceness_of_every_thread():
    return {os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")}

ready, done = threading.Event(), threading.Event()
helper = threading.Thread(target=lambda: (ready.set(), done.wait()))
helper.start(); ready.wait()
start = os.getpriority(os.PRIO_PROCESS, 0)
assert set_process_niceness(None) is None and niceness_of_every_thread() == {start}
assert set_process_niceness(start + 3) is None  # raising it never needs a privilege
later = []
late = threading.Thread(target=lambda: later.append(os.getpriority(os.PRIO_PROCESS, 0)))
late.start(); late.join(); done.set(); helper.join()
print(json.dumps({"start": start, "every_thread": sorted(niceness_of_every_thread()), "started_later": later}))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="per-thread nice values are Linux's")
def test_replica_niceness_reaches_every_thread_and_threads_started_later():
    """Run in a child process: the test process keeps its own priority."""
    out = subprocess.run([sys.executable, "-c", NICENESS_PROBE], capture_output=True, text=True, check=True).stdout
    seen = json.loads(out)
    assert seen["every_thread"] == [seen["start"] + 3] and seen["started_later"] == [seen["start"] + 3]

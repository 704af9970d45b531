"""Soak benchmark of the Ray Serve endpoint: C concurrent clients for S seconds, each request
one query with 1, 50 or 200 items (cycled), against the real app on 127.0.0.1. Every request
pairs a query with items no earlier request paired it with (a query-first prompt is then new
past the query), so prefix caching can reuse only the query's prefix, as with real traffic.

    .venv/bin/python bench/soak.py --model runs/tiny/export/model --clients 32 --seconds 60

Prints and writes (default bench/results/soak.json) the status counts, and per request size
the calls, p50 and p99 latency; items/s over the whole soak; and the engine replica's own counts
over the soak (``LevelModel.stats``: engine seconds, items scored, requests dropped or refused
as late). Any status but 200 is an error.
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from provenance import git_commit  # bench/, beside this script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SIZES = (1, 50, 200)


class RequestBodies:
    """Request bodies built on demand: request k pairs the k-th of the generator's distinct
    queries (cycled) with the next items of a 5,000-item pool (cycled), so no two requests in a
    soak render the same prompts. Thread-safe."""

    def __init__(self, pool: int = 5000, seed: int = 0):
        from serve_bench import request_items
        from taosr.datasets.synthetic import generate_rows

        rows = generate_rows(pool, seed=seed)
        self.queries = list(dict.fromkeys(row["query"] for row in rows))
        self.items = request_items(rows)
        self.count, self.offset = 0, 0
        self.lock = threading.Lock()

    def next(self, size: int) -> str:
        with self.lock:
            query = self.queries[self.count % len(self.queries)]
            start, self.offset, self.count = self.offset, (self.offset + size) % len(self.items), self.count + 1
        items = [self.items[(start + i) % len(self.items)] for i in range(size)]
        return json.dumps({"query": query, "items": items})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an exported model folder (e.g. runs/tiny/export/model)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument(
        "--max-scoring-items",
        type=int,
        default=0,
        help="the ingress's bound on items waiting on the model (0: off); past it, 503 at once",
    )
    parser.add_argument(
        "--kv-block-size", type=int, default=32, help="the serving engine's KV block size (0: vLLM's default)"
    )
    parser.add_argument(
        "--max-batch-items",
        type=int,
        default=256,
        help="ServeArgs.max_batch_items: items an engine call scores at most",
    )
    parser.add_argument(
        "--eager", action="store_true", help="do not torch.compile the serving engine (ServeArgs.compile_engine)"
    )
    parser.add_argument(
        "--replica-niceness",
        default="0",
        help="nice value of the app's replicas (ServeArgs.replica_niceness); 'ray' keeps Ray's 15",
    )
    parser.add_argument(
        "--request-timeout-s", type=float, default=120.0, help="Serve's HTTP timeout; the clients wait as long"
    )
    parser.add_argument("--out", default="bench/results/soak.json")
    args = parser.parse_args(argv)

    import httpx
    from ray import serve

    from serve_bench import summary
    from taosr.actors.runtime import init_ray
    from taosr.ray_jobs.serve_check import wait_until_healthy
    from taosr.serve.app import run

    init_ray()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = run(
        args.model,
        port=port,
        engine="vllm",
        dtype=args.dtype,
        limits={"max_items": max(SIZES)},
        request_timeout_s=args.request_timeout_s,
        max_scoring_items=args.max_scoring_items,
        kv_block_size=args.kv_block_size,
        compile_engine=not args.eager,
        max_batch_items=args.max_batch_items,
        replica_niceness=None if args.replica_niceness == "ray" else int(args.replica_niceness),
    )
    wait_until_healthy(url, timeout_s=300)
    bodies = RequestBodies()
    httpx.post(
        f"{url}/v1/relevance", content=bodies.next(50), headers={"content-type": "application/json"}, timeout=120
    )
    model = serve.get_deployment_handle("LevelModel", "taosr")
    before = model.stats.remote().result()

    statuses: Counter = Counter()
    latencies: dict[int, list[float]] = defaultdict(list)
    lock = threading.Lock()
    deadline = time.time() + args.seconds

    def client(index: int) -> None:
        sizes = itertools.islice(itertools.cycle(SIZES), index % len(SIZES), None)
        with httpx.Client(timeout=args.request_timeout_s) as session:
            for size in sizes:
                if time.time() >= deadline:
                    return
                started = time.perf_counter()
                try:
                    status = session.post(
                        f"{url}/v1/relevance", content=bodies.next(size), headers={"content-type": "application/json"}
                    ).status_code
                except httpx.HTTPError as error:
                    status = type(error).__name__
                with lock:
                    statuses[status] += 1
                    if status == 200:
                        latencies[size].append(time.perf_counter() - started)

    started = time.time()
    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(client, range(args.clients)))
    wall = time.time() - started
    # The replica's own count: engine time against wall time tells a slow engine from an idle one.
    after = model.stats.remote().result()
    replica = {key: after[key] - before[key] for key in after}
    replica["engine_items_per_s"] = replica["items_scored"] / max(replica["engine_s"], 1e-9)
    serve.shutdown()

    rows = [summary(f"{size} items", latencies[size], size, args.clients, wall) for size in SIZES if latencies[size]]
    scored = sum(size * len(latencies[size]) for size in SIZES)
    result = {
        "args": vars(args),
        "commit": git_commit(),
        "requests_built": bodies.count,
        "wall_s": wall,
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": sum(v for k, v in statuses.items() if k != 200),
        "items_per_s": scored / wall,
        "by_size": rows,
        "replica": replica,
    }
    print(f"{args.clients} clients, {wall:.0f} s: statuses {dict(statuses)}, {scored / wall:.1f} items/s")
    print(f"replica: {replica}")
    print("| request | calls | p50 s | p99 s |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['name']} | {row['calls']} | {row['p50_s']:.2f} | {row['p99_s']:.2f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

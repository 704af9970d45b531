"""Serving benchmark (issue 8): one query x N items per request, side by side in one run.

Measured, in this order, on the same model, prompts and box:
  a1. vLLM in-process, prefill-only first-token scoring (bf16, prefix caching on): the practical limit
  a2. transformers forward in-process, same scoring (bf16)
  serve. the Ray Serve endpoint over HTTP with C concurrent clients (prefix caching on)
  c.  the same endpoint with prefix caching off
  b.  pre-CoT style: decode the reasoning and parse the label (measured on a subset of items,
      reported per item)

    .venv/bin/python bench/serve_bench.py --model runs/tiny/sft/model --items 200 --clients 2

Prints a table and writes the numbers as JSON (default bench/results/serve.json).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def make_items(count: int, seed: int = 0) -> tuple[str, list[dict]]:
    from taosr.datasets.synthetic import generate_rows

    rows = generate_rows(count, seed=seed)
    query = rows[0]["query"]
    items = [{"id": str(i), "title": r["title"], "category": r["category"],
              "attributes": r["attributes"], **({"price": r["price"]} if r["price"] is not None else {})}
             for i, r in enumerate(rows)]
    return query, items


def timed(fn, repeats: int) -> list[float]:
    latencies = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - started)
    return latencies


def summary(name: str, latencies: list[float], items_per_call: int, concurrency: int = 1, wall: float | None = None) -> dict:
    wall = wall if wall is not None else sum(latencies)
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {"name": name, "items_per_s": items_per_call * len(latencies) / wall, "p50_s": statistics.median(latencies),
            "p99_s": p99, "calls": len(latencies), "items_per_call": items_per_call, "concurrency": concurrency}


def in_process(model: str, query: str, items: list[dict], repeats: int, dtype: str) -> list[dict]:
    from taosr.actors.scorer import DecodingScorer, LevelScorer
    from taosr.prompts import item_from_row

    objects = [item_from_row(dict(i, attributes=json.dumps(i["attributes"]))) for i in items]
    results = []
    # One engine for both paths: a second in-process vLLM engine breaks the first one's state.
    vllm = DecodingScorer(model, engine="vllm", dtype=dtype, max_new_tokens=160)
    prompts = vllm.prompts_for([query] * len(objects), objects)
    vllm.score_prompts(prompts[:8])  # warm-up
    results.append(summary("a1. vLLM in-process, first token", timed(lambda: vllm.score_prompts(prompts), repeats), len(items)))
    decode_items = max(4, len(items) // 10)
    results.append(summary("b. decode reasoning, parse label", timed(lambda: vllm.generate(prompts[:decode_items]), 1),
                           decode_items))
    del vllm
    gc.collect()
    hf = LevelScorer(model, engine="hf", dtype=dtype)
    hf.score_prompts(prompts[:8])
    results.append(summary("a2. transformers in-process, first token", timed(lambda: hf.score_prompts(prompts), repeats), len(items)))
    del hf
    gc.collect()
    return results


def over_http(model: str, query: str, items: list[dict], clients: int, requests_per_client: int, dtype: str,
              prefix_caching: bool) -> dict:
    import httpx
    from ray import serve

    from taosr.serve.app import run

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = run(model, port=port, request_timeout_s=600, engine="vllm", dtype=dtype, enable_prefix_caching=prefix_caching,
              limits={"max_items": len(items)})
    body = json.dumps({"query": query, "items": items})
    for _ in range(180):
        try:
            if httpx.post(f"{url}/v1/relevance", content=body, timeout=120).status_code == 200:  # also warms up
                break
        except httpx.HTTPError:
            time.sleep(1)

    def client(_):
        latencies = []
        with httpx.Client(timeout=300) as session:
            for _ in range(requests_per_client):
                started = time.perf_counter()
                response = session.post(f"{url}/v1/relevance", content=body, headers={"content-type": "application/json"})
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)
        return latencies

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [x for chunk in pool.map(client, range(clients)) for x in chunk]
    wall = time.perf_counter() - started
    serve.shutdown()
    name = "serve over HTTP" if prefix_caching else "c. serve over HTTP, prefix caching off"
    return summary(name, latencies, len(items), clients, wall)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model folder exported for serving")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--requests", type=int, default=3, help="requests per client")
    parser.add_argument("--repeats", type=int, default=3, help="in-process calls per engine")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", default="bench/results/serve.json")
    args = parser.parse_args(argv)

    from taosr.actors.runtime import init_ray

    init_ray()
    query, items = make_items(args.items)
    rows = in_process(args.model, query, items, args.repeats, args.dtype)
    rows.append(over_http(args.model, query, items, args.clients, args.requests, args.dtype, prefix_caching=True))
    rows.append(over_http(args.model, query, items, args.clients, args.requests, args.dtype, prefix_caching=False))
    by_name = {row["name"][:2]: row for row in rows}
    served = next(row for row in rows if row["name"] == "serve over HTTP")
    fastest_raw = max(by_name["a1"]["items_per_s"], by_name["a2"]["items_per_s"])
    ratios = {
        "serve / fastest raw engine (target >= 0.8)": served["items_per_s"] / fastest_raw,
        "serve / decode-then-parse (target >= 20)": served["items_per_s"] / by_name["b."]["items_per_s"],
        "serve / prefix caching off (target >= 1.5)": served["items_per_s"] / by_name["c."]["items_per_s"],
    }
    print(f"\n1 query x {args.items} items, {args.clients} HTTP clients, dtype {args.dtype}, {os.cpu_count()} CPUs\n")
    print("| path | items/s | p50 s | p99 s | calls |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['name']} | {row['items_per_s']:.1f} | {row['p50_s']:.2f} | {row['p99_s']:.2f} | {row['calls']} |")
    print()
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

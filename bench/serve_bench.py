"""Serving benchmark (issue 8): one query x N items per request, side by side in one run.

Measured, in this order, on the same model, prompts and box:
  a1. vLLM in-process, prefill-only first-token scoring (bf16, prefix caching on with the serving
      app's KV block size): the practical limit
  a2. transformers forward in-process, same scoring (bf16)
  serve. the Ray Serve endpoint over HTTP with C concurrent clients (prefix caching on)
  c.  the same endpoint with prefix caching off
  b.  pre-CoT style: decode the reasoning and parse the label (measured on a subset of items,
      reported per item)

Every timed call and every request carries items no other call carried (one query throughout),
so prefix caching can reuse only the shared query prefix, as with real traffic.

    .venv/bin/python bench/serve_bench.py --model runs/tiny/export/model --items 200 --clients 2

Prints a table and writes the numbers as JSON (default bench/results/serve.json).

``--torch-only`` needs nothing but torch and transformers (no vLLM, Ray or taosr), so it runs on a
bare GPU machine: a model of a named shape with random weights (timing does not depend on the
weights), the same 1 query x N items of random prompt tokens through both paths, on CUDA when
there is one. First-token scoring is one prefill per item (the level distribution is read off
the last position); decode-then-parse generates a fixed number of reasoning tokens per item
(random weights never stop early, so every item pays for the same length) before a label could
be parsed (the parse itself takes microseconds and is left out).

    python bench/serve_bench.py --torch-only --shape qwen2-0.5b --items 200 --out bench/results/serve_ratio.json
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


def make_batches(count: int, batches: int, seed: int = 0) -> tuple[str, list[list[dict]]]:
    """One query and ``batches`` lists of ``count`` items each, no item in two lists: a call never
    repeats another's prompts, so with prefix caching on only the shared query prefix is reused."""
    from taosr.datasets.synthetic import generate_rows

    rows = generate_rows(count * batches, seed=seed)
    items = request_items(rows)
    return rows[0]["query"], [items[start : start + count] for start in range(0, count * batches, count)]


def request_items(rows: list[dict]) -> list[dict]:
    """Generated rows as the items of a relevance request (the fields the API accepts)."""
    return [
        {
            "id": str(i),
            "title": r["title"],
            "category": r["category"],
            "attributes": r["attributes"],
            **({"price": r["price"]} if r["price"] is not None else {}),
        }
        for i, r in enumerate(rows)
    ]


def timed_calls(fn, arguments: list) -> list[float]:
    """Wall time of ``fn(argument)`` for each argument in turn."""
    latencies = []
    for argument in arguments:
        started = time.perf_counter()
        fn(argument)
        latencies.append(time.perf_counter() - started)
    return latencies


def timed(fn, repeats: int) -> list[float]:
    latencies = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - started)
    return latencies


def summary(
    name: str, latencies: list[float], items_per_call: int, concurrency: int = 1, wall: float | None = None
) -> dict:
    wall = wall if wall is not None else sum(latencies)
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {
        "name": name,
        "items_per_s": items_per_call * len(latencies) / wall,
        "p50_s": statistics.median(latencies),
        "p99_s": p99,
        "calls": len(latencies),
        "items_per_call": items_per_call,
        "concurrency": concurrency,
    }


def in_process(model: str, query: str, batches: list[list[dict]], dtype: str) -> list[dict]:
    """Each timed call scores a batch no earlier call saw (batch 0 is the warm-up)."""
    from taosr.actors.scorer import DecodingScorer, LevelScorer
    from taosr.prompts import item_from_row
    from taosr.serve.app import ServeArgs

    def prompts_of(scorer, items):
        objects = [item_from_row(dict(i, attributes=json.dumps(i["attributes"]))) for i in items]
        return scorer.prompts_for([query] * len(objects), objects)

    items = len(batches[0])
    results = []
    # One engine for both paths: a second in-process vLLM engine breaks the first one's state.
    # The serving app's KV block size and compilation, so a1 and the endpoint run the same engine.
    vllm = DecodingScorer(
        model,
        engine="vllm",
        dtype=dtype,
        max_new_tokens=160,
        kv_block_size=ServeArgs.kv_block_size,
        compile_engine=ServeArgs.compile_engine,
    )
    prompts = [prompts_of(vllm, batch) for batch in batches]
    vllm.score_prompts(prompts[0][:8])  # warm-up
    results.append(summary("a1. vLLM in-process, first token", timed_calls(vllm.score_prompts, prompts[1:]), items))
    decode_items = max(4, items // 10)
    results.append(
        summary(
            "b. decode reasoning, parse label", timed_calls(vllm.generate, [prompts[0][:decode_items]]), decode_items
        )
    )
    del vllm
    gc.collect()
    hf = LevelScorer(model, engine="hf", dtype=dtype)
    hf.score_prompts(prompts[0][:8])
    results.append(
        summary("a2. transformers in-process, first token", timed_calls(hf.score_prompts, prompts[1:]), items)
    )
    del hf
    gc.collect()
    return results


def over_http(
    model: str,
    query: str,
    batches: list[list[dict]],
    clients: int,
    requests_per_client: int,
    dtype: str,
    prefix_caching: bool,
) -> dict:
    """Request k of client c sends batch 1 + c * requests_per_client + k (batch 0 warms up)."""
    import httpx
    from ray import serve

    from taosr.serve.app import run

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    items = len(batches[0])
    url = run(
        model,
        port=port,
        request_timeout_s=600,
        engine="vllm",
        dtype=dtype,
        enable_prefix_caching=prefix_caching,
        limits={"max_items": items},
    )
    bodies = [json.dumps({"query": query, "items": batch}) for batch in batches]
    for _ in range(180):
        try:
            if httpx.post(f"{url}/v1/relevance", content=bodies[0], timeout=120).status_code == 200:  # also warms up
                break
        except httpx.HTTPError:
            time.sleep(1)

    def client(index):
        latencies = []
        with httpx.Client(timeout=300) as session:
            for k in range(requests_per_client):
                body = bodies[1 + index * requests_per_client + k]
                started = time.perf_counter()
                response = session.post(
                    f"{url}/v1/relevance", content=body, headers={"content-type": "application/json"}
                )
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)
        return latencies

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [x for chunk in pool.map(client, range(clients)) for x in chunk]
    wall = time.perf_counter() - started
    serve.shutdown()
    name = "serve over HTTP" if prefix_caching else "c. serve over HTTP, prefix caching off"
    return summary(name, latencies, items, clients, wall)


# Model shapes for --torch-only (transformers config fields; the weights are random).
SHAPES = {
    "qwen2-0.5b": {
        "model_type": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
    },
    "smollm2-135m": {
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
    },
}


def torch_only(args) -> dict:
    """First-token scoring against decode-then-parse on the same random prompts, timed by the
    wall clock around each whole call (CUDA synchronised), warm-up call first and dropped."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**SHAPES[args.shape]), dtype=dtype).to(device).eval()
    vocab = SHAPES[args.shape]["vocab_size"]
    # One query shared by every item, as in a search request: [query prefix | item tokens].
    prefix = torch.randint(100, vocab, (1, args.query_tokens)).expand(args.items, -1)
    prompts = torch.cat([prefix, torch.randint(100, vocab, (args.items, args.prompt_tokens - args.query_tokens))], 1)
    prompts = prompts.to(device)
    level_ids = torch.tensor([101, 102, 103, 104], device=device)  # any four ids: the cost is the same

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    @torch.inference_mode()
    def score():
        for start in range(0, args.items, args.score_batch):
            logits = model(input_ids=prompts[start : start + args.score_batch], logits_to_keep=1).logits
            logits[:, -1, level_ids].float().softmax(-1).argmax(-1).tolist()
        sync()

    @torch.inference_mode()
    def decode():
        for start in range(0, args.items, args.decode_batch):
            batch = prompts[start : start + args.decode_batch]
            model.generate(
                input_ids=batch,
                attention_mask=torch.ones_like(batch),
                do_sample=False,
                max_new_tokens=args.reasoning_tokens,
                min_new_tokens=args.reasoning_tokens,
                pad_token_id=0,
            )
        sync()

    timings = {}
    for name, call in (("first-token scoring", score), ("decode reasoning, then parse", decode)):
        call()  # warm-up: kernels, allocator, caches
        timings[name] = timed(call, args.repeats)
    rows = [
        summary(name, latencies, args.items) | {"mean_s": statistics.mean(latencies)}
        for name, latencies in timings.items()
    ]
    scoring, decoding = (timings[name] for name in ("first-token scoring", "decode reasoning, then parse"))
    ratios = {
        "decode / scoring, by the median call": statistics.median(decoding) / statistics.median(scoring),
        "decode / scoring, by the mean call": statistics.mean(decoding) / statistics.mean(scoring),
    }
    hardware = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"\n{args.shape} shape, random weights, {args.dtype}, on {hardware}; 1 query x {args.items} items of "
        f"{args.prompt_tokens} prompt tokens; decode {args.reasoning_tokens} tokens each; {args.repeats} calls a path\n"
    )
    print("| path | items/s | p50 s | mean s | calls |\n|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['name']} | {row['items_per_s']:.1f} | {row['p50_s']:.3f} | {row['mean_s']:.3f} | {row['calls']} |"
        )
    for name, value in ratios.items():
        print(f"{name}: {value:.1f}x")
    return {"args": vars(args), "device": hardware, "torch": torch.__version__, "rows": rows, "ratios": ratios}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a model folder exported for serving (not with --torch-only)")
    parser.add_argument(
        "--torch-only",
        action="store_true",
        help="scoring against decoding on a random-weight model "
        "shape with torch and transformers alone (CUDA when present); see the module docstring",
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2-0.5b", help="--torch-only: the model shape")
    parser.add_argument(
        "--prompt-tokens",
        type=int,
        default=100,
        help="--torch-only: tokens a prompt (query + item); "
        "the built-in logs' prompts are about 100 with SmolLM2's tokenizer",
    )
    parser.add_argument("--query-tokens", type=int, default=40, help="--torch-only: of those, the shared query prefix")
    parser.add_argument(
        "--reasoning-tokens",
        type=int,
        default=96,
        help="--torch-only: tokens decoded per item (the five-step reasoning is about 90 tokens on the built-in logs)",
    )
    parser.add_argument("--score-batch", type=int, default=200, help="--torch-only: items a scoring forward")
    parser.add_argument("--decode-batch", type=int, default=200, help="--torch-only: items a generate call")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--requests", type=int, default=3, help="requests per client")
    parser.add_argument("--repeats", type=int, default=3, help="in-process calls per engine")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument(
        "--out",
        default=None,
        help="result file (default bench/results/serve.json, or serve_ratio.json with --torch-only)",
    )
    args = parser.parse_args(argv)
    args.out = args.out or f"bench/results/{'serve_ratio' if args.torch_only else 'serve'}.json"
    if args.torch_only:
        result = torch_only(args)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        return 0
    if not args.model:
        parser.error("--model is required (or --torch-only)")

    from provenance import git_commit  # bench/, beside this script

    from taosr.actors.runtime import init_ray

    init_ray()
    query, batches = make_batches(args.items, 1 + max(args.repeats, args.clients * args.requests))
    rows = in_process(args.model, query, batches[: 1 + args.repeats], args.dtype)
    rows.append(over_http(args.model, query, batches, args.clients, args.requests, args.dtype, prefix_caching=True))
    rows.append(over_http(args.model, query, batches, args.clients, args.requests, args.dtype, prefix_caching=False))
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
        print(
            f"| {row['name']} | {row['items_per_s']:.1f} | {row['p50_s']:.2f} | {row['p99_s']:.2f} | {row['calls']} |"
        )
    print()
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "args": vars(args),
                "commit": git_commit(),
                "model_record": model_record(args.model),
                "rows": rows,
                "ratios": ratios,
            },
            indent=2,
        )
    )
    return 0


def model_record(model: str) -> dict:
    """Which model was measured: its folder and the record the stage that trained it wrote."""
    record = Path(model, "taosr-model.json")
    return {"path": str(Path(model).resolve()), **(json.loads(record.read_text()) if record.is_file() else {})}


if __name__ == "__main__":
    sys.exit(main())

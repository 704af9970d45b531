"""First-token scoring two ways (issue 8), side by side in one run, same model, prompts and box:

  generate-1. what serving does now: vLLM's generate runner, one decode position, sampling
              restricted to the four level tokens, their processed log-probs (``LevelScorer``);
              the engine still computes the full-vocabulary logits at that position
  pooling.    vLLM's pooling runner with the LM head cut to the four level-token rows
              (``*ForSequenceClassification`` via ``classifier_from_token``, method
              ``no_post_processing``): 4 logits per item, softmax, last-token pooling

Each engine runs in its own process (two vLLM engines in one process interfere). Reported:
items/s over repeated calls of 1 query x N items (after one warm-up call), and the largest
absolute difference between the two paths' probabilities (they must agree to keep either).

    .venv/bin/python bench/pooling_head_bench.py --model runs/tiny/sft/model --items 200

Writes bench/results/pooling_head.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np


def prompts_for(model: str, count: int) -> list[str]:
    from transformers import AutoTokenizer

    from taosr.prompts import build_prompt, item_from_row
    from taosr.datasets.synthetic import generate_rows

    tokenizer = AutoTokenizer.from_pretrained(model)
    rows = generate_rows(count, seed=0)
    query = rows[0]["query"]
    return [
        build_prompt(tokenizer, query, item_from_row(dict(r, attributes=json.dumps(r["attributes"])))) for r in rows
    ]


def pooling_overrides(model: str) -> dict:
    from taosr.labels import LEVELS

    architecture = json.loads((Path(model) / "config.json").read_text())["architectures"][0]
    base = architecture.removesuffix("ForCausalLM")
    return {
        "architectures": [f"{base}ForSequenceClassification"],
        "classifier_from_token": [str(level) for level in LEVELS],
        "method": "no_post_processing",
    }


def run_path(path: str, model: str, count: int, repeats: int, dtype: str, queue) -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"  # as LevelScorer's default: 1 GiB of KV cache
    prompts = prompts_for(model, count)
    if path == "generate-1":
        from taosr.actors.scorer import LevelScorer

        scorer = LevelScorer(model, engine="vllm", dtype=dtype)
        score = scorer.score_prompts
    else:
        from vllm import LLM

        llm = LLM(
            model,
            runner="pooling",
            dtype=dtype,
            enforce_eager=True,
            enable_prefix_caching=True,
            hf_overrides=pooling_overrides(model),
            max_model_len=1024,
        )

        def score(batch):
            return np.asarray([o.outputs.probs for o in llm.classify(list(batch), use_tqdm=False)], dtype=np.float64)

    probs = score(prompts)  # warm-up, and the probabilities compared
    latencies = []
    for _ in range(repeats):
        started = time.perf_counter()
        score(prompts)
        latencies.append(time.perf_counter() - started)
    queue.put({"path": path, "probs": np.asarray(probs).tolist(), "latencies": latencies})


def measure(path: str, args) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=run_path, args=(path, args.model, args.items, args.repeats, args.dtype, queue))
    process.start()
    result = queue.get(timeout=1800)
    process.join()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", default="bench/results/pooling_head.json")
    args = parser.parse_args(argv)
    results = {path: measure(path, args) for path in ("generate-1", "pooling")}
    gap = float(np.abs(np.asarray(results["generate-1"]["probs"]) - np.asarray(results["pooling"]["probs"])).max())
    rows = []
    print(f"\n1 query x {args.items} items, dtype {args.dtype}, {os.cpu_count()} CPUs\n")
    print("| path | items/s | p50 s |\n|---|---|---|")
    for path, result in results.items():
        latencies = sorted(result["latencies"])
        row = {
            "path": path,
            "items_per_s": args.items * len(latencies) / sum(latencies),
            "p50_s": latencies[len(latencies) // 2],
        }
        rows.append(row)
        print(f"| {path} | {row['items_per_s']:.1f} | {row['p50_s']:.2f} |")
    print(
        f"\nlargest |p_generate - p_pooling|: {gap:.2e}; pooling / generate-1: "
        f"{rows[1]['items_per_s'] / rows[0]['items_per_s']:.2f}x"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows, "max_abs_prob_gap": gap}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

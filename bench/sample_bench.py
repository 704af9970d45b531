"""pass@N sampling benchmark (issue 5): generated tokens/s, side by side in one run.

Measured on the same model, prompts, N, sampling settings and box:
  ray-data+vllm. the stage-2 job's path: Ray Data over a rollout actor (one vLLM engine),
                 end to end (actor start and engine warm-up included)
  vllm-steady.   the same rollout engine in this process, timed after it started: the
                 job's throughput once the actor's start-up (~20 s on this box) is paid
  hf-generate.   a plain transformers `generate` loop in this process, batched, sampling
                 N sequences per prompt, bf16 like the engine (model load included)

Only real generated tokens count (up to and including end-of-sequence; padding does not).

    .venv/bin/python bench/sample_bench.py --model runs/tiny/sft/model --prompts 48 --n 5

Prints a table and writes the numbers as JSON (default bench/results/sample.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def make_rows(count: int, seed: int = 0) -> list[dict]:
    from taosr.datasets.synthetic import generate_rows
    from taosr.ray_jobs.sample import SAMPLE_INPUT_COLUMNS

    rows = generate_rows(count, seed=seed)
    return [{**{key: row.get(key) for key in SAMPLE_INPUT_COLUMNS}, "id": str(i), "query_id": str(i),
             "description": row.get("description"), "reasoning": None} for i, row in enumerate(rows)]


def ray_data_vllm(model: str, rows: list[dict], args) -> dict:
    import ray

    from taosr.actors.runtime import init_ray
    from taosr.config import load_config
    from taosr.ray_jobs.sample import sample_dataset

    config = load_config(None, [f"sample.n={args.n}", f"sample.max_new_tokens={args.max_new_tokens}",
                                f"sample.batch_size={args.batch_size}", f"model.dtype={args.dtype}",
                                "ray.num_cpus=4"])
    init_ray(config.ray)
    started = time.perf_counter()
    out = sample_dataset(ray.data.from_items(rows), model, config).take_all()
    seconds = time.perf_counter() - started
    tokens = sum(sum(row["sample_tokens"]) for row in out)
    ray.shutdown()
    return {"name": "ray-data+vllm", "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "samples": sum(len(row["samples"]) for row in out)}


def vllm_steady(model: str, rows: list[dict], args) -> dict:
    from taosr.actors.rollout import RolloutEngine, SamplingSpec
    from taosr.prompts import build_prompt, item_from_row

    engine = RolloutEngine(model, dtype=args.dtype)
    prompts = [build_prompt(engine.tokenizer, row["query"], item_from_row(row)) for row in rows]
    spec = SamplingSpec(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens)
    engine.generate(prompts[:2], SamplingSpec(n=1, max_new_tokens=4))  # first-call warm-up
    started, tokens, samples = time.perf_counter(), 0, 0
    for start in range(0, len(prompts), args.batch_size):
        for group in engine.generate(prompts[start:start + args.batch_size], spec):
            tokens += sum(len(r.token_ids) for r in group)
            samples += len(group)
    seconds = time.perf_counter() - started
    return {"name": "vllm-steady", "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "samples": samples}


def hf_generate(model_path: str, rows: list[dict], args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from taosr.prompts import build_prompt, item_from_row

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, args.dtype)).eval()
    prompts = [build_prompt(tokenizer, row["query"], item_from_row(row)) for row in rows]
    tokens = samples = 0
    per_batch = max(1, args.hf_batch_sequences // args.n)
    with torch.inference_mode():
        for start in range(0, len(prompts), per_batch):
            encoded = tokenizer(prompts[start:start + per_batch], return_tensors="pt", padding=True,
                                add_special_tokens=False)
            out = model.generate(**encoded, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 num_return_sequences=args.n, max_new_tokens=args.max_new_tokens, pad_token_id=pad_id)
            generated = out[:, encoded["input_ids"].shape[1]:]
            for sequence in generated.tolist():
                length = len(sequence)
                if tokenizer.eos_token_id in sequence:
                    length = sequence.index(tokenizer.eos_token_id) + 1
                tokens += length
                samples += 1
    seconds = time.perf_counter() - started
    return {"name": "hf-generate", "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "samples": samples}


def main(argv=None) -> int:
    from taosr.models import resolve_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="HF folder or embedded model name")
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32, help="prompts per engine call (the job's default)")
    parser.add_argument("--hf-batch-sequences", type=int, default=40, help="sequences per generate call")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the transformers loop")
    parser.add_argument("--out", default="bench/results/sample.json")
    args = parser.parse_args(argv)
    model = resolve_model(args.model)
    rows = make_rows(args.prompts)
    results = [ray_data_vllm(model, rows, args), vllm_steady(model, rows, args), hf_generate(model, rows, args)]
    ours, steady, baseline = results
    ratio = ours["tokens_per_s"] / baseline["tokens_per_s"]
    steady_ratio = steady["tokens_per_s"] / baseline["tokens_per_s"]
    print("| path | samples | generated tokens | seconds | tokens/s |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['samples']} | {r['tokens']} | {r['seconds']:.1f} | {r['tokens_per_s']:.1f} |")
    print(f"\nray-data+vllm / hf-generate: {ratio:.2f}x end to end (target >= 5x: {'met' if ratio >= 5 else 'NOT met'})")
    print(f"vllm-steady / hf-generate: {steady_ratio:.2f}x once the engine is up")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "model": model, "results": results, "ratio": ratio,
                                         "steady_ratio": steady_ratio},
                                         indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""pass@N sampling benchmark (issue 5): generated tokens/s, side by side in one run.

Measured on the same model, prompts, N, sampling settings and box:
  ray-data+vllm. the stage-2 job's path: Ray Data over a rollout actor (one vLLM engine),
                 end to end (actor start and engine warm-up included)
  vllm-steady.   the same rollout engine in this process, timed after it started: the
                 job's throughput once the actor's start-up (~20 s on this box) is paid
  hf-generate.   a plain transformers `generate` loop in this process, batched, sampling
                 N sequences per prompt, bf16 like the engine (model load included)

Only real generated tokens count (up to and including end-of-sequence; padding does not). Every
path renders the same prompts (asserted): the rows carry attributes as JSON text, as the data
stage writes them, since Ray Data would otherwise turn each row's attribute dict into a struct of
every row's keys in another order. Ratios are given both ways: by wall time for the same samples,
and by generated tokens/s (the two differ when sampled lengths do).

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
    return [
        {
            **{key: row.get(key) for key in SAMPLE_INPUT_COLUMNS},
            "id": str(i),
            "query_id": str(i),
            "attributes": json.dumps(row.get("attributes") or {}),
            "description": row.get("description"),
            "reasoning": None,
        }
        for i, row in enumerate(rows)
    ]


def prompts_of(tokenizer, rows: list[dict]) -> list[str]:
    from taosr.formats import ResponseFormat
    from taosr.prompts import build_prompt, item_from_row

    return [build_prompt(tokenizer, row["query"], item_from_row(row), ResponseFormat.POST_COT) for row in rows]


def assert_same_prompts_through_ray_data(model: str, rows: list[dict]) -> str:
    """The prompts the sampler renders from rows that went through Ray Data equal the ones the
    in-process paths render; returns their digest for the result file."""
    import hashlib

    import ray
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    direct = prompts_of(tokenizer, rows)
    through = {row["id"]: row for row in ray.data.from_items(rows).take_all()}
    if prompts_of(tokenizer, [through[row["id"]] for row in rows]) != direct:
        raise AssertionError("Ray Data changed the rows: the paths would sample different prompts")
    return hashlib.sha256("\n".join(direct).encode()).hexdigest()[:12]


def ray_data_vllm(model: str, rows: list[dict], args) -> dict:
    import ray

    from taosr.actors.runtime import init_ray
    from taosr.config import load_config
    from taosr.ray_jobs.sample import sample_dataset

    config = load_config(
        None,
        [
            f"sample.n={args.n}",
            f"sample.max_new_tokens={args.max_new_tokens}",
            f"sample.batch_size={args.batch_size}",
            f"model.dtype={args.dtype}",
            "ray.num_cpus=4",
        ],
    )
    init_ray(config.ray)
    digest = assert_same_prompts_through_ray_data(model, rows)
    started = time.perf_counter()
    out = sample_dataset(ray.data.from_items(rows), model, config).take_all()
    seconds = time.perf_counter() - started
    tokens = sum(sum(row["sample_tokens"]) for row in out)
    ray.shutdown()
    return {
        "name": "ray-data+vllm",
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "samples": sum(len(row["samples"]) for row in out),
        "prompts_digest": digest,
    }


def vllm_steady(model: str, rows: list[dict], args) -> dict:
    from taosr.actors.rollout import RolloutEngine, SamplingSpec

    engine = RolloutEngine(model, dtype=args.dtype)
    prompts = prompts_of(engine.tokenizer, rows)
    spec = SamplingSpec(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens)
    engine.generate(prompts[:2], SamplingSpec(n=1, max_new_tokens=4))  # first-call warm-up
    started, tokens, samples = time.perf_counter(), 0, 0
    for start in range(0, len(prompts), args.batch_size):
        for group in engine.generate(prompts[start : start + args.batch_size], spec):
            tokens += sum(len(r.token_ids) for r in group)
            samples += len(group)
    seconds = time.perf_counter() - started
    return {
        "name": "vllm-steady",
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "samples": samples,
    }


def hf_generate(model_path: str, rows: list[dict], args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, args.dtype)).eval()
    prompts = prompts_of(tokenizer, rows)
    tokens = samples = 0
    per_batch = max(1, args.hf_batch_sequences // args.n)
    with torch.inference_mode():
        for start in range(0, len(prompts), per_batch):
            encoded = tokenizer(
                prompts[start : start + per_batch], return_tensors="pt", padding=True, add_special_tokens=False
            )
            out = model.generate(
                **encoded,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                num_return_sequences=args.n,
                max_new_tokens=args.max_new_tokens,
                pad_token_id=pad_id,
            )
            generated = out[:, encoded["input_ids"].shape[1] :]
            for sequence in generated.tolist():
                length = len(sequence)
                if tokenizer.eos_token_id in sequence:
                    length = sequence.index(tokenizer.eos_token_id) + 1
                tokens += length
                samples += 1
    seconds = time.perf_counter() - started
    return {
        "name": "hf-generate",
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "samples": samples,
    }


def main(argv=None) -> int:
    from provenance import git_commit  # bench/, beside this script

    from taosr.datasets.embedded_models import resolve_model

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
    ratios = {
        name: {
            "wall_time": baseline["seconds"] / r["seconds"],
            "tokens_per_s": r["tokens_per_s"] / baseline["tokens_per_s"],
        }
        for name, r in (("ray-data+vllm", ours), ("vllm-steady", steady))
    }
    print("| path | samples | generated tokens | seconds | tokens/s |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['samples']} | {r['tokens']} | {r['seconds']:.1f} | {r['tokens_per_s']:.1f} |")
    for name, ratio in ratios.items():
        print(
            f"{name} / hf-generate: {ratio['wall_time']:.2f}x by wall time for the same samples, "
            f"{ratio['tokens_per_s']:.2f}x by tokens/s (one run of each path)"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "args": vars(args),
                "model": model,
                "commit": git_commit(),
                "results": results,
                "ratios": ratios,
                "runs_per_path": 1,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

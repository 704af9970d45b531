"""GRPO learner step on one-token rollouts: one forward per rollout vs one per prompt, side by side.

With ``grpo.max_new_tokens=1`` (the reward reads the first-token label and nothing else) the G
rollouts of a group are the same prompt followed by one sampled token, and the logits that score
that token come from the prompt alone. ``shared_prompt_window`` runs the model once per distinct
prompt instead of once per rollout; tests/test_rl_pieces.py checks that the loss and every
gradient are the same. This benchmark times both through the stage's own ``train_on`` (reference
pass, clipped loss with KL, DeepSpeed backward and AdamW step), alternating step by step so that
drift on the box hits both alike:

  per_rollout.  the packed [B, T] batch of every rollout (the path before the change)
  per_prompt.   one forward per distinct prompt (the path the loop now takes)

Batches: built-in rows in the post-CoT prompt, ``--prompts`` groups of ``--group-size`` random
level tokens with random advantages, the main job's learner settings (top 15 blocks, bf16,
micro-batches of 16, KL 0.05).

    .venv/bin/python bench/one_token_learner_bench.py --steps 3

Prints a table and writes the numbers as JSON (default bench/results/one_token_learner.json).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path


def rollout_rows(tokenizer, prompts: int, group_size: int, seed: int) -> list[dict]:
    from taosr.datasets.synthetic import generate_rows
    from taosr.formats import ResponseFormat
    from taosr.models import level_token_ids
    from taosr.prompts import build_prompt, item_from_row

    rng = random.Random(seed)
    level_ids = list(level_token_ids(tokenizer).values())
    rows = []
    for row in generate_rows(prompts, seed=seed):
        prompt = tokenizer.encode(
            build_prompt(tokenizer, row["query"], item_from_row(row), ResponseFormat.POST_COT), add_special_tokens=False
        )
        for _ in range(group_size):
            rows.append(
                {
                    "prompt_ids": prompt,
                    "response_ids": [rng.choice(level_ids)],
                    "old_logprobs": [rng.uniform(-3.0, -0.1)],
                    "advantages": [rng.gauss(0.0, 1.0)],
                    "weight": 1.0,
                }
            )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="embedded model name or Hugging Face folder")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per path")
    parser.add_argument("--prompts", type=int, default=8, help="groups per step (grpo.prompts_per_step)")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/one_token_learner.json")
    args = parser.parse_args(argv)

    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from taosr.config import GrpoConfig
    from taosr.datasets.embedded_models import resolve_model
    from taosr.training import policy_update
    from taosr.training.rl import micro_steps_per_step
    from taosr.training.trainer import build_engine

    from single_rank import start_single_rank  # bench/, beside this script

    start_single_rank(port=29519, threads=args.threads)
    model = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    rl = GrpoConfig(
        train_layers=15,
        prompts_per_step=args.prompts,
        group_size=args.group_size,
        max_new_tokens=1,
        micro_batch_size=16,
        lr=1e-5,
        kl_coef=0.05,
    )
    gas = micro_steps_per_step(rl, 1)
    engine, _ = build_engine(model, rl, total_steps=1000, grad_accum=gas)
    reference = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16).eval()
    reference.requires_grad_(False)
    batches = [rollout_rows(tokenizer, args.prompts, args.group_size, seed) for seed in range(args.steps + 1)]
    shared_window = policy_update.shared_prompt_window

    def step(rows: list[dict], path: str) -> float:
        # per_rollout: the loop's window helper answers "not shareable", so train_on packs every rollout
        policy_update.shared_prompt_window = shared_window if path == "per_prompt" else (lambda chunk: None)
        started = time.perf_counter()
        policy_update.train_on(engine, reference, rl, rows, float(len(rows)), 1, gas)
        return time.perf_counter() - started

    step(batches[0], "per_prompt")  # warm-up, not timed
    timed = {"per_rollout": [], "per_prompt": []}
    for rows in batches[1:]:
        for path in timed:
            timed[path].append(step(rows, path))
    policy_update.shared_prompt_window = shared_window
    dist.destroy_process_group()

    prompt_tokens = statistics.fmean(len(r["prompt_ids"]) for rows in batches for r in rows)
    results = {
        path: {"median_s": statistics.median(s), "mean_s": statistics.fmean(s), "steps": len(s), "seconds": s}
        for path, s in timed.items()
    }
    from provenance import git_commit  # bench/, beside this script

    commit = git_commit()
    record = {
        "command": "python bench/one_token_learner_bench.py " + " ".join(argv or sys.argv[1:]),
        "commit": commit,
        "model": args.model,
        "threads": args.threads,
        "prompts": args.prompts,
        "group_size": args.group_size,
        "mean_prompt_tokens": prompt_tokens,
        "micro_batch_size": 16,
        "train_layers": 15,
        "results": results,
        "speedup_median": results["per_rollout"]["median_s"] / results["per_prompt"]["median_s"],
        "speedup_mean": results["per_rollout"]["mean_s"] / results["per_prompt"]["mean_s"],
    }
    print(
        f"model {args.model}, {args.prompts} prompts x {args.group_size} one-token rollouts a step "
        f"(prompts {prompt_tokens:.0f} tokens), top 15 blocks, bf16 DeepSpeed, {args.threads} threads, "
        f"{args.steps} steps per path"
    )
    print("| path | median s/step | mean s/step |")
    print("|---|---|---|")
    for path, r in results.items():
        print(f"| {path} | {r['median_s']:.2f} | {r['mean_s']:.2f} |")
    print(f"speed-up: {record['speedup_median']:.2f}x by the median, {record['speedup_mean']:.2f}x by the mean")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GRPO step throughput (issue 6): taosr's RL loop against TRL's GRPOTrainer, side by side in
one run, on the same model, prompt pool, reward, group size, prompts per step, micro-batch,
completion length, sampling, learning rate, KL weight and box.

  taosr. ``taosr.ray_jobs.grpo``: a vLLM rollout actor, a DeepSpeed (ZeRO-2, bf16) learner on
         Ray Train, weight push and probe check every step. Dynamic sampling is set to its
         mildest (one round, pass-rate window [0, 1]); groups with no reward variance are still
         dropped, as the method requires, so its learner may train on fewer sequences.
  trl.   ``trl.GRPOTrainer`` (transformers ``generate`` for rollouts, bf16 autocast on CPU,
         token-level "dapo" loss, group-scaled rewards), in the benchmark's own environment
         bench/.venv-trl (made by ``--setup-trl``; the project never depends on TRL).

The first step of each side is warm-up and not counted. Both sides are timed by the wall clock:
a step is the time from one step's end to the next's (taosr logs it as ``step_s``; TRL's side
times it with a callback), and each side's whole run (start-up, model loads, every step) is timed
around it. Reported per side: seconds per step by the median and the mean (and the rollout share),
generated tokens/s (tokens sampled / step time), trained sequences per step. Prompts: the training
split of a pipeline run (default runs/tiny, after its dpo stage).

    .venv/bin/python bench/grpo_bench.py --setup-trl
    .venv/bin/python bench/grpo_bench.py --run-dir runs/tiny --steps 4

Writes bench/results/grpo.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRL_VENV = HERE / ".venv-trl"
TRL_PINS = ("torch==2.13.0", "trl==1.16.0", "transformers==5.19.0", "accelerate==1.15.0", "datasets==5.2.0")


def setup_trl() -> None:
    subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    pip = [str(TRL_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + [TRL_PINS[0]], check=True)  # the CPU torch first, or pip pulls a CUDA build
    subprocess.run(pip + list(TRL_PINS), check=True)


def bench_config(args):
    from taosr.config import load_config

    config = load_config(HERE.parent / "configs" / "tiny.yaml", [f"run_dir={args.run_dir}"])
    rl = config.grpo
    for key, value in dict(
        steps=args.steps + 1,
        prompts_per_step=args.prompts_per_step,
        group_size=args.group_size,
        micro_batch_size=args.micro_batch,
        max_new_tokens=args.max_new_tokens,
        lr=args.lr,
        kl_coef=args.kl,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        min_pass_rate=0.0,
        max_pass_rate=1.0,
        oversample=1.0,
        max_refill_rounds=1,
        warmup_ratio=0.0,
        checkpoint_every_steps=10_000,
    ).items():
        setattr(rl, key, value)
    return config


def run_taosr(config, out_dir: str) -> tuple[list[dict], float]:
    from taosr.ray_jobs import grpo

    started = time.perf_counter()
    grpo.train(config, grpo.start_model_for(config), out_dir)
    wall = time.perf_counter() - started
    steps = [json.loads(line) for line in open(Path(out_dir) / "metrics.jsonl")]
    return [
        {
            "step_s": s["step_s"],
            "rollout_s": s["rollout_s"] + s["reward_s"],
            "generated_tokens": s["generated_tokens"],
            "trained_sequences": s["groups_kept"] * config.grpo.group_size,
        }
        for s in steps
    ], wall


def write_prompts(config, path: Path) -> None:
    """The taosr side's training prompts as chat-templated text with their gold labels."""
    from transformers import AutoTokenizer

    from taosr.ray_jobs import grpo
    from taosr.training import rl_stage

    model = grpo.start_model_for(config)
    prompts, _ = rl_stage.training_prompts(config, model, config.grpo)
    tokenizer = AutoTokenizer.from_pretrained(model)
    with open(path, "w") as out:
        for p in prompts:
            out.write(json.dumps({"prompt": tokenizer.decode(p["prompt_ids"]), "label": p["label"]}) + "\n")


def run_trl(config, args, prompts: Path, out_dir: str) -> tuple[list[dict], float]:
    from taosr.ray_jobs import grpo

    python = TRL_VENV / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} not found: run `bench/grpo_bench.py --setup-trl` first")
    settings = {
        "model": str(Path(grpo.start_model_for(config)).resolve()),
        "prompts": str(prompts),
        "steps": args.steps + 1,
        "prompts_per_step": args.prompts_per_step,
        "group_size": args.group_size,
        "micro_batch": args.micro_batch,
        "max_new_tokens": args.max_new_tokens,
        "lr": args.lr,
        "kl": args.kl,
        "threads": args.threads,
        "seed": config.seed,
        "out_dir": out_dir,
    }
    command = [str(python), str(HERE / "trl_grpo_side.py"), "--settings", json.dumps(settings)]
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    steps = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"trl_step"')]
    if len(steps) != args.steps + 1:
        raise RuntimeError(f"TRL side logged {len(steps)} steps, expected {args.steps + 1}:\n{done.stderr[-3000:]}")
    sequences = args.prompts_per_step * args.group_size
    return [
        {
            "step_s": s["step_s"],
            "rollout_s": s["generate_s"],
            "generated_tokens": s["generated_tokens"],
            "trained_sequences": sequences,
        }
        for s in steps
    ], wall


def summarise(name: str, steps: list[dict], run_wall_s: float, sequences: int) -> dict:
    """Means over the counted steps. ``equal_work_step_s`` scales the non-rollout part of each
    step to ``sequences`` trained sequences: an estimate of the step had dynamic sampling kept
    every group (TRL trains all of them)."""
    counted = steps[1:]  # the first step is warm-up
    step_s = statistics.mean(s["step_s"] for s in counted)
    equal = statistics.mean(
        s["rollout_s"] + (s["step_s"] - s["rollout_s"]) * sequences / s["trained_sequences"] for s in counted
    )
    return {
        "name": name,
        "steps": len(counted),
        "step_s": step_s,
        "median_step_s": statistics.median(s["step_s"] for s in counted),
        "run_wall_s": run_wall_s,
        "equal_work_step_s": equal,
        "rollout_share": statistics.mean(s["rollout_s"] / s["step_s"] for s in counted),
        "generated_tokens_per_s": sum(s["generated_tokens"] for s in counted) / sum(s["step_s"] for s in counted),
        "trained_sequences_per_step": statistics.mean(s["trained_sequences"] for s in counted),
        "raw": steps,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup-trl", action="store_true", help="create bench/.venv-trl with TRL and exit")
    parser.add_argument("--run-dir", default="runs/tiny")
    parser.add_argument("--steps", type=int, default=4, help="counted steps per side (one more is run as warm-up)")
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--lr", type=float, default=5e-6)
    parser.add_argument("--kl", type=float, default=0.02)
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads of the TRL process (the taosr learner uses grpo.cpus_per_worker)",
    )
    parser.add_argument("--out", default=str(HERE / "results" / "grpo.json"))
    args = parser.parse_args()
    if args.setup_trl:
        setup_trl()
        return 0
    from provenance import git_commit  # bench/, beside this script

    from taosr.actors.runtime import init_ray

    config = bench_config(args)
    init_ray(config.ray)  # before any Ray Data call, which would start a default-sized cluster
    with tempfile.TemporaryDirectory(prefix="grpo-bench-") as scratch:
        prompts = Path(scratch) / "prompts.jsonl"
        write_prompts(config, prompts)
        sequences = args.prompts_per_step * args.group_size
        taosr_side = summarise(
            "taosr (vLLM actor + DeepSpeed on Ray)", *run_taosr(copy.deepcopy(config), f"{scratch}/taosr"), sequences
        )
        import ray

        ray.shutdown()  # the TRL side gets the whole box
        trl_side = summarise(
            "TRL GRPOTrainer (transformers generate)", *run_trl(config, args, prompts, f"{scratch}/trl"), sequences
        )
    ratio = trl_side["step_s"] / taosr_side["step_s"]
    median_ratio = trl_side["median_step_s"] / taosr_side["median_step_s"]
    run_ratio = trl_side["run_wall_s"] / taosr_side["run_wall_s"]
    token_ratio = taosr_side["generated_tokens_per_s"] / trl_side["generated_tokens_per_s"]
    equal_ratio = trl_side["equal_work_step_s"] / taosr_side["equal_work_step_s"]
    print(
        "| side | s/step (mean) | s/step (median) | whole run s | rollout share | generated tok/s | trained "
        "seq/step |\n"
        "|---|---|---|---|---|---|---|"
    )
    for side in (taosr_side, trl_side):
        print(
            f"| {side['name']} | {side['step_s']:.1f} | {side['median_step_s']:.1f} | {side['run_wall_s']:.0f} | "
            f"{100 * side['rollout_share']:.0f}% | {side['generated_tokens_per_s']:.1f} | "
            f"{side['trained_sequences_per_step']:.1f} |"
        )
    print(
        f"\nwall-clock step time, TRL / taosr, over {taosr_side['steps']} counted steps a side: {ratio:.2f}x by the "
        f"mean, {median_ratio:.2f}x by the median; whole runs (start-up included): {run_ratio:.2f}x; generated "
        f"tokens/s (taosr / TRL): {token_ratio:.2f}x; at equal trained sequences (estimate): {equal_ratio:.2f}x"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "args": vars(args),
                "taosr": taosr_side,
                "trl": trl_side,
                "commit": git_commit(),
                "step_time_ratio": ratio,
                "median_step_time_ratio": median_ratio,
                "whole_run_ratio": run_ratio,
                "generated_tokens_per_s_ratio": token_ratio,
                "equal_work_step_time_ratio": equal_ratio,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

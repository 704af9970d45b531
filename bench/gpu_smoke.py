"""The GPU smoke check: the stages' own learner, losses and first-token scorer on one CUDA device,
with nothing but torch, transformers and DeepSpeed installed (no Ray, vLLM or omegaconf), so it
runs on a bare GPU machine:

    python bench/gpu_smoke.py --out bench/results/gpu_smoke_<device>.json

It builds the DeepSpeed engine the way every training stage does (``build_engine``: float32
master weights, bf16 on CUDA), then

1. SFT: steps of the decision-weighted SFT loss (``sft_step_loss``) on one fixed batch of
   generated post-CoT examples; the loss must fall;
2. GRPO: one policy update through the RL learner's ``train_on`` on one-token rollouts;
3. scoring: ``first_token_scores`` (the validation scorer: left padding, position ids, one kept
   logit) against a plain transformers forward of each prompt alone; the level distributions
   must agree;

and prints the device and the step times. Without CUDA it runs the same on the CPU (gloo and
DeepSpeed's CPU accelerator), which is how CI's box checks the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # provenance, beside this script


def examples(tokenizer, count: int, max_len: int) -> list[dict]:
    """Generated rows as SFT examples (post-CoT: the level first, then the five steps)."""
    from taosr.datasets.synthetic import generate_rows
    from taosr.formats import Reasoning, ResponseFormat, render
    from taosr.prompts import build_prompt, item_from_row
    from taosr.sft_examples import tokenize_example

    rows = []
    for row in generate_rows(count, seed=0):
        prompt = build_prompt(tokenizer, row["query"], item_from_row(row), ResponseFormat.POST_COT)
        response = render(ResponseFormat.POST_COT, row["label"], Reasoning(**row["step_annotations"]))
        example = tokenize_example(tokenizer, prompt, response, max_len)
        if example is not None:
            rows.append({**asdict(example), "level": row["label"]})
    return rows


def rollouts(tokenizer, rows: list[dict], group_size: int) -> list[dict]:
    """One-token rollouts of the prompts of ``rows`` with made-up old log-probs and advantages."""
    from taosr.models import level_token_ids
    from taosr.sft_examples import IGNORE_INDEX

    rng = random.Random(0)
    level_ids = list(level_token_ids(tokenizer).values())
    out = []
    for row in rows:
        prompt = [token for token, label in zip(row["input_ids"], row["labels"]) if label == IGNORE_INDEX]
        for _ in range(group_size):
            out.append(
                {
                    "prompt_ids": prompt,
                    "response_ids": [rng.choice(level_ids)],
                    "old_logprobs": [rng.uniform(-3.0, -0.1)],
                    "advantages": [rng.gauss(0.0, 1.0)],
                    "weight": 1.0,
                }
            )
    return out


def start_process_group(cuda: bool) -> None:
    import torch.distributed as dist

    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29531", "RANK": "0", "LOCAL_RANK": "0"}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("WORLD_SIZE", "1")
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default="tiny", help="a Hugging Face folder, or an embedded name (tiny, smollm2-135m)"
    )
    parser.add_argument("--steps", type=int, default=6, help="SFT optimizer steps on the fixed batch (2 or more)")
    parser.add_argument("--batch", type=int, default=8, help="examples per SFT step and prompts per GRPO update")
    parser.add_argument("--out", default="", help="where to save the result as JSON (default: print only)")
    args = parser.parse_args(argv)
    if args.steps < 2 or args.batch < 1:
        parser.error("--steps must be 2 or more and --batch 1 or more")

    import torch

    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from taosr.config_sections import GrpoConfig, SftConfig
    from taosr.datasets.embedded_models import resolve_model
    from taosr.first_token import first_token_scores
    from taosr.models import level_token_ids
    from taosr.training.policy_update import train_on
    from taosr.training.sft_objective import sft_step_loss
    from taosr.training.trainer import build_engine

    start_process_group(cuda)
    model = args.model if Path(args.model).is_dir() else resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    sft = SftConfig(lr=1e-3, micro_batch_size=args.batch, zero_stage=0, bf16=cuda, use_gpu=cuda, warmup_ratio=0.0)
    engine, _ = build_engine(model, sft, total_steps=args.steps + 1)
    batch = examples(tokenizer, args.batch, max_len=384)
    loss_fn = sft_step_loss(decision_weight=sft.decision_weight)

    def synchronize():
        if cuda:
            torch.cuda.synchronize()

    losses, sft_seconds = [], []
    for _ in range(args.steps):
        started = time.perf_counter()
        loss, _, _ = loss_fn(engine, batch)
        engine.backward(loss)
        engine.step()
        synchronize()
        sft_seconds.append(time.perf_counter() - started)
        losses.append(float(loss))

    rl = GrpoConfig(max_new_tokens=1, micro_batch_size=args.batch, kl_coef=0.0, bf16=cuda)
    rows = rollouts(tokenizer, batch, group_size=4)
    started = time.perf_counter()
    update = train_on(engine, None, rl, rows, float(len(rows)), 1, max(1, len(rows) // rl.micro_batch_size))
    synchronize()
    grpo_seconds = time.perf_counter() - started

    levels = list(level_token_ids(tokenizer).values())
    prompts = [r["prompt_ids"] for r in rows[::4]]
    scored, _ = first_token_scores(engine.module, prompts, levels, pad_id=tokenizer.pad_token_id or 0)
    plain = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    plain.load_state_dict({k: v.float().cpu() for k, v in engine.module.state_dict().items()})
    plain = plain.to(engine.device).eval()
    with torch.no_grad():
        reference = [
            torch.softmax(plain(torch.tensor([p], device=engine.device)).logits[0, -1, levels].float(), -1).cpu()
            for p in prompts
        ]
    gap = float(torch.stack(reference).sub(torch.tensor(scored)).abs().max())
    tolerance = 2e-2 if cuda else 1e-4  # bf16 forward on CUDA; float32 on the CPU

    result = {
        "what": "bench/gpu_smoke.py: the stages' learner, SFT loss, GRPO update and first-token scorer on one device",
        "device": torch.cuda.get_device_name(0) if cuda else "cpu (no CUDA device: not a GPU result)",
        "torch": torch.__version__,
        "model": args.model,
        "sft_losses": [round(x, 4) for x in losses],
        "sft_step_s_median": round(statistics.median(sft_seconds[1:]), 4),
        "grpo_update_s": round(grpo_seconds, 4),
        "grpo_update": {k: (round(v, 5) if isinstance(v, float) else v) for k, v in update.items()},
        "scorer_max_gap": gap,
        "checks": {"sft_loss_falls": losses[-1] < losses[0], "scorer_matches_transformers": gap <= tolerance},
    }
    from provenance import git_commit, write_result

    result["commit"] = git_commit()
    if args.out:
        write_result(result, args.out)
    else:
        print(json.dumps(result, indent=1))
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

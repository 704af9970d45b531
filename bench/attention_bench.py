"""PyTorch's SDPA against eager attention in the training step, side by side in one run.

Two DeepSpeed engines built by the stages' own ``build_engine`` (float32 weights under bf16
autocast, the top ``--train-layers`` blocks trained, as ``configs/tiny.yaml``'s SFT), one per
``attn_implementation``, take turns on the same micro-batches: SFT's step loss
(``sft_step_loss``), backward and AdamW update. The micro-batches are the stage's own: a run's
CoT rows tokenised by ``SftTokenizer`` and dealt by ``stratified_micro_batches``, so most hold
decision-only rows (prompt and level token, left-padded) and some hold rows with their
reasoning. ``--lengths`` adds synthetic batches of fixed length (random token ids, the level
token last) to see where the kernels cross over.

    .venv/bin/python bench/attention_bench.py runs/tiny/cot/kept --out bench/results/attention.json
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from taosr.config_sections import LearnerConfig  # noqa: E402 - after the repo is on the path

KERNELS = ("sdpa", "eager")


def stage_micro_batches(
    cot_folder: str, model_path: str, count: int, micro_batch_size: int, seed: int
) -> list[list[dict]]:
    """``count`` micro-batches of the SFT stage's rows, dealt as the stage deals them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from taosr.training.sft_data import SftTokenizer
    from taosr.training.trainer import stratified_micro_batches

    table = pq.read_table(cot_folder)
    rows = [r for r in table.to_pylist() if r["split"] == "train"]
    random.Random(seed).shuffle(rows)
    rows = rows[: count * micro_batch_size * 2]
    tokenized = SftTokenizer(model_path, "post_cot", 1024, seed, reasoning_share=0.1)(pa.Table.from_pylist(rows))
    group = micro_batch_size * 16  # configs/tiny.yaml's sft.length_group
    batches = [tokenized.slice(i, group) for i in range(0, tokenized.num_rows, group)]
    dealt = [
        [{k: v for k, v in r.items() if k != "training_order"} for r in chunk]
        for chunk in stratified_micro_batches(batches, micro_batch_size, random.Random(seed))
    ]
    return dealt[:count]


def synthetic_batch(length: int, micro_batch_size: int, level_id: int, seed: int) -> list[dict]:
    """Rows of exactly ``length`` tokens whose only label is the last (a level token)."""
    draw = random.Random(seed)
    return [
        {
            "input_ids": [draw.randrange(100, 40000) for _ in range(length - 1)] + [level_id],
            "labels": [-100] * (length - 1) + [level_id],
            "decision_index": length - 1,
            "level": 4,
        }
        for _ in range(micro_batch_size)
    ]


def timed_step(engine, cfg: LearnerConfig, loss_fn, rows: list[dict]) -> tuple[float, float]:
    """(seconds for forward, backward and update; the loss), under the stages' own autocast."""
    from taosr.training.trainer import autocast

    began = time.perf_counter()
    with autocast(cfg):
        loss, _, _ = loss_fn(engine, rows)
    engine.backward(loss)
    engine.step()
    return time.perf_counter() - began, float(loss.detach())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cot", help="a run's cot/kept folder")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=24, help="timed micro-batches of the stage's rows per kernel")
    parser.add_argument(
        "--lengths", default="180,512", help="synthetic batch lengths, 3 timed steps each ('' for none)"
    )
    parser.add_argument("--micro-batch-size", type=int, default=16)
    parser.add_argument("--train-layers", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/attention.json")
    args = parser.parse_args(argv)

    import torch.distributed as dist

    from taosr.datasets.embedded_models import resolve_model
    from taosr.training.sft_objective import sft_step_loss
    from taosr.training.trainer import build_engine, trains_whole_response

    from provenance import git_commit, write_result  # bench/, beside this script
    from single_rank import start_single_rank

    start_single_rank(port=29519, threads=args.threads)
    model = resolve_model(args.model)
    batches = stage_micro_batches(args.cot, model, args.steps + 1, args.micro_batch_size, seed=0)
    cfg = LearnerConfig(
        lr=3e-4,
        weight_decay=0.0,
        warmup_ratio=0.0,
        min_lr_ratio=0.1,
        micro_batch_size=args.micro_batch_size,
        grad_clip=1.0,
        zero_stage=0,
        bf16=False,
        autocast=True,
        train_layers=args.train_layers,
    )
    engines = {
        kernel: build_engine(model, replace(cfg, attn_implementation=kernel), total_steps=1000)[0] for kernel in KERNELS
    }
    loss_fn = sft_step_loss(0.5)
    first_losses = {kernel: timed_step(engines[kernel], cfg, loss_fn, batches[0])[1] for kernel in KERNELS}  # warm-up
    steps = []
    for rows in batches[1:]:  # the kernels take turns, micro-batch by micro-batch
        kind = "reasoning" if any(trains_whole_response(r) for r in rows) else "decision-only"
        width = max(len(r["input_ids"]) for r in rows)
        for kernel in KERNELS:
            seconds, _ = timed_step(engines[kernel], cfg, loss_fn, rows)
            steps.append({"kernel": kernel, "kind": kind, "width": width, "seconds": seconds})
    level_id = batches[0][0]["input_ids"][batches[0][0]["decision_index"]]
    for length in [int(x) for x in args.lengths.split(",") if x]:
        for repeat in range(4):  # the first of each is a warm-up for the new shape
            rows = synthetic_batch(length, args.micro_batch_size, level_id, seed=repeat)
            for kernel in KERNELS:
                seconds, _ = timed_step(engines[kernel], cfg, loss_fn, rows)
                if repeat:
                    steps.append({"kernel": kernel, "kind": f"synthetic {length}", "width": length, "seconds": seconds})
    dist.destroy_process_group()

    kinds = list(dict.fromkeys(s["kind"] for s in steps))
    summary = []
    print(
        f"model {args.model}, top {args.train_layers} blocks trained, float32 weights under bf16 autocast, "
        f"{args.threads} threads, micro-batch {args.micro_batch_size}"
    )
    print(
        "| micro-batches | steps | mean width | sdpa median s | eager median s | sdpa total s | eager total s | "
        "sdpa / eager |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind in [*kinds, "all stage rows"]:
        chosen = [
            s
            for s in steps
            if s["kind"] == kind or (kind == "all stage rows" and not s["kind"].startswith("synthetic"))
        ]
        by = {k: [s["seconds"] for s in chosen if s["kernel"] == k] for k in KERNELS}
        row = {
            "micro_batches": kind,
            "steps": len(by["sdpa"]),
            "mean_width": statistics.fmean(s["width"] for s in chosen if s["kernel"] == "sdpa"),
            **{f"{k}_median_s": statistics.median(by[k]) for k in KERNELS},
            **{f"{k}_total_s": sum(by[k]) for k in KERNELS},
        }
        row["ratio"] = row["sdpa_total_s"] / row["eager_total_s"]
        summary.append(row)
        print(
            f"| {kind} | {row['steps']} | {row['mean_width']:.0f} | {row['sdpa_median_s']:.2f} | "
            f"{row['eager_median_s']:.2f} | {row['sdpa_total_s']:.1f} | {row['eager_total_s']:.1f} | "
            f"{row['ratio']:.2f}x |"
        )
    print(f"first step's loss (same weights): sdpa {first_losses['sdpa']:.4f}, eager {first_losses['eager']:.4f}")
    write_result(
        {
            "commit": git_commit(),
            "args": vars(args),
            "summary": summary,
            "first_step_loss": first_losses,
            "steps": steps,
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

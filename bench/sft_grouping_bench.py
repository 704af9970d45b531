"""SFT's step with the batch padded as one against decision-only and reasoning rows padded apart,
side by side in one run, through the stage's own loss (``ray_jobs.sft.sft_step_loss``).

With ``sft.reasoning_share`` 0.1, 81% of 16-row batches hold at least one reasoning row. Padded
as one, that row sets every row's width (a ~100-token answer after the prompt) and the
vocabulary projection covers its whole answer for all 16 rows: [16, ~100, 49152] float32
logits. Padded apart, the decision-only rows cost their prompt and two logit columns. Both
sides run the same batches (the stage's tokeniser and training order, the first ``--steps``
batches of 16), top ``--train-layers`` blocks trained under bf16 autocast as configs/tiny.yaml
trains them, alternating; the loss and the gradient must agree (the grouping only changes how
the same sums are formed).

    .venv/bin/python bench/sft_grouping_bench.py runs/tiny/cot/kept
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cot_kept", help="a run's cot/kept folder")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=9, help="batches per side (the first is dropped as warm-up)")
    parser.add_argument("--reasoning-share", type=float, default=0.1)
    parser.add_argument("--train-layers", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/sft_grouping.json")
    args = parser.parse_args(argv)

    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModelForCausalLM

    from ray_jobs.sft import SftTokenizer, sft_step_loss
    from taosr.datasets.embedded_models import resolve_model
    from taosr.sft_examples import split_by_answer_length
    from training.trainer import train_top_layers

    torch.set_num_threads(args.threads)
    path = resolve_model(args.model)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    trainable = train_top_layers(model, args.train_layers)
    table = pq.read_table(args.cot_kept)
    table = table.filter(pc.equal(table["split"], "train"))
    tokenized = SftTokenizer(path, "post_cot", 1024, seed=0, reasoning_share=args.reasoning_share)(table)
    examples = sorted(tokenized.to_pylist(), key=lambda row: row["training_order"])
    batches = [examples[i * args.batch:(i + 1) * args.batch] for i in range(args.steps)]
    sides = {"padded_as_one": sft_step_loss(0.5, split_groups=False), "split_by_answer_length": sft_step_loss(0.5)}

    def step(loss_fn, rows):
        began = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _, _ = loss_fn(model, rows)
        loss.backward()
        took = time.perf_counter() - began
        grads = torch.cat([p.grad.flatten() for p in trainable])
        model.zero_grad(set_to_none=True)
        return took, float(loss.detach()), grads

    seconds = {side: [] for side in sides}
    loss_gap, grad_gap = 0.0, 0.0
    for index, rows in enumerate(batches):
        results = {side: step(loss_fn, rows) for side, loss_fn in sides.items()}
        (_, loss_a, grad_a), (_, loss_b, grad_b) = results.values()
        loss_gap = max(loss_gap, abs(loss_a - loss_b))
        grad_gap = max(grad_gap, float((grad_a - grad_b).norm() / grad_a.norm()))
        if index:
            for side, (took, _, _) in results.items():
                seconds[side].append(took)
    from provenance import git_commit  # bench/, beside this script

    result = {
        "command": "bench/sft_grouping_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": git_commit(), "model": args.model, "batch": args.batch, "train_layers": args.train_layers,
        "reasoning_share": args.reasoning_share, "timed_steps_per_side": args.steps - 1,
        "batches_with_reasoning": sum(len(split_by_answer_length(rows)) > 1 for rows in batches),
        "rows": {side: {"median_s": statistics.median(s), "mean_s": statistics.mean(s)} for side, s in seconds.items()},
        "speedup_median": statistics.median(seconds["padded_as_one"]) / statistics.median(seconds["split_by_answer_length"]),
        "speedup_mean": statistics.mean(seconds["padded_as_one"]) / statistics.mean(seconds["split_by_answer_length"]),
        "max_loss_gap": loss_gap,
        "max_relative_gradient_gap": grad_gap,
    }
    print(json.dumps(result, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

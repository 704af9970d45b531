"""Right against left padding through SFT's step loss, side by side in one run.

A decision-only row's labels are its level token and end-of-turn token. Right-padded, those sit
at each row's own end, so the loss's vocabulary projection spans from the shortest prompt's end
to the longest's (tens of columns of [16, T, 49152] float32 logits); left-padded, every row ends
in the last column and the projection covers two. Both run the same rows through the same
forward, loss (``decision_weighted_nll``) and backward, alternating, on SmolLM2-135M with float32
weights under bf16 autocast, as the stage trains.

    .venv/bin/python bench/padding_bench.py runs/tiny/data/accepted
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("accepted", help="a run's data/accepted folder")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--repeats", type=int, default=6, help="steps per side (the first of each is dropped as warm-up)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/padding.json")
    args = parser.parse_args(argv)

    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from taosr.formats import ResponseFormat, render
    from taosr.losses import decision_weighted_nll, label_window_start, labelled_logits
    from taosr.datasets.embedded_models import resolve_model
    from taosr.prompts import build_prompt, item_from_row
    from taosr.sft_examples import pad_batch, padded_decision_index, tokenize_example

    torch.set_num_threads(args.threads)
    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    rows = [r for r in pq.read_table(args.accepted).to_pylist() if r["split"] == "train"]
    random.Random(0).shuffle(rows)
    examples = []
    for row in rows[: args.batch * args.repeats]:
        prompt = build_prompt(tokenizer, row["query"], item_from_row(row), ResponseFormat.POST_COT)
        response = render(ResponseFormat.LABEL_ONLY, int(row["label"]))  # a decision-only row keeps its first token
        examples.append(vars(tokenize_example(tokenizer, prompt, response, 1024, decision_char=0, decision_only=True)))

    def step(batch: list[dict], left: bool) -> tuple[float, int, float]:
        padded = {k: torch.tensor(v) for k, v in pad_batch(batch, pad_id=0, left=left).items()}
        start = label_window_start(padded["labels"])
        decision = torch.tensor(padded_decision_index(batch, padded["input_ids"].shape[1], left)) - start
        began = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, labels = labelled_logits(
                model, padded["input_ids"], padded["attention_mask"], padded["labels"], padded.get("position_ids")
            )
            loss, _ = decision_weighted_nll(logits, labels, decision, 0.5)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - began, logits.shape[1], float(loss.detach())

    seconds = {"right": [], "left": []}
    columns, losses = {}, {"right": [], "left": []}
    for index in range(args.repeats):
        batch = examples[index * args.batch : (index + 1) * args.batch]
        for side in ("right", "left"):
            took, columns[side], loss = step(batch, side == "left")
            losses[side].append(loss)
            if index:
                seconds[side].append(took)
    gap = max(abs(a - b) for a, b in zip(losses["right"], losses["left"]))
    from provenance import git_commit, write_result  # bench/, beside this script

    commit = git_commit()
    result = {
        "command": "bench/padding_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": commit,
        "model": args.model,
        "batch": args.batch,
        "steps_per_side": len(seconds["right"]),
        "mean_prompt_tokens": statistics.mean(len(e["input_ids"]) for e in examples),
        "rows": {
            side: {
                "logit_columns_last_step": columns[side],
                "median_s": statistics.median(seconds[side]),
                "mean_s": statistics.mean(seconds[side]),
            }
            for side in seconds
        },
        "speedup_median": statistics.median(seconds["right"]) / statistics.median(seconds["left"]),
        "speedup_mean": statistics.mean(seconds["right"]) / statistics.mean(seconds["left"]),
        "max_loss_gap": gap,
    }
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

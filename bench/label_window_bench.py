"""Supervised training step with logits on the label window vs on the whole sequence, side by side.

The SFT, GenRM and DPO steps read log-probabilities of response tokens only, but the model's
vocabulary projection and the float32 softmax ran over every column, prompt included (the
prompt is most of each sequence; SmolLM2's vocabulary has 49,152 entries). ``labelled_logits``
asks the model for the columns from the earliest label on. Both paths run here in one process
on the same micro-batches, through the stages' own DeepSpeed engine (bf16, ZeRO-2, AdamW) and
their own loss code, alternating so that drift on the box hits both alike:

  whole.   the model's logits on every column, then the loss
  window.  ``labelled_logits`` (the stages' path), then the same loss

Micro-batches (built-in data, the main job's micro-batch sizes):
  sft.    4 post-CoT examples (label first, then the five steps)
  genrm.  4 step-judging questions (one-token Yes/No answer)
  dpo.    2 pairs (chosen and rejected through the policy as one batch of 4)

    .venv/bin/python bench/label_window_bench.py --model smollm2-135m --steps 6

Prints a table and writes the numbers as JSON (default bench/results/label_window.json).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path


def sft_batches(tokenizer, count: int, batch: int, seed: int) -> list[list[dict]]:
    from taosr.datasets.synthetic import generate_rows
    from taosr.formats import Reasoning, ResponseFormat, render
    from taosr.prompts import build_prompt, item_from_row
    from taosr.sft_examples import tokenize_example

    examples = []
    for row in generate_rows(count * batch, seed=seed):
        reasoning = Reasoning(**row["step_annotations"])
        prompt = build_prompt(tokenizer, row["query"], item_from_row(row), ResponseFormat.POST_COT)
        example = tokenize_example(
            tokenizer, prompt, render(ResponseFormat.POST_COT, int(row["label"]), reasoning), 512
        )
        examples.append({"input_ids": example.input_ids, "labels": example.labels})
    return [examples[i : i + batch] for i in range(0, len(examples), batch)]


def genrm_batches(tokenizer, count: int, batch: int, seed: int) -> list[list[dict]]:
    from taosr.datasets.synthetic import generate_rows
    from taosr.genrm import AnnotatedRow, annotated_reasoning, judge_examples, judge_prompt
    from taosr.prompts import item_from_row, render_item
    from taosr.sft_examples import tokenize_example

    rows = []
    for row in generate_rows(count * batch, seed=seed):
        reasoning, judged = annotated_reasoning(row["step_annotations"], None)
        rows.append(AnnotatedRow(row["query"], render_item(item_from_row(row)), reasoning, judged))
    examples = []
    for e in judge_examples(rows, random.Random(seed))[: count * batch]:
        example = tokenize_example(
            tokenizer, judge_prompt(tokenizer, e.query, e.item_text, e.step_lines), e.answer, 1024
        )
        examples.append({"input_ids": example.input_ids, "labels": example.labels})
    return [examples[i : i + batch] for i in range(0, len(examples), batch)]


def dpo_batches(sft: list[list[dict]], seed: int) -> list[list[dict]]:
    """Pairs from SFT examples: the rejected response is another row's response on the same
    prompt (the length and masking are what matter for timing)."""
    rng = random.Random(seed)
    flat = [e for batch in sft for e in batch]
    pairs = []
    for example in flat:
        other = rng.choice(flat)
        prompt_len = example["labels"].count(-100)
        response = other["input_ids"][other["labels"].count(-100) :]
        rejected = example["input_ids"][:prompt_len] + response
        pairs.append(
            {
                "chosen_input_ids": example["input_ids"],
                "chosen_labels": example["labels"],
                "rejected_input_ids": rejected,
                "rejected_labels": [-100] * prompt_len + response,
                "reference_chosen": -20.0,
                "reference_rejected": -25.0,
            }
        )
    return [pairs[i : i + 2] for i in range(0, len(pairs) - 1, 2)]


def whole_sequence_sft_loss(engine, rows):
    """The loss as the SFT step computed it before the window: logits on every column."""
    import torch

    from taosr.losses import masked_token_nll
    from taosr.sft_examples import pad_batch

    padded = {k: torch.tensor(v) for k, v in pad_batch(rows, pad_id=0).items()}
    logits = engine(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
    return masked_token_nll(logits, padded["labels"])[0]


def whole_sequence_dpo_loss(engine, rows):
    import torch

    from taosr.losses import dpo_loss, sequence_logprobs
    from taosr.sft_examples import pad_batch

    sequences = [{"input_ids": r["chosen_input_ids"], "labels": r["chosen_labels"]} for r in rows] + [
        {"input_ids": r["rejected_input_ids"], "labels": r["rejected_labels"]} for r in rows
    ]
    padded = {k: torch.tensor(v) for k, v in pad_batch(sequences, pad_id=0).items()}
    logits = engine(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
    policy = sequence_logprobs(logits, padded["labels"])
    reference = torch.tensor([r["reference_chosen"] for r in rows] + [r["reference_rejected"] for r in rows])
    half = len(rows)
    return dpo_loss(policy[:half], policy[half:], reference[:half], reference[half:])[0]


def time_steps(engine, loss_fn, batches) -> list[float]:
    seconds = []
    for rows in batches:
        started = time.perf_counter()
        loss = loss_fn(engine, rows)
        engine.backward(loss)
        engine.step()
        seconds.append(time.perf_counter() - started)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="embedded model name or Hugging Face folder")
    parser.add_argument("--steps", type=int, default=6, help="timed micro-batches per path and workload")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/label_window.json")
    args = parser.parse_args(argv)

    import torch.distributed as dist
    from transformers import AutoTokenizer

    from taosr.datasets.embedded_models import resolve_model
    from taosr.training.dpo_objective import dpo_step_loss
    from taosr.training.sft_objective import sft_loss
    from taosr.training.trainer import build_engine

    from single_rank import start_single_rank  # bench/, beside this script

    start_single_rank(port=29517, threads=args.threads)
    model = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    sft = sft_batches(tokenizer, args.steps + 1, 4, seed=0)
    workloads = {
        "sft": (sft, whole_sequence_sft_loss, lambda e, r: sft_loss(e, r)[0]),
        "genrm": (
            genrm_batches(tokenizer, args.steps + 1, 4, seed=1),
            whole_sequence_sft_loss,
            lambda e, r: sft_loss(e, r)[0],
        ),
        "dpo": (
            dpo_batches(sft, seed=2)[: args.steps + 1],
            whole_sequence_dpo_loss,
            lambda e, r: dpo_step_loss(0.1, 0.0)(e, r)[0],
        ),
    }
    from taosr.config_sections import LearnerConfig

    cfg = LearnerConfig(lr=1e-5, weight_decay=0.0, warmup_ratio=0.0, micro_batch_size=4, grad_clip=1.0, zero_stage=2)
    engine, _ = build_engine(model, cfg, total_steps=1000)
    results = []
    for name, (batches, whole_loss, window_loss) in workloads.items():
        time_steps(engine, window_loss, batches[:1])  # warm-up, not timed
        timed = {"whole": [], "window": []}
        for rows in batches[1:]:  # alternate the two paths micro-batch by micro-batch
            timed["whole"] += time_steps(engine, whole_loss, [rows])
            timed["window"] += time_steps(engine, window_loss, [rows])
        labels = [r.get("labels") or r["chosen_labels"] for rows in batches for r in rows]  # DPO: the chosen side
        lengths, labelled = [len(x) for x in labels], [sum(1 for t in x if t != -100) for x in labels]
        for path, seconds in timed.items():
            results.append(
                {
                    "workload": name,
                    "path": path,
                    "median_s": statistics.median(seconds),
                    "mean_s": statistics.fmean(seconds),
                    "steps": len(seconds),
                    "mean_tokens": statistics.fmean(lengths),
                    "mean_labelled_tokens": statistics.fmean(labelled),
                }
            )
    dist.destroy_process_group()

    print(f"model {args.model}, bf16 DeepSpeed ZeRO-2 step (forward, backward, AdamW), {args.threads} threads")
    print("| workload | tokens/row | labelled/row | whole s/step | window s/step | speed-up |")
    print("|---|---|---|---|---|---|")
    for name in workloads:
        whole, window = (
            next(r for r in results if r["workload"] == name and r["path"] == p) for p in ("whole", "window")
        )
        print(
            f"| {name} | {whole['mean_tokens']:.0f} | {whole['mean_labelled_tokens']:.0f} | {whole['median_s']:.2f} | "
            f"{window['median_s']:.2f} | {whole['median_s'] / window['median_s']:.2f}x |"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"model": args.model, "threads": args.threads, "results": results}, indent=1) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

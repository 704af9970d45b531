"""Control for the SFT stage: a plain PyTorch label-only fine-tune outside Ray and DeepSpeed.

float32 weights under bf16 autocast, AdamW, cosine with warm-up, batch 16, cross-entropy on the
level token only, the project's own label-only prompt. It reads a run's validated data
(``<run_dir>/data/accepted``) and prints validation macro-F1 and QWK every 25 steps on a fixed
sample of 128 validation rows, so the stage's curves can be compared with a loop that has none
of its machinery.

    .venv/bin/python bench/label_only_probe.py runs/user-logs/data/accepted --steps 200
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("accepted", help="a run's data/accepted folder")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-layers", type=int, default=0, help="train only the top N blocks (0 = all weights)")
    parser.add_argument("--eval-every", type=int, default=25)
    args = parser.parse_args(argv)

    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup

    from taosr.metrics import classification_metrics, spearman
    from taosr.datasets.embedded_models import resolve_model
    from taosr.models import level_token_ids
    from taosr.prompts import build_prompt, item_from_row

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    rows = pq.read_table(args.accepted).to_pylist()
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"][:128]
    random.Random(0).shuffle(train)
    ids = level_token_ids(tokenizer)
    levels = [ids[level] for level in (1, 2, 3, 4)]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if args.train_layers:
        from taosr.training.trainer import train_top_layers

        train_top_layers(model, args.train_layers)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    schedule = get_cosine_schedule_with_warmup(optimizer, 10, args.steps)

    def last_logits(batch):
        prompts = [
            tokenizer.encode(
                build_prompt(tokenizer, r["query"], item_from_row(r), "label_only"), add_special_tokens=False
            )
            for r in batch
        ]
        width = max(map(len, prompts))
        ids_ = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return (
                model(
                    input_ids=ids_,
                    attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    logits_to_keep=1,
                )
                .logits[:, -1]
                .float()
            )

    started, losses = time.time(), []
    for step in range(1, args.steps + 1):
        batch = [train[(i) % len(train)] for i in range((step - 1) * args.batch, step * args.batch)]
        loss = torch.nn.functional.cross_entropy(last_logits(batch), torch.tensor([ids[r["label"]] for r in batch]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if step % args.eval_every == 0:
            model.eval()
            with torch.no_grad():
                probs = torch.cat(
                    [last_logits(val[start : start + 32])[:, levels].softmax(-1) for start in range(0, len(val), 32)]
                )
            model.train()
            pred = [int(i) + 1 for i in probs.argmax(-1)]
            metrics = classification_metrics([r["label"] for r in val], pred)
            # Is the input read at all? The expected level can rank the rows while the prior still
            # decides every argmax.
            metrics["spearman"] = spearman((probs * torch.arange(1, 5)).sum(-1).tolist(), [r["label"] for r in val])
            print(
                json.dumps(
                    {
                        "step": step,
                        "train_nll_25": round(sum(losses[-args.eval_every :]) / args.eval_every, 4),
                        "val_f1": round(metrics["macro_f1"], 3),
                        "val_qwk": metrics["qwk"] and round(metrics["qwk"], 3),
                        "val_spearman": metrics["spearman"] and round(metrics["spearman"], 3),
                        "pred": {level: pred.count(level) for level in (1, 2, 3, 4)},
                        "s": round(time.time() - started),
                    }
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

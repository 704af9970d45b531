"""Stage 1: supervised fine-tuning on the CoT dataset with Ray Train + DeepSpeed ZeRO.

    ray job submit --working-dir . -- python -m taosr.ray_jobs.sft --config configs/tiny.yaml

Rows stream from Ray Data (each worker reads its shard with ``get_dataset_shard``); the loss is
next-token cross-entropy on the assistant turn only; checkpoints are reported to Ray Train every
``sft.checkpoint_every_steps`` and at the end; the final checkpoint becomes a Hugging Face
folder (weights, tokenizer, and ``taosr-model.json`` naming the response format) that
transformers, vLLM and the later stages load.
"""

from __future__ import annotations

import json
import sys

from taosr.actors.runtime import init_ray
from taosr.config import TaosrConfig, to_dict, to_yaml
from taosr.datasets.storage import join, write_json, write_text
from taosr.formats import Reasoning, ResponseFormat, render
from taosr.models import model_info
from taosr.prompts import build_prompt, item_from_row
from taosr.ray_jobs.job_args import parse_job_args
from taosr.ray_jobs.training import fit, require_examples, run_training
from taosr.sft_examples import pad_batch, tokenize_example


class SftTokenizer:
    """Ray Data batch function: CoT rows -> input_ids and prompt-masked labels in ``fmt``."""

    def __init__(self, model_path: str, fmt: str, max_seq_len: int):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.fmt = ResponseFormat(fmt)
        self.max_seq_len = max_seq_len

    def __call__(self, batch):
        import pyarrow as pa

        out = {"input_ids": [], "labels": []}
        for row in batch.to_pylist():
            reasoning = Reasoning(**json.loads(row["reasoning"])) if row.get("reasoning") else None
            prompt = build_prompt(self.tokenizer, row["query"], item_from_row(row), self.fmt)
            example = tokenize_example(self.tokenizer, prompt, render(self.fmt, int(row["label"]), reasoning),
                                       self.max_seq_len)
            if example is not None:
                out["input_ids"].append(example.input_ids)
                out["labels"].append(example.labels)
        return pa.table({"input_ids": pa.array(out["input_ids"], pa.list_(pa.int32())),
                         "labels": pa.array(out["labels"], pa.list_(pa.int32()))})


def sft_loss(engine, rows: list[dict]):
    """Next-token cross-entropy on the assistant turn of a micro-batch."""
    import torch

    from taosr.losses import labelled_logits, masked_token_nll

    padded = pad_batch(rows, pad_id=0)  # any valid id: padding is masked out and right of every real token
    tensors = {key: torch.tensor(value, device=engine.device) for key, value in padded.items()}
    loss, _ = masked_token_nll(*labelled_logits(engine, tensors["input_ids"], tensors["attention_mask"],
                                                tensors["labels"]))
    return loss, {}, int(tensors["attention_mask"].sum())


def train_loop(loop_config: dict) -> None:
    """Runs on every Ray Train worker."""
    run_training(loop_config, "sft", sft_loss)


def tokenized_dataset(cot_ds, model_path: str, sft_config):
    ds = cot_ds
    if sft_config.max_examples:
        ds = ds.limit(sft_config.max_examples)
    return ds.map_batches(SftTokenizer, fn_constructor_args=(model_path, sft_config.format, sft_config.max_seq_len),
                          batch_format="pyarrow", batch_size=256, concurrency=1).materialize()


def train(config: TaosrConfig, base_model_path: str, out_dir: str, cot_ds=None) -> dict:
    """Train from ``base_model_path`` on the CoT training split; the HF folder lands in out_dir/model."""
    import ray
    from transformers import AutoTokenizer

    if cot_ds is None:
        cot_ds = ray.data.read_parquet(join(config.run_dir, "cot", "kept"))
    train_rows = cot_ds.filter(expr="split == 'train'")
    data = tokenized_dataset(train_rows, base_model_path, config.sft)
    num_examples = data.count()
    require_examples(num_examples, config.sft, "training examples")
    info = model_info(AutoTokenizer.from_pretrained(base_model_path), config.sft.format,
                      base_model=base_model_path, stage="sft")
    loop_config = {"trainer": to_dict(config)["sft"], "seed": config.seed, "model_path": base_model_path,
                   "num_examples": num_examples, "model_info": info}
    metrics = fit(train_loop, loop_config, config.sft, data, out_dir, config.data.s3_endpoint)
    summary = {"examples": num_examples, "format": config.sft.format, **metrics}
    write_json(join(out_dir, "summary.json"), summary, config.data.s3_endpoint)
    write_text(join(out_dir, "config.yaml"), to_yaml(config), config.data.s3_endpoint)
    return {"model": join(out_dir, "model"), **summary}


def main(argv=None) -> int:
    from taosr.models import resolve_model

    config = parse_job_args(argv, __doc__)
    init_ray(config.ray)
    base = resolve_model(config.model.name, config.model.cache_dir)
    print(json.dumps(train(config, base, join(config.run_dir, "sft"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
import math
import os
import shutil
import sys
import tempfile
import time

from taosr.actors.runtime import init_ray
from taosr.config import TaosrConfig, to_dict, to_yaml
from taosr.datasets.storage import join, write_json, write_text
from taosr.formats import Reasoning, ResponseFormat, render
from taosr.models import MODEL_INFO, model_info
from taosr.prompts import build_prompt, item_from_row
from taosr.ray_jobs.job_args import parse_job_args
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


def deepspeed_config(sft: dict) -> dict:
    return {
        "train_micro_batch_size_per_gpu": sft["micro_batch_size"],
        "gradient_accumulation_steps": sft["grad_accum"],
        "gradient_clipping": sft["grad_clip"],
        "zero_optimization": {"stage": sft["zero_stage"]},
        "bf16": {"enabled": sft["bf16"]},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def train_loop(loop_config: dict) -> None:
    """Runs on every Ray Train worker."""
    import deepspeed
    import ray.train
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup

    from taosr.losses import masked_token_nll

    sft = loop_config["sft"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(loop_config["seed"] + rank)
    torch.set_num_threads(sft["cpus_per_worker"])
    tokenizer = AutoTokenizer.from_pretrained(loop_config["model_path"])
    model = AutoModelForCausalLM.from_pretrained(loop_config["model_path"], dtype=torch.float32)
    model.config.use_cache = False

    per_step = world * sft["micro_batch_size"] * sft["grad_accum"]
    micro_steps_per_epoch = loop_config["num_examples"] // (world * sft["micro_batch_size"])
    total_steps = max(1, sft["epochs"] * micro_steps_per_epoch // sft["grad_accum"])
    if sft["max_steps"]:
        total_steps = min(total_steps, sft["max_steps"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=sft["lr"], betas=(0.9, 0.999), weight_decay=sft["weight_decay"])
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(sft["warmup_ratio"] * total_steps), total_steps)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(sft), dist_init_required=False)

    writer = None
    if rank == 0 and loop_config.get("tensorboard_dir"):
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(loop_config["tensorboard_dir"])
    shard = ray.train.get_dataset_shard("train")
    step, tokens, started, last_loss = 0, 0, time.time(), float("nan")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for epoch in range(sft["epochs"]):
        batches = shard.iter_batches(batch_size=sft["micro_batch_size"], batch_format="pyarrow", drop_last=True)
        for micro_step, batch in enumerate(batches):
            if micro_step >= micro_steps_per_epoch or step >= total_steps:
                break  # every rank runs the same number of micro-steps, or collectives hang
            padded = pad_batch(batch.to_pylist(), pad_id)
            tensors = {key: torch.tensor(value, device=engine.device) for key, value in padded.items()}
            logits = engine(input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"]).logits
            loss, count = masked_token_nll(logits, tensors["labels"])
            engine.backward(loss)
            engine.step()
            tokens += int(tensors["attention_mask"].sum())
            last_loss = float(loss.detach())
            if not engine.is_gradient_accumulation_boundary():
                continue
            step += 1
            metrics = {"step": step, "epoch": epoch, "loss": last_loss, "lr": scheduler.get_last_lr()[0],
                       "tokens_per_s": tokens * world / max(time.time() - started, 1e-9), "examples": step * per_step}
            if rank == 0 and (step % sft["log_every_steps"] == 0 or step == 1):
                print(json.dumps({"sft": {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}}),
                      flush=True)
                if writer:
                    for key in ("loss", "lr", "tokens_per_s"):
                        writer.add_scalar(f"sft/{key}", metrics[key], step)
            if step % sft["checkpoint_every_steps"] == 0 and step < total_steps:
                _report_checkpoint(engine, tokenizer, loop_config, metrics, rank)
        if step >= total_steps:
            break
    final = {"step": step, "loss": last_loss, "tokens_per_s": tokens * world / max(time.time() - started, 1e-9),
             "train_seconds": time.time() - started}
    _report_checkpoint(engine, tokenizer, loop_config, final, rank)
    if writer:
        writer.close()


def _report_checkpoint(engine, tokenizer, loop_config: dict, metrics: dict, rank: int) -> None:
    """Save a Hugging Face folder on rank 0 and report it; every rank reports the metrics."""
    import ray.train

    zero3 = loop_config["sft"]["zero_stage"] == 3
    state = engine._zero3_consolidated_16bit_state_dict() if zero3 else None  # collective: all ranks
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        engine.module.save_pretrained(folder, state_dict=state)
        tokenizer.save_pretrained(folder)
        with open(os.path.join(folder, MODEL_INFO), "w") as handle:
            json.dump(loop_config["model_info"], handle)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def tokenized_dataset(cot_ds, model_path: str, sft_config):
    ds = cot_ds
    if sft_config.max_examples:
        ds = ds.limit(sft_config.max_examples)
    return ds.map_batches(SftTokenizer, fn_constructor_args=(model_path, sft_config.format, sft_config.max_seq_len),
                          batch_format="pyarrow", batch_size=256, concurrency=1).materialize()


def train(config: TaosrConfig, base_model_path: str, out_dir: str, cot_ds=None) -> dict:
    """Train from ``base_model_path`` on the CoT training split; the HF folder lands in out_dir/model."""
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from transformers import AutoTokenizer

    from taosr.datasets.readers import filesystem_for

    if cot_ds is None:
        cot_ds = ray.data.read_parquet(join(config.run_dir, "cot", "kept"))
    train_rows = cot_ds.filter(expr="split == 'train'")
    data = tokenized_dataset(train_rows, base_model_path, config.sft)
    num_examples = data.count()
    if num_examples < config.sft.num_workers * config.sft.micro_batch_size:
        raise ValueError(f"only {num_examples} training examples: too few for {config.sft.num_workers} workers "
                         f"x micro-batch {config.sft.micro_batch_size}")
    info = model_info(AutoTokenizer.from_pretrained(base_model_path), config.sft.format,
                      base_model=base_model_path, stage="sft")
    local_out = None if out_dir.startswith("s3://") else os.path.abspath(out_dir)
    loop_config = {
        "sft": to_dict(config)["sft"], "seed": config.seed, "model_path": base_model_path,
        "num_examples": num_examples, "model_info": info,
        "tensorboard_dir": os.path.join(local_out, "tensorboard") if local_out else None,
    }
    storage = local_out or out_dir
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if config.sft.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=config.sft.num_workers, use_gpu=config.sft.use_gpu,
                                               resources_per_worker={"CPU": config.sft.cpus_per_worker}),
        run_config=ray.train.RunConfig(name="ray_train", storage_path=storage,
                                       storage_filesystem=filesystem_for(storage, config.data.s3_endpoint),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)),
        datasets={"train": data},
    )
    result = trainer.fit()
    final_dir = join(out_dir, "model")
    if local_out:
        if os.path.exists(final_dir):
            shutil.rmtree(final_dir)
        result.checkpoint.to_directory(final_dir)
    else:
        with result.checkpoint.as_directory() as folder:
            _upload_folder(folder, final_dir, config.data.s3_endpoint)
    summary = {"examples": num_examples, "format": config.sft.format, **{k: v for k, v in result.metrics.items()
                                                                          if isinstance(v, (int, float))}}
    write_json(join(out_dir, "summary.json"), summary, config.data.s3_endpoint)
    write_text(join(out_dir, "config.yaml"), to_yaml(config), config.data.s3_endpoint)
    return {"model": final_dir, **summary}


def _upload_folder(folder: str, target: str, s3_endpoint: str) -> None:
    from pyarrow import fs

    from taosr.datasets.readers import filesystem_for

    fs.copy_files(folder, target[len("s3://"):], destination_filesystem=filesystem_for(target, s3_endpoint))


def main(argv=None) -> int:
    from taosr.models import resolve_model

    config = parse_job_args(argv, __doc__)
    init_ray(config.ray)
    base = resolve_model(config.model.name, config.model.cache_dir)
    print(json.dumps(train(config, base, join(config.run_dir, "sft"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

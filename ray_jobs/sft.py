"""Stage 1: supervised fine-tuning on the CoT dataset with Ray Train + DeepSpeed ZeRO.

    ray job submit --working-dir . -- python -m taosr.ray_jobs.sft --config configs/tiny.yaml

Rows stream from Ray Data (each worker reads its shard with ``get_dataset_shard``) in a seeded
order, reshuffled every epoch; the loss is next-token cross-entropy on the assistant turn, with
the level token carrying ``sft.decision_weight`` of it (``taosr.losses.decision_weighted_nll``);
every ``sft.eval_every_steps`` the model's first-token level distribution is scored on a
validation sample and the best step is kept; checkpoints are reported to Ray Train every
``sft.checkpoint_every_steps`` and at the end; the final checkpoint becomes a Hugging Face
folder (weights, tokenizer, and ``taosr-model.json`` naming the response format) that
transformers, vLLM and the later stages load.
"""

from __future__ import annotations

import hashlib
import json
import sys

from taosr.config import TaosrConfig, to_dict, to_yaml
from taosr.datasets.storage import join, local_dir, read_parquet, write_json, write_text
from taosr.formats import Reasoning, ResponseFormat, decision_offset, render
from taosr.models import model_info
from taosr.prompts import build_prompt, item_from_row
from taosr.stages.job_args import run_job
from taosr.stages.registry import StageSpec
from taosr.training.trainer import fit, require_examples, run_training
from taosr.training.validation import first_token_validator, run_validation_set
from taosr.sft_examples import pad_batch, padded_decision_index, tokenize_example


class SftTokenizer:
    """Ray Data batch function: CoT rows -> input_ids and prompt-masked labels in ``fmt``."""

    def __init__(self, model_path: str, fmt: str, max_seq_len: int, seed: int = 0, reasoning_share: float = 1.0):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(local_dir(model_path))
        self.fmt = ResponseFormat(fmt)
        self.max_seq_len = max_seq_len
        self.seed = seed
        self.reasoning_share = reasoning_share if self.fmt is ResponseFormat.POST_COT else 1.0

    def __call__(self, batch):
        import pyarrow as pa

        out = {"input_ids": [], "labels": [], "decision_index": [], "level": [], "training_order": []}
        for row in batch.to_pylist():
            reasoning = Reasoning(**json.loads(row["reasoning"])) if row.get("reasoning") else None
            prompt = build_prompt(self.tokenizer, row["query"], item_from_row(row), self.fmt)
            response = render(self.fmt, int(row["label"]), reasoning)
            example = tokenize_example(
                self.tokenizer,
                prompt,
                response,
                self.max_seq_len,
                decision_char=decision_offset(self.fmt, response),
                decision_only=not carries_reasoning(row["id"], self.seed, self.reasoning_share),
            )
            if example is not None:
                out["input_ids"].append(example.input_ids)
                out["labels"].append(example.labels)
                out["decision_index"].append(example.decision_index)
                out["level"].append(int(row["label"]))
                out["training_order"].append(hashlib.sha256(f"{self.seed}:{row['id']}".encode()).hexdigest())
        return pa.table(
            {
                "input_ids": pa.array(out["input_ids"], pa.list_(pa.int32())),
                "labels": pa.array(out["labels"], pa.list_(pa.int32())),
                "decision_index": pa.array(out["decision_index"], pa.int32()),
                "level": pa.array(out["level"], pa.int8()),
                "training_order": pa.array(out["training_order"], pa.string()),
            }
        )


def carries_reasoning(row_id: str, seed: int, share: float) -> bool:
    """Whether a training row keeps its reasoning (a seeded draw keyed on its id, so reruns and
    epochs agree): the others are trained on the decision alone."""
    if share >= 1.0:
        return True
    digest = hashlib.sha256(f"reasoning:{seed}:{row_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def sft_loss(engine, rows: list[dict]):
    """Plain next-token cross-entropy on the assistant turn (the GenRM's loss: its answer is
    one Yes/No token, so there is nothing to weigh apart)."""
    import torch

    from taosr.losses import labelled_logits, masked_token_nll

    padded = pad_batch(rows, pad_id=0)  # any valid id: padding is masked out and right of every real token
    tensors = {key: torch.tensor(value, device=engine.device) for key, value in padded.items()}
    loss, _ = masked_token_nll(
        *labelled_logits(engine, tensors["input_ids"], tensors["attention_mask"], tensors["labels"])
    )
    return loss, {}, int(tensors["attention_mask"].sum())


def class_weights(levels: list[int], power: float) -> dict[int, float]:
    """{level: count^-power}, scaled so the mean weight over ``levels`` is 1 (power 0: all 1)."""
    counts = {level: levels.count(level) for level in set(levels)}
    raw = {level: count**-power for level, count in counts.items()}
    mean = sum(raw[level] for level in levels) / len(levels)
    return {level: weight / mean for level, weight in raw.items()}


def sft_step_loss(decision_weight: float, level_weights: dict | None = None):
    """The loss_fn for ``run_training``: decision-weighted cross-entropy on the assistant turn."""

    def loss_fn(engine, rows: list[dict]):
        import torch

        from taosr.losses import decision_weighted_nll, label_window_start, labelled_logits

        # Left padding: a decision-only row's labels are its last two tokens, so every row's
        # end sits in the last columns and the vocabulary projection covers those alone.
        padded = pad_batch(rows, pad_id=0, left=True)  # any valid id: padding is masked out
        tensors = {key: torch.tensor(value, device=engine.device) for key, value in padded.items()}
        start = label_window_start(tensors["labels"])
        logits, labels = labelled_logits(
            engine, tensors["input_ids"], tensors["attention_mask"], tensors["labels"], tensors["position_ids"]
        )
        decision = torch.tensor(
            padded_decision_index(rows, tensors["input_ids"].shape[1], left=True), device=engine.device
        )
        decision = torch.where(decision >= 0, decision - start, decision)
        weights = None
        if level_weights:
            weights = torch.tensor([level_weights[str(r["level"])] for r in rows], device=engine.device)
        loss, parts = decision_weighted_nll(logits, labels, decision, decision_weight, weights)
        return loss, parts, int(tensors["attention_mask"].sum())

    return loss_fn


def train_loop(loop_config: dict) -> None:
    """Runs on every Ray Train worker."""
    cfg = loop_config["trainer"]
    validation = loop_config.get("validation")
    run_training(
        loop_config,
        "sft",
        sft_step_loss(cfg["decision_weight"], loop_config.get("level_weights")),
        first_token_validator(validation) if validation else None,
    )


def tokenized_dataset(cot_ds, model_path: str, sft_config, seed: int = 0):
    """Tokenised examples in a seeded order keyed on each row's id (Ray Data does not keep the
    arrival order from run to run, and the logs arrive grouped by query); ``max_examples`` takes
    a seeded sample, not the first rows."""
    ds = cot_ds.map_batches(
        SftTokenizer,
        fn_constructor_args=(model_path, sft_config.format, sft_config.max_seq_len, seed, sft_config.reasoning_share),
        batch_format="pyarrow",
        batch_size=256,
        concurrency=1,
    )
    ds = ds.sort("training_order")
    if sft_config.max_examples:
        ds = ds.limit(sft_config.max_examples)
    return ds.drop_columns(["training_order"]).materialize()


def train(config: TaosrConfig, base_model_path: str, out_dir: str, cot_ds=None) -> dict:
    """Train from ``base_model_path`` on the CoT training split; the HF folder lands in out_dir/model."""
    from transformers import AutoTokenizer

    if cot_ds is None:
        cot_ds = read_parquet(join(config.run_dir, "cot", "kept"), config.data.s3_endpoint)
    train_rows = cot_ds.filter(expr="split == 'train'")
    data = tokenized_dataset(train_rows, base_model_path, config.sft, config.seed)
    num_examples = data.count()
    require_examples(num_examples, config.sft, "training examples")
    tokenizer = AutoTokenizer.from_pretrained(local_dir(base_model_path))
    info = model_info(tokenizer, config.sft.format, base_model=base_model_path, stage="sft")
    levels = [int(row["level"]) for row in data.select_columns(["level"]).take_all()]
    label_counts = {str(level): levels.count(level) for level in sorted(set(levels))}
    loop_config = {
        "trainer": to_dict(config)["sft"],
        "seed": config.seed,
        "model_path": base_model_path,
        "num_examples": num_examples,
        "model_info": info,
    }
    if config.sft.class_balance:
        loop_config["level_weights"] = {str(k): v for k, v in class_weights(levels, config.sft.class_balance).items()}
    if config.sft.eval_every_steps:
        loop_config["validation"] = run_validation_set(
            config.run_dir,
            config.data.s3_endpoint,
            tokenizer,
            ResponseFormat(config.sft.format),
            config.sft.eval_examples,
            config.seed,
        )
    metrics = fit(train_loop, loop_config, config.sft, data, out_dir, config.data.s3_endpoint, config.ray)
    summary = {
        "examples": num_examples,
        "label_counts": label_counts,
        "format": config.sft.format,
        "validation_rows": len((loop_config.get("validation") or {}).get("gold", [])),
        **metrics,
    }
    write_json(join(out_dir, "summary.json"), summary, config.data.s3_endpoint)
    write_text(join(out_dir, "config.yaml"), to_yaml(config), config.data.s3_endpoint)
    return {"model": join(out_dir, "model"), **summary}


def run_stage(config: TaosrConfig) -> dict:
    from taosr.datasets.embedded_models import resolve_model

    return train(config, resolve_model(config.model.name, config.model.cache_dir), join(config.run_dir, "sft"))


STAGE = StageSpec("sft", ("sft",), ("cot",), run=run_stage, policy_title="SFT")


def main(argv=None) -> int:
    return run_job(STAGE.run, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())

"""Stage 2b: DPO on self-correction and oracle-guidance pairs, with Ray Train + DeepSpeed.

    ray job submit --working-dir . -- python -m taosr.ray_jobs.dpo --config configs/tiny.yaml

Reads the pass@N samples of <run_dir>/sample/samples. In one Ray Data pass with the frozen SFT
model (the reference), it builds each prompt's preference pairs (docs/method.md section 4), tokenises
them, and stores the reference log-probabilities of chosen and rejected with the pair: the
trainer then holds only the policy. Identical (prompt, chosen, rejected) triples are kept once.
Writes <run_dir>/dpo/pairs/ (Parquet), dpo/pairs.json (counts), and the trained model in
dpo/model/ with TensorBoard and metrics.jsonl (loss, implicit rewards, margin, accuracy).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys

from taosr.config import TaosrConfig, to_dict, to_yaml
from taosr.datasets.storage import absolute, join, local_dir, read_parquet, write_dataset, write_json, write_text
from taosr.formats import ResponseFormat
from taosr.models import model_info
from taosr.preferences import Sample, build_pairs, pair_counts
from taosr.prompts import build_prompt, item_from_row
from taosr.stages.job_args import run_job
from taosr.stages.registry import StageSpec
from taosr.training.trainer import fit, require_examples, run_training
from taosr.sft_examples import IGNORE_INDEX, pad_batch, tokenize_example

PAIR_COLUMNS = (
    "pair_key",
    "prompt_id",
    "query_type",
    "label",
    "kind",
    "chosen",
    "rejected",
    "chosen_input_ids",
    "chosen_labels",
    "rejected_input_ids",
    "rejected_labels",
    "reference_chosen",
    "reference_rejected",
)


class PairsWithReference:
    """Ray Data callable class: sampled rows -> preference pairs with reference log-probs."""

    def __init__(
        self,
        reference_path: str,
        pairs_per_prompt: int,
        max_seq_len: int,
        batch_size: int,
        seed: int,
        dtype: str,
        decision_scale: float = 1.0,
        attn_implementation: str = "sdpa",
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(local_dir(reference_path))
        # The policy's training dtype and attention kernel, so that before the first update
        # policy == reference exactly.
        self.model = AutoModelForCausalLM.from_pretrained(
            local_dir(reference_path), dtype=getattr(torch, dtype), attn_implementation=attn_implementation
        ).eval()
        self.pairs_per_prompt, self.max_seq_len, self.batch_size = pairs_per_prompt, max_seq_len, batch_size
        self.seed, self.decision_scale = seed, decision_scale

    def __call__(self, batch):
        import pyarrow as pa

        out = []
        for row in batch.to_pylist():
            samples = [Sample(text, label) for text, label in zip(row["samples"], row["sample_labels"])]
            rng = random.Random(f"{self.seed}:{row['id']}")
            pairs = build_pairs(row["id"], samples, int(row["label"]), row.get("oracle"), self.pairs_per_prompt, rng)
            if not pairs:
                continue
            prompt = build_prompt(self.tokenizer, row["query"], item_from_row(row), ResponseFormat.POST_COT)
            for pair in pairs:
                chosen = tokenize_example(self.tokenizer, prompt, pair.chosen, self.max_seq_len)
                rejected = tokenize_example(self.tokenizer, prompt, pair.rejected, self.max_seq_len)
                if chosen is None or rejected is None:
                    raise ValueError(
                        f"prompt of {row['id']} leaves no room for a response within "
                        f"dpo.max_seq_len={self.max_seq_len}; raise it"
                    )
                key = hashlib.sha1(json.dumps([prompt, pair.chosen, pair.rejected]).encode()).hexdigest()
                out.append(
                    {
                        "pair_key": key,
                        "prompt_id": row["id"],
                        "query_type": row["query_type"],
                        "label": int(row["label"]),
                        "kind": pair.kind,
                        "chosen": pair.chosen,
                        "rejected": pair.rejected,
                        "chosen_input_ids": chosen.input_ids,
                        "chosen_labels": chosen.labels,
                        "rejected_input_ids": rejected.input_ids,
                        "rejected_labels": rejected.labels,
                    }
                )
        sequences = [(r["chosen_input_ids"], r["chosen_labels"]) for r in out] + [
            (r["rejected_input_ids"], r["rejected_labels"]) for r in out
        ]
        logps = self.sequence_logprobs(sequences)
        for index, row in enumerate(out):
            row["reference_chosen"], row["reference_rejected"] = logps[index], logps[len(out) + index]
        schema = pa.schema(
            [
                (
                    name,
                    pa.list_(pa.int32())
                    if name.endswith(("_ids", "_labels"))
                    else pa.float64()
                    if name.startswith("reference_")
                    else pa.int64()
                    if name == "label"
                    else pa.string(),
                )
                for name in PAIR_COLUMNS
            ]
        )
        return pa.Table.from_pylist(out, schema=schema)

    def sequence_logprobs(self, sequences: list[tuple[list[int], list[int]]]) -> list[float]:
        from taosr.losses import labelled_logits, sequence_logprobs

        torch = self.torch
        out: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(sequences), self.batch_size):
                chunk = [
                    {"input_ids": ids, "labels": labels} for ids, labels in sequences[start : start + self.batch_size]
                ]
                padded = {k: torch.tensor(v) for k, v in pad_batch(chunk, pad_id=0).items()}
                logits, labels = labelled_logits(
                    self.model, padded["input_ids"], padded["attention_mask"], padded["labels"]
                )
                out.extend(sequence_logprobs(logits, labels, self.decision_scale).tolist())
        return out


def build_pair_dataset(config: TaosrConfig, reference_path: str):
    """Pairs with reference log-probs, duplicates removed. Returns (dataset, counts)."""

    samples = read_parquet(join(config.run_dir, "sample", "samples"), config.data.s3_endpoint)
    pairs = samples.map_batches(
        PairsWithReference,
        fn_constructor_args=(
            reference_path,
            config.dpo.pairs_per_prompt,
            config.dpo.max_seq_len,
            config.dpo.reference_batch_size,
            config.seed,
            "bfloat16" if config.dpo.bf16 else "float32",
            config.dpo.decision_scale,
            config.dpo.attn_implementation,
        ),
        batch_size=32,
        batch_format="pyarrow",
        concurrency=1,
        num_cpus=config.dpo.cpus_per_worker,
    )
    if config.dpo.max_examples:  # streaming stops early: no reference pass for pairs never trained on
        pairs = pairs.limit(config.dpo.max_examples)
    pairs = pairs.materialize()
    first_of_key: dict[str, str] = {}
    for row in pairs.select_columns(["pair_key", "prompt_id"]).take_all():
        first_of_key.setdefault(row["pair_key"], row["prompt_id"])
    built = pairs.count()
    unique = pairs
    if len(first_of_key) < built:  # rare: two log rows with the same query and item
        unique = pairs.filter(lambda row: first_of_key[row["pair_key"]] == row["prompt_id"]).materialize()
    kinds = [row["kind"] for row in unique.select_columns(["kind"]).take_all()]
    counts = {
        "prompts_sampled": samples.count(),
        "pairs_built": built,
        "duplicates_removed": built - unique.count(),
        **pair_counts(kinds),
    }
    return unique, counts


def _with_training_order(batch, seed: int):
    """Ray Data batch (pyarrow) -> the same rows with a sort key that is a seeded hash of each pair."""
    import pyarrow as pa

    keys = [hashlib.sha256(f"{seed}:{key}".encode()).hexdigest() for key in batch.column("pair_key").to_pylist()]
    return batch.append_column("training_order", pa.array(keys))


def dpo_step_loss(beta: float, label_smoothing: float, nll_weight: float = 0.0, decision_scale: float = 1.0):
    """The loss_fn for ``run_training``: chosen and rejected go through the policy as one batch.
    ``decision_scale`` weighs the level token as the reference log-probs were built with."""

    def loss_fn(engine, rows: list[dict]):
        import torch

        from taosr.losses import dpo_loss, labelled_logits, sequence_logprobs

        sequences = [{"input_ids": r["chosen_input_ids"], "labels": r["chosen_labels"]} for r in rows] + [
            {"input_ids": r["rejected_input_ids"], "labels": r["rejected_labels"]} for r in rows
        ]
        padded = {k: torch.tensor(v, device=engine.device) for k, v in pad_batch(sequences, pad_id=0).items()}
        logits, labels = labelled_logits(engine, padded["input_ids"], padded["attention_mask"], padded["labels"])
        policy = sequence_logprobs(logits, labels, decision_scale)
        reference = torch.tensor(
            [r["reference_chosen"] for r in rows] + [r["reference_rejected"] for r in rows],
            device=policy.device,
            dtype=policy.dtype,
        )
        half = len(rows)
        # The NLL term is a mean over the same weighted tokens the log-probs sum.
        chosen_tokens = (padded["labels"][:half, 1:] != IGNORE_INDEX).sum(dim=1) + (decision_scale - 1.0)
        loss, metrics = dpo_loss(
            policy[:half],
            policy[half:],
            reference[:half],
            reference[half:],
            beta=beta,
            label_smoothing=label_smoothing,
            nll_weight=nll_weight,
            chosen_tokens=chosen_tokens,
        )
        return loss, metrics, int(padded["attention_mask"].sum())

    return loss_fn


def train_loop(loop_config: dict) -> None:
    """Runs on every Ray Train worker."""
    cfg = loop_config["trainer"]
    run_training(
        loop_config, "dpo", dpo_step_loss(cfg["beta"], cfg["label_smoothing"], cfg["nll_weight"], cfg["decision_scale"])
    )


def train(config: TaosrConfig, reference_path: str, out_dir: str) -> dict:
    """Pairs, then DPO from the reference (the SFT model); the HF folder lands in out_dir/model."""
    from transformers import AutoTokenizer

    endpoint = config.data.s3_endpoint
    reference_path = absolute(reference_path)
    pairs, counts = build_pair_dataset(config, reference_path)
    write_dataset(pairs, join(out_dir, "pairs"), endpoint)
    write_json(join(out_dir, "pairs.json"), counts, endpoint)
    # A seeded permutation keyed on each pair's content: Ray Data does not keep the pairs' order
    # from one run to the next (two same-seed runs fed DPO the same 128 pairs in different
    # orders and ended at different models), and random_shuffle depends on that order.
    data = pairs.map_batches(_with_training_order, fn_kwargs={"seed": config.seed}, batch_format="pyarrow")
    data = (
        data.sort("training_order")
        .select_columns(
            [
                "chosen_input_ids",
                "chosen_labels",
                "rejected_input_ids",
                "rejected_labels",
                "reference_chosen",
                "reference_rejected",
            ]
        )
        .materialize()
    )
    num_pairs = data.count()
    require_examples(num_pairs, config.dpo, f"preference pairs ({counts})", "; sample more prompts")
    info = model_info(
        AutoTokenizer.from_pretrained(local_dir(reference_path)),
        ResponseFormat.POST_COT.value,
        base_model=reference_path,
        stage="dpo",
    )
    loop_config = {
        "trainer": to_dict(config)["dpo"],
        "seed": config.seed,
        "model_path": reference_path,
        "num_examples": num_pairs,
        "model_info": info,
    }
    metrics = fit(train_loop, loop_config, config.dpo, data, out_dir, endpoint, config.ray)
    summary = {"pairs": counts, "trained_pairs": num_pairs, **metrics}
    write_json(join(out_dir, "summary.json"), summary, endpoint)
    write_text(join(out_dir, "config.yaml"), to_yaml(config), endpoint)
    return {"model": join(out_dir, "model"), **summary}


def run_stage(config: TaosrConfig) -> dict:
    return train(config, join(config.run_dir, "sft", "model"), join(config.run_dir, "dpo"))


STAGE = StageSpec("dpo", ("dpo",), ("sample", "sft"), run=run_stage, policy_title="+ DPO")


def main(argv=None) -> int:
    return run_job(STAGE.run, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())

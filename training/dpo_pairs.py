"""DPO's training pairs: in one Ray Data pass with the frozen SFT model (the reference), each
sampled prompt's preference pairs (``taosr.preferences``), tokenised, with the reference
log-probabilities of chosen and rejected stored beside them, so the trainer holds only the
policy; identical (prompt, chosen, rejected) triples kept once; a seeded order keyed on each
pair's content."""

from __future__ import annotations

import hashlib
import json
import random

from taosr.config import TaosrConfig
from taosr.datasets.storage import join, local_dir, read_parquet
from taosr.formats import ResponseFormat
from taosr.preferences import Sample, build_pairs, pair_counts
from taosr.prompts import build_prompt, item_from_row
from taosr.sft_examples import pad_batch, tokenize_example

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


def with_training_order(batch, seed: int):
    """Ray Data batch (pyarrow) -> the same rows with a sort key that is a seeded hash of each pair."""
    import pyarrow as pa

    keys = [hashlib.sha256(f"{seed}:{key}".encode()).hexdigest() for key in batch.column("pair_key").to_pylist()]
    return batch.append_column("training_order", pa.array(keys))

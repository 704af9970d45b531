"""SFT's training rows: CoT rows rendered in the response format and tokenised with the prompt
masked out (``SftTokenizer``, a Ray Data batch function), a seeded share of them trained on the
decision alone, in a seeded order keyed on each row's id."""

from __future__ import annotations

import hashlib
import json

from taosr.datasets.storage import local_dir
from taosr.formats import Reasoning, ResponseFormat, decision_offset, render
from taosr.prompts import build_prompt, item_from_row
from taosr.sft_examples import tokenize_example


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

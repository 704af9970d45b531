"""The GenRM stage's data on the driver: the annotated rows of a split (from <run_dir>/cot/kept,
whose CoT reasoning fills in what a partial annotation leaves out) and its Yes/No questions
tokenized into a Ray dataset for the trainer."""

from __future__ import annotations

import json
import random

from taosr.config import TaosrConfig
from taosr.datasets.storage import join, local_dir, read_parquet
from taosr.formats import Reasoning
from taosr.genrm import AnnotatedRow, annotated_reasoning, judge_prompt
from taosr.prompts import item_from_row, render_item

ROW_COLUMNS = (
    "query",
    "item_id",
    "title",
    "category",
    "attributes",
    "price",
    "description",
    "step_annotations",
    "reasoning",
    "split",
)


def annotated_rows(config: TaosrConfig, split: str, limit: int = 0) -> tuple[list[AnnotatedRow], dict]:
    """The split's rows whose annotation gives a usable reasoning; also counts what was left out."""
    kept = read_parquet(join(config.run_dir, "cot", "kept"), config.data.s3_endpoint).select_columns(list(ROW_COLUMNS))
    rows, counts = [], {"rows": 0, "unannotated": 0, "unusable_annotation": 0}
    for row in kept.filter(expr=f"split == '{split}'").iter_rows():
        counts["rows"] += 1
        if not row.get("step_annotations"):
            counts["unannotated"] += 1
            continue
        teacher = Reasoning(**json.loads(row["reasoning"])) if row.get("reasoning") else None
        found = annotated_reasoning(row["step_annotations"], teacher)
        if found is None:
            counts["unusable_annotation"] += 1
            continue
        reasoning, judged = found
        rows.append(AnnotatedRow(row["query"], render_item(item_from_row(row)), reasoning, judged))
    random.Random(config.seed).shuffle(rows)  # rows arrive grouped by query
    if limit:
        rows = rows[:limit]
    counts["annotated"] = len(rows)
    return rows, counts


def tokenized_examples(examples, model_path: str, max_seq_len: int):
    import pyarrow as pa
    import ray
    from transformers import AutoTokenizer

    from taosr.sft_examples import tokenize_example

    tokenizer = AutoTokenizer.from_pretrained(local_dir(model_path))
    fitted = [
        tokenize_example(tokenizer, judge_prompt(tokenizer, e.query, e.item_text, e.step_lines), e.answer, max_seq_len)
        for e in examples
    ]
    tokenized = [t for t in fitted if t is not None]
    table = pa.table(
        {
            "input_ids": pa.array([t.input_ids for t in tokenized], pa.list_(pa.int32())),
            "labels": pa.array([t.labels for t in tokenized], pa.list_(pa.int32())),
        }
    )
    return ray.data.from_arrow(table), len(examples) - len(tokenized)

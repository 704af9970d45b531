"""Validation while a stage trains: a seeded sample of the val split as prompts, scored by the
model's first-token level distribution (macro-F1, QWK, decision cross-entropy; see
``taosr.first_token.validation_metrics``). SFT and the RL stages (GRPO, SRPO) check their model
with it every ``eval_every_steps``, keep the best step and stop when it stops improving
(``taosr.stopping``), so a run shows an overshooting policy while it trains, not at eval."""

from __future__ import annotations

import random

from taosr.datasets.storage import join, read_parquet
from taosr.formats import ResponseFormat
from taosr.models import level_token_ids
from taosr.prompts import PROMPT_COLUMNS, build_prompt, item_from_row


def validation_set(rows: list[dict], tokenizer, fmt: ResponseFormat, count: int, seed: int) -> dict | None:
    """A seeded sample of ``count`` rows as prompt token ids and gold levels, with the level
    tokens' ids. None for pre-CoT (its answer comes last, so the first token says nothing) or
    when there are no rows."""
    if fmt is ResponseFormat.PRE_COT or not rows or count <= 0:
        return None
    rows = sorted(rows, key=lambda r: r["id"])
    random.Random(seed).shuffle(rows)
    rows = rows[:count]
    ids = level_token_ids(tokenizer)
    return {
        "prompts": [
            tokenizer.encode(build_prompt(tokenizer, r["query"], item_from_row(r), fmt), add_special_tokens=False)
            for r in rows
        ],
        "gold": [int(r["label"]) for r in rows],
        "level_ids": [ids[level] for level in sorted(ids)],
        "pad_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    }


def run_validation_set(
    run_dir: str, s3_endpoint: str, tokenizer, fmt: ResponseFormat, count: int, seed: int
) -> dict | None:
    """``validation_set`` over the run's accepted val-split rows."""
    rows = read_parquet(join(run_dir, "data", "accepted"), s3_endpoint)
    rows = rows.filter(expr="split == 'val'").select_columns(["id", "label", *PROMPT_COLUMNS]).take_all()
    return validation_set(rows, tokenizer, fmt, count, seed)


def first_token_validator(validation: dict, batch_size: int = 16):
    """validate(module) -> metrics, over the prompts the driver tokenised (``validation_set``)."""
    from taosr.first_token import first_token_scores, validation_metrics

    def validate(module) -> dict:
        probs, logprobs = first_token_scores(
            module, validation["prompts"], validation["level_ids"], validation["pad_id"], batch_size
        )
        return validation_metrics(probs, logprobs, validation["gold"])

    return validate


def validates_here(rank: int, zero_stage: int) -> bool:
    """Whether this rank runs the validation forwards: rank 0 alone, except under ZeRO-3, where a
    forward gathers each layer from every rank's shard, so every rank runs the same forwards and
    only rank 0 keeps the figures."""
    return rank == 0 or zero_stage == 3

"""Stage 4's generative stepwise reward model (GenRM, docs/method.md section 6).

    ray job submit --working-dir . -- python -m taosr.ray_jobs.genrm --config configs/tiny.yaml

Builds Yes/No questions about correct and corrupted steps of the training split's annotated rows
(``taosr.genrm``; rows come from <run_dir>/cot/kept, whose CoT reasoning fills in what a partial
annotation leaves out), fine-tunes ``genrm.base_model`` on them with the SFT job's training
loop, and measures step accuracy on ``genrm.eval_split``'s annotated rows with the trained GenRM
(and the untrained base, for comparison) on vLLM, asking about every judged step, correct and
corrupted. Writes <run_dir>/genrm/model and summary.json. SRPO loads the model into a
``StepJudge`` actor.
"""

from __future__ import annotations

import json
import random
import sys

import numpy as np

from taosr.config import TaosrConfig, to_yaml
from taosr.datasets.storage import join, local_dir, read_parquet, write_json, write_text
from taosr.formats import Reasoning
from taosr.genrm import AnnotatedRow, annotated_reasoning, judge_examples, judge_prompt
from taosr.models import model_info
from taosr.prompts import item_from_row, render_item
from taosr.stages.job_args import run_job
from taosr.stages.registry import StageSpec
from taosr.training.loop_inputs import SupervisedInputs
from taosr.training.trainer import fit, require_examples

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


def yes_probabilities(config: TaosrConfig, model_path: str, examples) -> list[float]:
    """P("Yes") of each example's question from ``model_path`` on a vLLM judge actor."""
    import ray

    from taosr.actors.step_judge import step_judge_actor

    judge = step_judge_actor(
        model_path,
        **config.ray.engine_options(1.0, 1.0 if config.genrm.use_gpu else 0.0),
        dtype=config.model.dtype,
        max_seq_len=config.model.max_seq_len,
        kv_cache_gib=config.genrm.kv_cache_gib,
        seed=config.seed,
        kv_block_size=config.model.kv_block_size,
        **config.ray.vllm_options(config.genrm.gpu_memory_utilization),
    )
    try:
        return ray.get(judge.yes_probabilities.remote([(e.query, e.item_text, e.step_lines) for e in examples]))
    finally:
        ray.kill(judge)


def answered_right(probs, examples) -> np.ndarray:
    """Whether P("Yes") > 0.5 agrees with each example's answer."""
    return np.asarray([(p > 0.5) == (e.answer == "Yes") for p, e in zip(probs, examples)], dtype=bool)


def step_accuracy(probs, examples) -> dict:
    """Accuracy of P("Yes") > 0.5 against the examples' answers: overall, per step, and on the
    correct and the corrupted steps apart (a judge that always says Yes gets 1.0 and 0.0)."""
    right = answered_right(probs, examples).astype(float)
    steps = np.asarray([e.step for e in examples])
    clean = np.asarray([e.answer == "Yes" for e in examples])
    return {
        "n": len(examples),
        "accuracy": float(right.mean()),
        "correct_steps": float(right[clean].mean()),
        "corrupted_steps": float(right[~clean].mean()),
        "yes_rate": float(np.mean(np.asarray(probs) > 0.5)),
        "per_step": {str(step): float(right[steps == step].mean()) for step in sorted(set(steps.tolist()))},
    }


def gain_over_base(base_probs, trained_probs, examples, seed: int) -> dict:
    """The trained GenRM's step accuracy minus its base's on the same held-out questions, with a
    bootstrap interval over (query, item) pairs (a pair's questions share one response), and
    whether SRPO may use it: only a judge that beats its base beyond noise carries information
    the base does not."""
    from taosr.metrics import paired_accuracy_gain

    gain = paired_accuracy_gain(
        answered_right(base_probs, examples),
        answered_right(trained_probs, examples),
        clusters=[f"{e.query}\n{e.item_text}" for e in examples],
        seed=seed,
    )
    gain["beats_base"] = bool(gain["beyond_noise"] and gain["delta"] > 0)
    return gain


def train_loop(loop_config: dict) -> None:
    """Runs on every Ray Train worker: SFT's loop and its plain token-mean loss."""
    from taosr.training.sft_objective import sft_loss
    from taosr.training.trainer import run_training

    run_training(loop_config["inputs"], "genrm", sft_loss)


def train(config: TaosrConfig, base_model: str, out_dir: str) -> dict:
    from transformers import AutoTokenizer

    cfg = config.genrm
    rng = random.Random(config.seed)
    rows, train_counts = annotated_rows(config, "train")
    examples = judge_examples(rows, rng)
    if cfg.max_examples:
        examples = examples[: cfg.max_examples]
    data, too_long = tokenized_examples(examples, base_model, cfg.max_seq_len)
    num_examples = len(examples) - too_long
    require_examples(
        num_examples,
        cfg,
        "GenRM examples",
        hint="the GenRM learns from rows with step_annotations; logs without any can run SRPO with "
        "srpo.genrm=none (outcome and verifier rewards only) and --skip genrm",
    )
    info = model_info(
        AutoTokenizer.from_pretrained(local_dir(base_model)), "genrm", base_model=base_model, stage="genrm"
    )
    inputs = SupervisedInputs(
        trainer=cfg, seed=config.seed, model_path=base_model, num_examples=num_examples, model_info=info
    )
    metrics = fit(train_loop, inputs, cfg, data, out_dir, config.data.s3_endpoint, config.ray)
    model = join(out_dir, "model")

    held_out_rows, held_out_counts = annotated_rows(config, cfg.eval_split, cfg.eval_rows)
    held_out = judge_examples(held_out_rows, random.Random(config.seed + 1), every_step=True)
    summary = {
        "examples": num_examples,
        "too_long": too_long,
        "yes_share": float(np.mean([e.answer == "Yes" for e in examples])),
        "train_rows": train_counts,
        "held_out_rows": held_out_counts,
        **metrics,
    }
    if held_out:
        trained_probs = yes_probabilities(config, model, held_out)
        base_probs = yes_probabilities(config, base_model, held_out)
        summary["step_accuracy"] = step_accuracy(trained_probs, held_out)
        summary["base_step_accuracy"] = step_accuracy(base_probs, held_out)
        summary["gain_over_base"] = gain_over_base(base_probs, trained_probs, held_out, config.seed)
    write_json(join(out_dir, "summary.json"), summary, config.data.s3_endpoint)
    write_text(join(out_dir, "config.yaml"), to_yaml(config), config.data.s3_endpoint)
    return {"model": model, **summary}


def base_model_for(config: TaosrConfig) -> str:
    from taosr.datasets.embedded_models import resolve_model

    return resolve_model(config.genrm.base_model or config.model.name, config.model.cache_dir)


def run_stage(config: TaosrConfig) -> dict:
    return train(config, base_model_for(config), join(config.run_dir, "genrm"))


STAGE = StageSpec("genrm", ("genrm",), ("cot",), run=run_stage)


def main(argv=None) -> int:
    return run_job(STAGE.run, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())

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

import random
import sys

import numpy as np

from taosr.actors.step_judge import yes_probabilities
from taosr.config import TaosrConfig, to_yaml
from taosr.datasets.storage import join, local_dir, write_json, write_text
from taosr.genrm import gain_over_base, judge_examples, step_accuracy
from taosr.models import model_info
from taosr.stages.job_args import run_job
from taosr.stages.registry import StageSpec
from taosr.training.genrm_data import annotated_rows, tokenized_examples
from taosr.training.loop_inputs import SupervisedInputs
from taosr.training.trainer import fit, require_examples


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

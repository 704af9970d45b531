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

import sys

from taosr.config import SftConfig, TaosrConfig, to_yaml
from taosr.datasets.storage import join, local_dir, read_parquet, write_json, write_text
from taosr.formats import ResponseFormat
from taosr.models import model_info
from taosr.stages.job_args import run_job
from taosr.stages.registry import StageSpec
from taosr.training.loop_inputs import SupervisedInputs
from taosr.training.sft_data import tokenized_dataset
from taosr.training.sft_objective import class_weights, sft_step_loss
from taosr.training.trainer import fit, require_examples, run_training
from taosr.training.validation import first_token_validator, run_validation_set


def train_loop(loop_config: dict) -> None:
    """Runs on every Ray Train worker."""
    inputs: SupervisedInputs = loop_config["inputs"]
    assert isinstance(inputs.trainer, SftConfig)
    run_training(
        inputs,
        "sft",
        sft_step_loss(inputs.trainer.decision_weight, inputs.level_weights),
        first_token_validator(inputs.validation) if inputs.validation else None,
    )


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
    inputs = SupervisedInputs(
        trainer=config.sft,
        seed=config.seed,
        model_path=base_model_path,
        num_examples=num_examples,
        model_info=info,
        level_weights=(
            {str(k): v for k, v in class_weights(levels, config.sft.class_balance).items()}
            if config.sft.class_balance
            else None
        ),
        validation=(
            run_validation_set(
                config.run_dir,
                config.data.s3_endpoint,
                tokenizer,
                ResponseFormat(config.sft.format),
                config.sft.eval_examples,
                config.seed,
            )
            if config.sft.eval_every_steps
            else None
        ),
    )
    metrics = fit(train_loop, inputs, config.sft, data, out_dir, config.data.s3_endpoint, config.ray)
    summary = {
        "examples": num_examples,
        "label_counts": label_counts,
        "format": config.sft.format,
        "validation_rows": len((inputs.validation or {}).get("gold", [])),
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

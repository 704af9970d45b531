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

import sys

from taosr.config import DpoConfig, TaosrConfig, to_yaml
from taosr.datasets.storage import absolute, join, local_dir, write_dataset, write_json, write_text
from taosr.formats import ResponseFormat
from taosr.models import model_info
from taosr.stages.job_args import run_job
from taosr.stages.registry import StageSpec
from taosr.training.dpo_objective import dpo_step_loss
from taosr.training.dpo_pairs import build_pair_dataset, with_training_order
from taosr.training.loop_inputs import SupervisedInputs
from taosr.training.trainer import fit, require_examples, run_training


def train_loop(loop_config: dict) -> None:
    """Runs on every Ray Train worker."""
    inputs: SupervisedInputs = loop_config["inputs"]
    cfg = inputs.trainer
    assert isinstance(cfg, DpoConfig)
    run_training(inputs, "dpo", dpo_step_loss(cfg.beta, cfg.label_smoothing, cfg.nll_weight, cfg.decision_scale))


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
    data = pairs.map_batches(with_training_order, fn_kwargs={"seed": config.seed}, batch_format="pyarrow")
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
    inputs = SupervisedInputs(
        trainer=config.dpo, seed=config.seed, model_path=reference_path, num_examples=num_pairs, model_info=info
    )
    metrics = fit(train_loop, inputs, config.dpo, data, out_dir, endpoint, config.ray)
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

"""Stage 4 (TaoSR-SHE): SRPO, the GRPO loop with step-level advantages, run as a multi-stage
curriculum (docs/method.md section 6).

    ray job submit --working-dir . -- python -m taosr.ray_jobs.srpo --config configs/tiny.yaml

One loop, two estimators: this job runs ``taosr.training.rl`` exactly as GRPO does, with
``srpo.advantage`` naming the step-level estimator of ``taosr.advantages``. Step rewards come
from the offline verifier (annotations of steps 3-5, kept for ``srpo.verifier_coverage`` of the
prompts); where it has none, a generative stepwise reward model scores the step when one is
attached, and otherwise the step gets the outcome advantage alone (logged as
``step_reward_from_none``). The curriculum's stages run in order in this one job, each from the
previous stage's model, each with its own offline pass-rate window and step budget; the last
stage's model is <run_dir>/srpo/model. The first starts from the last policy trained before SRPO
(GRPO's when there is one; ``srpo.start_from=dpo`` runs SRPO as an arm beside GRPO instead).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys

from taosr.config import SrpoConfig, TaosrConfig, to_yaml
from taosr.datasets.storage import absolute, join, write_json, write_text
from taosr.training import rl_stage
from taosr.stages.job_args import run_job
from taosr.stages.policies import latest_policy
from taosr.stages.registry import StageSpec, policy_stages_before


def stage_config(srpo: SrpoConfig, stage: dict) -> SrpoConfig:
    for key in ("name", "steps"):
        if key not in stage:
            raise ValueError(f"curriculum stage {stage} needs {key!r}")
    rl = copy.deepcopy(srpo)
    rl.steps = int(stage["steps"])
    rl.prefilter_min = float(stage.get("prefilter_min", 0.0))
    rl.prefilter_max = float(stage.get("prefilter_max", 1.0))
    return rl


def train(config: TaosrConfig, start_model: str, out_dir: str) -> dict:
    if not config.srpo.curriculum:
        raise ValueError("srpo.curriculum is empty: give at least one {name, steps} stage")
    import ray

    model, stages = start_model, {}
    genrm = rl_stage.genrm_choice(config, config.srpo)
    print(json.dumps({"srpo": {"genrm": genrm}}), flush=True)  # a GenRM left out says why here and in the summary
    judge = rl_stage.start_judge(config, config.srpo, genrm["model"] or "")  # one GenRM actor for every stage
    # Tokenised once: the stages share the tokenizer and differ only in their pre-filter window.
    tokenized = rl_stage.tokenized_training_prompts(config, absolute(start_model))
    try:
        for stage in config.srpo.curriculum:
            rl = stage_config(config.srpo, stage)
            # An interrupted run resumes each stage from its own Ray Train checkpoints (a finished
            # stage's final checkpoint is re-reported without training); the pipeline's manifest
            # decides whether the folder is reused at all.
            result = rl_stage.train(
                config,
                model,
                join(out_dir, f"stage-{stage['name']}"),
                rl=rl,
                stage="srpo",
                judge=judge,
                tokenized=tokenized,
            )
            stages[stage["name"]] = {k: v for k, v in result.items() if k != "model"}
            model = result["model"]
    finally:
        if judge is not None:
            ray.kill(judge)
    final = join(out_dir, "model")
    if "://" not in final:  # the last stage's model is the stage's output
        if os.path.exists(final):
            shutil.rmtree(final)
        shutil.copytree(model, final)
    else:
        final = model
    write_json(join(out_dir, "summary.json"), {"curriculum": stages, "genrm": genrm}, config.data.s3_endpoint)
    write_text(join(out_dir, "config.yaml"), to_yaml(config), config.data.s3_endpoint)
    return {"model": final, "curriculum": stages, "genrm": genrm}


def start_model_for(config: TaosrConfig) -> str:
    """The policy SRPO starts from (``srpo.start_from``): the last trained one before it (GRPO's
    when the run has one), or DPO's (else SFT's) for an arm beside GRPO."""
    stages = policy_stages_before("srpo")
    if config.srpo.start_from != "latest":
        stages = tuple(stage for stage in stages if stage != "grpo")
    return latest_policy(config.run_dir, config.data.s3_endpoint, stages)[1]


def run_stage(config: TaosrConfig) -> dict:
    return train(config, start_model_for(config), join(config.run_dir, "srpo"))


STAGE = StageSpec(
    "srpo",
    ("srpo",),
    ("data", "sample", "sft", "dpo", "grpo", "genrm"),
    run=run_stage,
    policy_title="+ SRPO (TaoSR-SHE)",
)


def main(argv=None) -> int:
    return run_job(STAGE.run, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())

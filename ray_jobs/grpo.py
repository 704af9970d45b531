"""Stage 3: GRPO with difficulty-based dynamic sampling (docs/method.md section 5).

    ray job submit --working-dir . -- python -m taosr.ray_jobs.grpo --config configs/tiny.yaml

Starts from the DPO model (or the SFT model when there is none), with rollout actors holding
vLLM engines and a Ray Train learner running ``taosr.training.rl.rl_train_loop``. Training
prompts are the training split of <run_dir>/data/accepted, pre-filtered by the offline pass@N
rates of stage 2 where they exist (prompts stage 2 did not sample are kept). Writes
<run_dir>/grpo/model, metrics.jsonl and TensorBoard, summary.json. SRPO (stage 4) runs the same
entrypoint code with another advantage estimator.
"""

from __future__ import annotations

import sys

from taosr.config import TaosrConfig
from taosr.datasets.storage import join
from taosr.stages.job_args import run_job
from taosr.stages.policies import latest_policy
from taosr.stages.registry import StageSpec, policy_stages_before
from taosr.training.rl_stage import train


def start_model_for(config: TaosrConfig) -> str:
    """The latest trained policy before this stage: DPO if it exists, else SFT."""
    return latest_policy(config.run_dir, config.data.s3_endpoint, policy_stages_before("grpo"))[1]


def run_stage(config: TaosrConfig) -> dict:
    return train(config, start_model_for(config), join(config.run_dir, "grpo"))


STAGE = StageSpec("grpo", ("grpo",), ("data", "sample", "sft", "dpo"), run=run_stage, policy_title="+ GRPO")


def main(argv=None) -> int:
    return run_job(STAGE.run, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())

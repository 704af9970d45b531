"""Where a run's trained policies live: one folder per training stage, in pipeline order."""

from __future__ import annotations

from taosr.datasets.storage import exists, join

POLICY_STAGES = {"sft": "SFT", "dpo": "DPO", "grpo": "GRPO", "srpo": "SRPO"}  # stage -> its row in the tables


def policy_path(run_dir: str, stage: str) -> str:
    return join(run_dir, stage, "model")


def latest_policy(run_dir: str, s3_endpoint: str = "", stages=tuple(POLICY_STAGES)) -> tuple[str, str]:
    """(stage, model folder) of the last of ``stages`` (pipeline order) that has a trained model."""
    for stage in reversed(tuple(stages)):
        path = policy_path(run_dir, stage)
        if exists(join(path, "config.json"), s3_endpoint):
            return stage, path
    raise FileNotFoundError(f"no trained model of {', '.join(stages)} under {run_dir}; run those stages first")

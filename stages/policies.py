"""Where a run's trained policies live: one folder per policy-training stage of the registry."""

from __future__ import annotations

from taosr.datasets.storage import exists, join
from taosr.stages import registry


def policy_path(run_dir: str, stage: str) -> str:
    return join(run_dir, stage, "model")


def latest_policy(run_dir: str, s3_endpoint: str = "", stages=None) -> tuple[str, str]:
    """(stage, model folder) of the last of ``stages`` (pipeline order; default: every
    policy-training stage) that has a trained model."""
    stages = tuple(registry.policy_stages()) if stages is None else tuple(stages)
    for stage in reversed(stages):
        path = policy_path(run_dir, stage)
        if exists(join(path, "config.json"), s3_endpoint):
            return stage, path
    raise FileNotFoundError(f"no trained model of {', '.join(stages)} under {run_dir}; run those stages first")

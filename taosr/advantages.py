"""Advantage estimators, chosen by name from a registry (``grpo.advantage``).

Every estimator maps a batch of rollout groups to per-token advantages [N, T] (N = groups x G
rollouts, T = response tokens), so an estimator that scores steps (SRPO) plugs into the same
loop as one that scores whole responses (GRPO).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

ADVANTAGE_ESTIMATORS: dict[str, Callable] = {}


def register(name: str):
    def add(fn: Callable) -> Callable:
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} registered twice")
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn

    return add


def get_estimator(name: str) -> Callable:
    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; known: {sorted(ADVANTAGE_ESTIMATORS)}")
    return ADVANTAGE_ESTIMATORS[name]


@dataclass
class AdvantageInputs:
    rewards: torch.Tensor  # [B, G] outcome rewards
    response_mask: torch.Tensor  # [B * G, T], 1 on response tokens
    eps: float = 1e-6
    extras: dict | None = None  # estimator-specific inputs (step rewards and spans for SRPO)


def group_zscore(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """A_i = (r_i - mean(r)) / (std(r) + eps) within each group (row); population std."""
    mean = rewards.mean(dim=-1, keepdim=True)
    std = rewards.std(dim=-1, keepdim=True, unbiased=False)
    return (rewards - mean) / (std + eps)


@register("grpo")
def grpo_advantages(inputs: AdvantageInputs) -> tuple[torch.Tensor, dict]:
    """The group z-score of each rollout's outcome reward, on every one of its tokens."""
    per_rollout = group_zscore(inputs.rewards.float(), inputs.eps).reshape(-1, 1)
    advantages = per_rollout * inputs.response_mask.float()
    return advantages, {"outcome_advantage_abs_mean": float(per_rollout.abs().mean())}

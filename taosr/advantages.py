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
ESTIMATOR_NEEDS: dict[str, tuple[str, ...]] = {}


def register(name: str, needs: tuple[str, ...] = ()):
    """Add an estimator under ``name``. ``needs``: the inputs beyond outcome rewards it reads from
    ``AdvantageInputs.extras`` (the RL loop's ``INPUT_PROVIDERS`` gathers each by this name)."""

    def add(fn: Callable) -> Callable:
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} registered twice")
        ADVANTAGE_ESTIMATORS[name] = fn
        ESTIMATOR_NEEDS[name] = tuple(needs)
        return fn

    return add


def get_estimator(name: str) -> Callable:
    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; known: {sorted(ADVANTAGE_ESTIMATORS)}")
    return ADVANTAGE_ESTIMATORS[name]


def estimator_needs(name: str) -> tuple[str, ...]:
    get_estimator(name)  # the same error for an unknown name
    return ESTIMATOR_NEEDS[name]


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


@register("srpo", needs=("step_rewards",))
def srpo_advantages(inputs: AdvantageInputs) -> tuple[torch.Tensor, dict]:
    """Step-level advantages (docs/method.md section 6) on top of GRPO's.

    For the tokens of step k of rollout i: A_ik = A_i + lam * w_ik * (s_ik - mean_j s_jk), with
    s the hybrid step reward, the mean over the group's rollouts that have a reward for step k,
    and w_ik = ``critical_weight`` when s_ik disagrees with the group's majority for step k
    (a wrong step in a group that mostly got it right, or the reverse), else 1. Tokens outside
    the steps (the label line), and rollouts without step spans, get A_i alone.

    extras: ``step_rewards`` [B, G, K] (NaN = no reward), ``step_spans`` (per rollout, K token
    spans or None), ``lam``, ``critical_weight``.
    """
    extras = inputs.extras or {}
    advantages, metrics = grpo_advantages(inputs)
    lam = float(extras.get("lam", 0.0))
    step_rewards = extras["step_rewards"].float()
    spans = extras["step_spans"]
    groups, size, steps = step_rewards.shape
    known = ~torch.isnan(step_rewards)
    segmented = torch.tensor([s is not None for s in spans]).reshape(groups, size)
    known &= segmented.unsqueeze(-1)
    values = torch.where(known, step_rewards, torch.zeros_like(step_rewards))
    count = known.sum(dim=1, keepdim=True).clamp(min=1)
    mean = values.sum(dim=1, keepdim=True) / count
    majority = (mean >= 0.5).float()
    critical = known & ((values >= 0.5).float() != majority)
    weight = torch.where(
        critical, torch.full_like(values, float(extras.get("critical_weight", 1.0))), torch.ones_like(values)
    )
    term = torch.where(known, lam * weight * (values - mean), torch.zeros_like(values)).reshape(groups * size, steps)
    for rollout, rollout_spans in enumerate(spans):
        if rollout_spans is None:
            continue
        for step, (start, end) in enumerate(rollout_spans):
            advantages[rollout, start:end] += term[rollout, step]
    metrics.update(
        step_term_abs_mean=float(term[known.reshape(groups * size, steps)].abs().mean()) if known.any() else 0.0,
        critical_step_fraction=float(critical.sum() / known.sum().clamp(min=1)),
        scored_step_fraction=float(known.float().mean()),
        unsegmented_rollouts=int((~segmented).sum()),
    )
    return advantages, metrics

"""Difficulty-based dynamic sampling (METHOD.md section 5).

A group of G rollouts of one prompt teaches nothing when every rollout earns the same reward:
its advantages are all zero. Such groups are dropped, and so are groups whose pass rate lies
outside the configured window (``0 < correct < gamma * G``); the batch is refilled from further
prompts until it holds the target number of groups. The filter is on the reward *variance*,
not its mean: with partial credit, a group can be all wrong and still vary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

KEPT, ZERO_VARIANCE, OUT_OF_WINDOW = "kept", "zero_variance", "out_of_window"


def group_verdict(rewards: Sequence[float], correct: Sequence[bool], min_pass_rate: float,
                  max_pass_rate: float) -> str:
    if float(np.var(np.asarray(rewards, dtype=float))) == 0.0:
        return ZERO_VARIANCE
    rate = sum(bool(c) for c in correct) / len(correct)
    if not min_pass_rate <= rate <= max_pass_rate:
        return OUT_OF_WINDOW
    return KEPT


@dataclass
class DynamicBatch:
    """Collects kept groups until ``target`` of them are in; counts every verdict."""

    target: int
    min_pass_rate: float = 0.01
    max_pass_rate: float = 0.9
    groups: list[Any] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {KEPT: 0, ZERO_VARIANCE: 0, OUT_OF_WINDOW: 0})
    rounds: int = 0

    @property
    def full(self) -> bool:
        return len(self.groups) >= self.target

    @property
    def missing(self) -> int:
        return max(0, self.target - len(self.groups))

    def add_round(self, groups: Sequence[Any], rewards: Sequence[Sequence[float]],
                  correct: Sequence[Sequence[bool]]) -> None:
        """One round of rollouts; kept groups beyond the target are surplus and not used."""
        self.rounds += 1
        for group, group_rewards, group_correct in zip(groups, rewards, correct):
            verdict = group_verdict(group_rewards, group_correct, self.min_pass_rate, self.max_pass_rate)
            self.counts[verdict] += 1
            if verdict == KEPT and not self.full:
                self.groups.append(group)

    def stats(self) -> dict:
        seen = sum(self.counts.values())
        dropped = self.counts[ZERO_VARIANCE] + self.counts[OUT_OF_WINDOW]
        return {"groups_seen": seen, "groups_kept": len(self.groups), "rounds": self.rounds,
                "dropped_fraction": dropped / seen if seen else 0.0,
                "dropped_zero_variance": self.counts[ZERO_VARIANCE], "dropped_out_of_window": self.counts[OUT_OF_WINDOW]}

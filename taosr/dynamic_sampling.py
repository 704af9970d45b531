"""Difficulty-based dynamic sampling (docs/method.md section 5).

A group of G rollouts of one prompt teaches nothing when every rollout earns the same reward:
its advantages are all zero. Such groups are dropped, and so are groups whose pass rate lies
outside the configured window (``0 < correct < gamma * G``); the batch is refilled from further
prompts until it holds the target number of groups. The filter is on the reward *variance*,
not its mean: with partial credit, a group can be all wrong and still vary.

Diversified filtering (TaoSR-SHE, docs/method.md section 6), on when ``diverse`` is set: among the
groups that pass, those whose rollouts take more distinct step-verdict paths (the verdicts of
steps 3-5) are taken first, groups with fewer than ``min_paths`` are dropped, and no query type
may fill more than ``type_cap`` of the batch. Policies that collapse onto one way of reasoning
then stop feeding the update with more of the same.

Label cap (``label_cap`` below 1): no relevance level may fill more than that share of the kept
groups. The sampler draws levels evenly, but the filter does not drop them evenly (the levels the
policy already gets right lose more groups to zero variance), so without a cap the trained batch's
label mix drifts from the balanced one TaoSR1 trains on (CV 0.3-0.6 in our logs, not 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from typing import Any, Sequence

import numpy as np

from taosr.formats import ResponseFormat, parse

KEPT, ZERO_VARIANCE, OUT_OF_WINDOW = "kept", "zero_variance", "out_of_window"
FEW_PATHS, TYPE_CAPPED, LABEL_CAPPED = "few_paths", "type_capped", "label_capped"
DROPPED = (ZERO_VARIANCE, OUT_OF_WINDOW, FEW_PATHS, TYPE_CAPPED, LABEL_CAPPED)


def lost_format_error(stage: str, step: int, stalled_steps: int, format_error_rate: float, rl) -> str | None:
    """Why the RL loop should stop, or None: with the format gate on, a policy whose rollouts all
    break the format earns 0 on every rollout, dynamic sampling drops every group, and no later
    step can change that. Stopping names the cause instead of spending the budget on no update.
    ``rl``: the stage's GrpoConfig (or SrpoConfig)."""
    if not rl.format_gate or stalled_steps < rl.stall_alarm_steps or format_error_rate < rl.lost_format_abort:
        return None
    return (
        f"{stage}: {stalled_steps} steps in a row kept no group, and {format_error_rate:.0%} of step {step}'s "
        "rollouts broke the post-CoT format (each earns 0, so no group's reward can vary). The start model "
        "has lost the output format: check the stage that made it (its eval's format-error rate; DPO at too "
        f"high a learning rate does this). {stage}.lost_format_abort=1.1 goes on regardless."
    )


def verdict_path(text: str) -> tuple:
    """The step-verdict path of a post-CoT response: its verdicts of steps 3-5, or the format
    error's kind when the steps do not parse (every broken response takes the same path)."""
    reasoning = parse(ResponseFormat.POST_COT, text).reasoning
    if reasoning is None:
        return ("unparsed",)
    return reasoning.category_verdict, reasoning.attribute_verdict, reasoning.decision


def distinct_paths(texts: Sequence[str]) -> int:
    return len({verdict_path(text) for text in texts})


def group_verdict(rewards: Sequence[float], correct: Sequence[bool], min_pass_rate: float, max_pass_rate: float) -> str:
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
    diverse: bool = False
    min_paths: int = 1
    type_cap: float = 1.0
    label_cap: float = 1.0
    groups: list[Any] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {verdict: 0 for verdict in (KEPT, *DROPPED)})
    rounds: int = 0
    kept_paths: list[int] = field(default_factory=list)
    kept_types: list[str] = field(default_factory=list)
    kept_labels: list[Any] = field(default_factory=list)

    @property
    def full(self) -> bool:
        return len(self.groups) >= self.target

    @property
    def missing(self) -> int:
        return max(0, self.target - len(self.groups))

    @property
    def type_limit(self) -> int:
        return max(1, math.floor(self.type_cap * self.target))

    @property
    def label_limit(self) -> int:
        return max(1, math.ceil(self.label_cap * self.target - 1e-9))

    def add_round(
        self,
        groups: Sequence[Any],
        rewards: Sequence[Sequence[float]],
        correct: Sequence[Sequence[bool]],
        paths: Sequence[int] | None = None,
        query_types: Sequence[str] | None = None,
        labels: Sequence[Any] | None = None,
    ) -> None:
        """One round of rollouts; kept groups beyond the target are surplus and not used.
        ``paths`` (distinct step-verdict paths per group) and ``query_types`` are needed when
        ``diverse`` is set, ``labels`` (each group's gold level) when ``label_cap`` is below 1."""
        self.rounds += 1
        paths = list(paths) if paths is not None else [1] * len(groups)
        query_types = list(query_types) if query_types is not None else [""] * len(groups)
        if self.label_cap < 1.0 and (labels is None or len(labels) != len(groups)):
            raise ValueError("a label cap needs the gold level of every group")
        labels = list(labels) if labels is not None else [None] * len(groups)
        if self.diverse and (len(paths) != len(groups) or len(query_types) != len(groups)):
            raise ValueError("diversified filtering needs the paths and the query type of every group")
        passing = []
        for index, (group_rewards, group_correct) in enumerate(zip(rewards, correct)):
            verdict = group_verdict(group_rewards, group_correct, self.min_pass_rate, self.max_pass_rate)
            if verdict == KEPT and self.diverse and paths[index] < self.min_paths:
                verdict = FEW_PATHS
            if verdict == KEPT:
                passing.append(index)
            else:
                self.counts[verdict] += 1
        if self.diverse:  # most distinct reasoning paths first (stable: ties keep rollout order)
            passing.sort(key=lambda i: -paths[i])
        for index in passing:
            if self.diverse and not self.full and self.kept_types.count(query_types[index]) >= self.type_limit:
                self.counts[TYPE_CAPPED] += 1
                continue
            if self.label_cap < 1.0 and not self.full and self.kept_labels.count(labels[index]) >= self.label_limit:
                self.counts[LABEL_CAPPED] += 1
                continue
            self.counts[KEPT] += 1
            if not self.full:
                self.groups.append(groups[index])
                self.kept_paths.append(paths[index])
                self.kept_types.append(query_types[index])
                self.kept_labels.append(labels[index])

    def stats(self) -> dict:
        seen = sum(self.counts.values())
        dropped = sum(self.counts[verdict] for verdict in DROPPED)
        stats = {
            "groups_seen": seen,
            "groups_kept": len(self.groups),
            "rounds": self.rounds,
            "dropped_fraction": dropped / seen if seen else 0.0,
            "dropped_zero_variance": self.counts[ZERO_VARIANCE],
            "dropped_out_of_window": self.counts[OUT_OF_WINDOW],
        }
        if self.label_cap < 1.0:
            stats["dropped_label_capped"] = self.counts[LABEL_CAPPED]
        if self.diverse:
            stats.update(
                dropped_few_paths=self.counts[FEW_PATHS],
                dropped_type_capped=self.counts[TYPE_CAPPED],
                distinct_paths_mean=float(np.mean(self.kept_paths)) if self.kept_paths else 0.0,
                top_query_type_share=max(self.kept_types.count(t) for t in set(self.kept_types)) / len(self.kept_types)
                if self.kept_types
                else 0.0,
            )
        return stats

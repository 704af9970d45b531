"""When a training stage stops: its step budget, a wall-clock cap, or validation that has stopped
improving (patience). Pure logic; the trainer asks it after every optimizer step and after
every validation check, and records the reason it gives with the run's metrics, so a user sees
why a stage ended as well as where.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Stopping:
    """``patience``: validation checks in a row without a gain of more than ``min_delta`` over the
    best score so far before the stage stops (0 = never on validation). ``max_seconds``: the stage
    stops at the first step past this much training time (0 = no cap)."""

    patience: int = 0
    min_delta: float = 0.0
    max_seconds: float = 0.0
    best_step: int | None = None
    best_score: float | None = None
    checks_without_gain: int = 0
    curve: list[tuple[int, float]] = field(default_factory=list)
    reason: str = ""

    def validated(self, step: int, score: float | None) -> bool:
        """Record a validation score; True when patience has run out."""
        if score is None:
            return False
        self.curve.append((step, score))
        if self.best_score is None or score > self.best_score + self.min_delta:
            self.best_step, self.best_score, self.checks_without_gain = step, score, 0
            return False
        self.checks_without_gain += 1
        if self.patience and self.checks_without_gain >= self.patience:
            self.reason = (
                f"patience: {self.checks_without_gain} validation checks without a gain over "
                f"step {self.best_step}'s {self.best_score:.4f} (min_delta {self.min_delta})"
            )
            return True
        return False

    def out_of_time(self, elapsed_s: float) -> bool:
        if self.max_seconds and elapsed_s >= self.max_seconds:
            self.reason = f"time cap: {elapsed_s / 60:.1f} of {self.max_seconds / 60:.1f} minutes"
            return True
        return False

    def finished(self, step: int, total_steps: int) -> str:
        """The reason the stage ended at ``step``: the one recorded, else its step budget."""
        return self.reason or (
            f"step budget: {step} of {total_steps} steps"
            if step >= total_steps
            else f"data: the shards ran out at step {step} of {total_steps}"
        )

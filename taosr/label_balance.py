"""Label-balanced prompt order for RL (docs/method.md section 5).

TaoSR1 found the coefficient of variation (CV) of the training label mix strongly
anti-correlated with the final score, and a balanced mix (CV = 0) best. ``BalancedSampler``
draws prompts so that the label mix of every prefix of the stream tracks a target mix whose CV
is ``target_cv``: 0 gives equal shares, the data's own CV gives its natural mix, and anything
between interpolates (the CV is linear along that line). Minority labels are revisited in fresh
shuffles when exhausted rather than starving the batch.

The sampler is deterministic given (labels, target CV, seed), and its whole state is how many
prompts of each label it has handed out: a checkpoint stores that, and a resumed run continues
with exactly the prompts an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np


def label_cv(labels: Sequence[int], levels: Sequence[int] = (1, 2, 3, 4)) -> float:
    """Coefficient of variation (population std / mean) of the shares of ``levels`` in labels."""
    if not labels:
        return 0.0
    counts = Counter(labels)
    shares = np.asarray([counts[level] for level in levels], dtype=float) / len(labels)
    return float(shares.std() / shares.mean())


def target_mix(labels: Sequence[int], target_cv: float, levels: Sequence[int] = (1, 2, 3, 4)) -> dict[int, float]:
    """Shares per present level: uniform moved towards the natural mix until its CV is target_cv."""
    counts = Counter(labels)
    present = [level for level in levels if counts[level]]
    if not present:
        raise ValueError("no labelled prompts to sample from")
    natural = np.asarray([counts[level] for level in present], dtype=float) / len(labels)
    uniform = np.full(len(present), 1.0 / len(present))
    natural_cv = float(natural.std() / natural.mean())
    weight = 0.0 if natural_cv == 0 else min(1.0, max(0.0, target_cv / natural_cv))
    mix = uniform + weight * (natural - uniform)
    return dict(zip(present, mix.tolist()))


class BalancedSampler:
    def __init__(self, labels: Sequence[int], target_cv: float = 0.0, seed: int = 0):
        self.labels = list(labels)
        self.seed = seed
        self.mix = target_mix(self.labels, target_cv)
        self.members = {level: [i for i, label in enumerate(self.labels) if label == level] for level in self.mix}
        self.drawn = {level: 0 for level in self.mix}

    def state_dict(self) -> dict:
        return {"drawn": {str(level): count for level, count in self.drawn.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.drawn = {level: int(state["drawn"][str(level)]) for level in self.mix}

    def _index(self, level: int, draw: int) -> int:
        members = self.members[level]
        epoch, offset = divmod(draw, len(members))
        order = np.random.default_rng([self.seed, level, epoch]).permutation(len(members))
        return members[int(order[offset])]

    def take(self, count: int) -> list[int]:
        """The next ``count`` prompt indices. Each draw goes to the level furthest behind its
        target share (largest deficit; ties to the higher level), so shares stay exact."""
        out = []
        for _ in range(count):
            total = sum(self.drawn.values()) + 1
            level = max(self.mix, key=lambda lv: (self.mix[lv] * total - self.drawn[lv], lv))
            out.append(self._index(level, self.drawn[level]))
            self.drawn[level] += 1
        return out


def prefilter_by_pass_rate(pass_rates: dict[str, float], low: float, high: float) -> set[str]:
    """Prompt ids whose offline pass@N rate lies in [low, high]: the rest are too easy or too
    hard for a group to carry any signal, and skipping them saves rollouts."""
    return {prompt for prompt, rate in pass_rates.items() if low <= rate <= high}

"""Preference pairs from pass@N samples (docs/method.md section 4).

A sample is correct when its first-token label equals the gold label. Per prompt:
- some sample correct (pass@N > 0): self-correction pairs, a correct own sample over a wrong one;
- none correct (pass@N = 0): oracle-guidance pairs, the teacher's response for the gold label
  over a wrong own sample;
- none wrong: no pair (nothing to correct).
Identical texts are merged first, so no pair repeats and no pair prefers a text over itself.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

SELF_CORRECTION = "self_correction"
ORACLE = "oracle"


@dataclass(frozen=True)
class Sample:
    text: str
    label: int | None  # the parsed first-token label; None when unparseable (counts as wrong)


@dataclass(frozen=True)
class PreferencePair:
    prompt_id: str
    chosen: str
    rejected: str
    kind: str


def pass_rate(samples: Sequence[Sample], gold: int) -> float:
    if not samples:
        raise ValueError("pass rate of no samples")
    return sum(1 for s in samples if s.label == gold) / len(samples)


def build_pairs(
    prompt_id: str,
    samples: Sequence[Sample],
    gold: int,
    oracle_response: str | None,
    max_pairs: int = 1,
    rng: random.Random | None = None,
) -> list[PreferencePair]:
    """Up to ``max_pairs`` distinct pairs for one prompt (see module doc)."""
    rng = rng or random.Random(0)
    correct = list(dict.fromkeys(s.text for s in samples if s.label == gold))
    wrong = [text for text in dict.fromkeys(s.text for s in samples if s.label != gold) if text not in correct]
    if not wrong:
        return []
    if correct:
        kind, chosen_pool = SELF_CORRECTION, correct
    elif oracle_response:
        kind, chosen_pool = ORACLE, [oracle_response]
    else:
        return []
    candidates = [(c, w) for c in chosen_pool for w in wrong if c != w]
    rng.shuffle(candidates)
    return [PreferencePair(prompt_id, c, w, kind) for c, w in candidates[:max_pairs]]


def pair_counts(kinds: Iterable[str]) -> dict[str, int]:
    """How many pairs of each kind, from their ``kind`` values."""
    counts = Counter(kinds)
    return {SELF_CORRECTION: counts[SELF_CORRECTION], ORACLE: counts[ORACLE]}

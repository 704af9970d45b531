"""Outcome rewards for the RL stages (docs/method.md section 5). Pure functions of a response's text.

A response earns 1 when its first-token label equals the gold label, else 0. A response that
breaks the post-CoT format earns 0 whatever its label, and is counted as a format error.
Partial credit by ordinal distance is a switch, off by default: 1 - |pred - gold| / 3.
"""

from __future__ import annotations

from dataclasses import dataclass

from taosr.formats import ParsedResponse, ResponseFormat, parse
from taosr.labels import LEVELS

_SPAN = max(LEVELS) - min(LEVELS)


@dataclass(frozen=True)
class Scored:
    reward: float
    correct: bool  # first-token label equals gold (independent of partial credit)
    format_ok: bool
    hallucinated: bool | None  # step-5 decision disagrees with the label; None when unmeasurable
    label: int | None


def outcome_reward(
    response: str,
    gold: int,
    partial_credit: bool = False,
    format_gate: bool = True,
    fmt: ResponseFormat = ResponseFormat.POST_COT,
) -> Scored:
    parsed: ParsedResponse = parse(fmt, response)
    correct = parsed.label == gold
    if parsed.label is None or (format_gate and not parsed.format_ok):
        reward = 0.0
    elif correct:
        reward = 1.0
    elif partial_credit:
        reward = 1.0 - abs(parsed.label - gold) / _SPAN
    else:
        reward = 0.0
    return Scored(reward, correct, parsed.format_ok, parsed.hallucinated, parsed.label)

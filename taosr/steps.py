"""Step segmentation for stepwise rewards (docs/method.md section 6): which tokens of a post-CoT
response belong to each of its five numbered steps.

A response is the label line, then five step lines with fixed headers. A response whose steps
cannot all be found gets no spans (the caller gives it the outcome reward only, and counts it).
"""

from __future__ import annotations

from typing import Sequence

from taosr.formats import ResponseFormat, parse

NUM_STEPS = 5


def step_char_spans(text: str) -> list[tuple[int, int]] | None:
    """Character span (start, end) of each step line, or None when the format is broken."""
    if not parse(ResponseFormat.POST_COT, text).format_ok:
        return None
    spans, position = [], 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped:
            start = position + line.index(stripped[0])
            spans.append((start, start + len(stripped)))
        position += len(line)
    steps = spans[1:]  # the first non-empty line is the label
    return steps if len(steps) == NUM_STEPS else None


def token_char_ends(tokenizer, token_ids: Sequence[int]) -> list[int]:
    """Character offset where each token's text ends in the decoded response."""
    return [len(tokenizer.decode(list(token_ids[: i + 1]), skip_special_tokens=True)) for i in range(len(token_ids))]


def step_token_spans(
    char_spans: list[tuple[int, int]] | None, char_ends: Sequence[int]
) -> list[tuple[int, int]] | None:
    """Token span [start, end) of each step: the tokens whose text overlaps the step's line."""
    if char_spans is None:
        return None
    spans = []
    for start, end in char_spans:
        first = next((i for i, e in enumerate(char_ends) if e > start), None)
        if first is None:
            return None  # the step lies beyond the generated tokens (a cut response)
        last = next((i for i, e in enumerate(char_ends) if e >= end), len(char_ends) - 1)
        spans.append((first, last + 1))
    return spans


def segment(tokenizer, text: str, token_ids: Sequence[int]) -> list[tuple[int, int]] | None:
    return step_token_spans(step_char_spans(text), token_char_ends(tokenizer, token_ids))

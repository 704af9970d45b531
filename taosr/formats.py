"""Response formats: post-CoT (label first, then five reasoning steps), pre-CoT and label-only.

The post-CoT assistant turn (docs/method.md section 2) is exactly::

    <label text>
    1. Query: <what the query asks for>
    2. Item: <what the item is>
    3. Category: <match|partial|mismatch> — <reason>
    4. Attributes: <match|partial|violated|unknown> — <reason>
    5. Decision: <label text>

Steps 3-5 carry machine-checkable verdict words; that is what the offline step verifier and the
discriminative-hallucination metric check. Pre-CoT puts the steps first and the label last (the
ablation); label-only is the discriminative baseline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from taosr.labels import label_text, parse_level

CATEGORY_VERDICTS: tuple[str, ...] = ("match", "partial", "mismatch")
ATTRIBUTE_VERDICTS: tuple[str, ...] = ("match", "partial", "violated", "unknown")
STEP_NAMES: tuple[str, ...] = ("Query", "Item", "Category", "Attributes", "Decision")
DASH = "—"


class ResponseFormat(str, Enum):
    POST_COT = "post_cot"
    PRE_COT = "pre_cot"
    LABEL_ONLY = "label_only"


@dataclass(frozen=True)
class Reasoning:
    """The five steps of a rationale, with the verdict words of steps 3-5 kept apart."""

    query: str
    item: str
    category_verdict: str
    category_reason: str
    attribute_verdict: str
    attribute_reason: str
    decision: int

    def __post_init__(self) -> None:
        if self.category_verdict not in CATEGORY_VERDICTS:
            raise ValueError(f"category verdict must be one of {CATEGORY_VERDICTS}")
        if self.attribute_verdict not in ATTRIBUTE_VERDICTS:
            raise ValueError(f"attribute verdict must be one of {ATTRIBUTE_VERDICTS}")
        label_text(self.decision)  # validates the level

    def step_lines(self) -> list[str]:
        return [
            f"1. Query: {_one_line(self.query)}",
            f"2. Item: {_one_line(self.item)}",
            f"3. Category: {self.category_verdict} {DASH} {_one_line(self.category_reason)}",
            f"4. Attributes: {self.attribute_verdict} {DASH} {_one_line(self.attribute_reason)}",
            f"5. Decision: {label_text(self.decision)}",
        ]


@dataclass(frozen=True)
class ParsedResponse:
    """What a generated response says. ``label`` is the answer the format puts first (post-CoT)
    or last (pre-CoT); ``reasoning`` is None when the steps are missing or broken."""

    label: int | None
    reasoning: Reasoning | None
    error: str | None = None

    @property
    def format_ok(self) -> bool:
        return self.error is None

    @property
    def hallucinated(self) -> bool | None:
        """True when the reasoning's step-5 decision disagrees with the answer label; None when
        either is missing (such responses count as format errors, not hallucinations)."""
        if self.label is None or self.reasoning is None:
            return None
        return self.reasoning.decision != self.label


def render(fmt: ResponseFormat | str, level: int, reasoning: Reasoning | None = None) -> str:
    """The assistant turn for ``level`` in ``fmt``. CoT formats need ``reasoning``."""
    fmt = ResponseFormat(fmt)
    head = label_text(level)
    if fmt is ResponseFormat.LABEL_ONLY:
        return head
    if reasoning is None:
        raise ValueError(f"format {fmt.value} needs the reasoning steps")
    steps = "\n".join(reasoning.step_lines())
    if fmt is ResponseFormat.POST_COT:
        return f"{head}\n{steps}"
    return f"{steps}\nAnswer: {head}"


def decision_offset(fmt: ResponseFormat | str, response: str) -> int:
    """Character offset of the level digit that carries the decision in a rendered response:
    the first character for post-CoT and label-only, the digit after ``Answer:`` for pre-CoT."""
    fmt = ResponseFormat(fmt)
    if fmt is not ResponseFormat.PRE_COT:
        return 0
    marker = "\nAnswer: "
    at = response.rfind(marker)
    if at < 0:
        raise ValueError("a pre-CoT response must end with 'Answer: <label>'")
    return at + len(marker)


_STEP_RE = {
    1: re.compile(r"^1\.\s*Query:\s*(?P<text>.*)$"),
    2: re.compile(r"^2\.\s*Item:\s*(?P<text>.*)$"),
    3: re.compile(r"^3\.\s*Category:\s*(?P<verdict>[a-z]+)\s*(?:[—–-]\s*(?P<text>.*))?$"),
    4: re.compile(r"^4\.\s*Attributes:\s*(?P<verdict>[a-z]+)\s*(?:[—–-]\s*(?P<text>.*))?$"),
    5: re.compile(r"^5\.\s*Decision:\s*(?P<text>.*)$"),
}
_ANSWER_RE = re.compile(r"^Answer:\s*(?P<text>.*)$")


def parse(fmt: ResponseFormat | str, text: str) -> ParsedResponse:
    """Parse a generated response. Never raises: problems are reported in ``error``."""
    fmt = ResponseFormat(fmt)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ParsedResponse(None, None, "empty response")
    if fmt is ResponseFormat.LABEL_ONLY:
        label = _try_level(lines[0])
        if label is None:
            return ParsedResponse(None, None, f"first line is not a label: {lines[0][:40]!r}")
        extra = "trailing text after the label" if len(lines) > 1 else None
        return ParsedResponse(label, None, extra)
    if fmt is ResponseFormat.POST_COT:
        label = _try_level(lines[0])
        reasoning, error = parse_steps(lines[1:])
        if label is None:
            error = f"first line is not a label: {lines[0][:40]!r}"
        return ParsedResponse(label, reasoning, error)
    # pre-CoT: five steps, then "Answer: <label>"
    answer = _ANSWER_RE.match(lines[-1])
    label = _try_level(answer.group("text")) if answer else None
    reasoning, error = parse_steps(lines[:-1])
    if label is None:
        error = "last line is not 'Answer: <label>'"
    return ParsedResponse(label, reasoning, error)


def parse_steps(lines: list[str]) -> tuple[Reasoning | None, str | None]:
    """Parse exactly five step lines; returns (reasoning, None) or (None, what is wrong)."""
    if len(lines) != 5:
        return None, f"expected 5 reasoning steps, found {len(lines)} lines"
    found = {}
    for number, line in enumerate(lines, start=1):
        match = _STEP_RE[number].match(line)
        if not match:
            return None, f"step {number} is malformed: {line[:60]!r}"
        found[number] = match
    category, attributes = found[3].group("verdict"), found[4].group("verdict")
    if category not in CATEGORY_VERDICTS:
        return None, f"step 3 verdict {category!r} is not one of {CATEGORY_VERDICTS}"
    if attributes not in ATTRIBUTE_VERDICTS:
        return None, f"step 4 verdict {attributes!r} is not one of {ATTRIBUTE_VERDICTS}"
    decision = _try_level(found[5].group("text"))
    if decision is None:
        return None, "step 5 does not name a label"
    reasoning = Reasoning(
        query=found[1].group("text"),
        item=found[2].group("text"),
        category_verdict=category,
        category_reason=found[3].group("text") or "",
        attribute_verdict=attributes,
        attribute_reason=found[4].group("text") or "",
        decision=decision,
    )
    return reasoning, None


def _try_level(text: str) -> int | None:
    try:
        return parse_level(text)
    except ValueError:
        return None


def _one_line(text: str) -> str:
    return " ".join(text.split())

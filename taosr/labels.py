"""The four relevance levels, their label texts and default serving tiers (docs/method.md section 1)."""

from __future__ import annotations

import re

LEVELS: tuple[int, ...] = (4, 3, 2, 1)
"""Levels from most to least relevant."""

LABEL_TEXT: dict[int, str] = {
    4: "4-Excellent",
    3: "3-Related",
    2: "2-Mismatch",
    1: "1-Irrelevant",
}

DEFAULT_TIERS: dict[int, str] = {4: "Good", 3: "Good", 2: "Mid", 1: "Bad"}
TIER_NAMES: tuple[str, ...] = ("Good", "Mid", "Bad")

_TEXT_TO_LEVEL = {text.lower(): level for level, text in LABEL_TEXT.items()}
_NAME_TO_LEVEL = {text.split("-", 1)[1].lower(): level for level, text in LABEL_TEXT.items()}
_LABEL_RE = re.compile(r"^\s*([1-4])(?:\s*-\s*[A-Za-z]+)?\s*$")


def label_text(level: int) -> str:
    """The label text the model generates for ``level``."""
    if level not in LABEL_TEXT:
        raise ValueError(f"relevance level must be one of 1, 2, 3, 4; got {level!r}")
    return LABEL_TEXT[level]


def parse_level(value: object) -> int:
    """Read a level from an int, a digit string, a label text ("3-Related") or a name ("related").

    Raises ValueError for anything else; booleans and non-integral floats are rejected so a
    mistyped column never silently becomes a label.
    """
    if isinstance(value, bool):
        raise ValueError(f"a boolean is not a relevance level: {value!r}")
    if isinstance(value, int):
        if value in LABEL_TEXT:
            return value
        raise ValueError(f"relevance level must be 1-4; got {value}")
    if isinstance(value, float):
        if value.is_integer() and int(value) in LABEL_TEXT:
            return int(value)
        raise ValueError(f"relevance level must be 1-4; got {value}")
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TEXT_TO_LEVEL:
            return _TEXT_TO_LEVEL[text]
        if text in _NAME_TO_LEVEL:
            return _NAME_TO_LEVEL[text]
        match = _LABEL_RE.match(text)
        if match:
            return int(match.group(1))
    raise ValueError(f"not a relevance label: {value!r}")


def tier_of(level: int, tiers: dict[int, str] | None = None) -> str:
    """The serving tier of a level (Good / Mid / Bad by default)."""
    return (tiers or DEFAULT_TIERS)[level]

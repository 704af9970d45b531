"""Reasoning grounded in the row's own text, for logs without a knowledge-base trace.

The embedded teacher writes the five steps for the gold label. On a user's logs there is no
trace of which rules fired, so every step is built from what the row says: the query's terms
(and what it excludes), what the item is, which query terms the item covers, misses or
contradicts. A business rule is cited only when retrieval scored it above a measured threshold
(``cot.min_rule_score``); otherwise no rule is named. The verdict words follow the gold label
with the same mapping the synthetic knowledge base uses (docs/method.md section 1):

    level 4: category match,    attributes match
    level 3: category match,    attributes partial
    level 2: category match,    attributes violated
    level 1: category mismatch, attributes unknown
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from taosr.formats import Reasoning

VERDICTS = {4: ("match", "match"), 3: ("match", "partial"), 2: ("match", "violated"), 1: ("mismatch", "unknown")}

_STOPWORDS = frozenset(
    "a an and the for of to in on with by at from or is are be it its this that your my our i you we "
    "what which how best good new set pack pcs piece pieces buy cheap cheapest".split()
)
_NEGATIONS = ("not", "without", "no", "non")
_TOKEN = re.compile(r"[a-z0-9]+(?:[.'/-][a-z0-9]+)*")
_MAX_TERMS = 6


def terms(text: str) -> list[str]:
    """Lower-cased content words in order, without stopwords or repeats."""
    seen: list[str] = []
    for token in _TOKEN.findall(text.lower()):
        if token not in _STOPWORDS and token not in seen:
            seen.append(token)
    return seen


def _stem(word: str) -> str:
    """Crude plural folding so 'bulbs' meets 'bulb' (enough to say what the item covers)."""
    for suffix, keep in (("ies", "y"), ("es", ""), ("s", "")):
        if len(word) > 4 and word.endswith(suffix):
            return word[: -len(suffix)] + keep
    return word


@dataclass(frozen=True)
class QueryReading:
    wanted: list[str]  # content terms the item should have
    excluded: list[str]  # terms after a negation ("not pink" -> pink)


def read_query(query: str) -> QueryReading:
    words = _TOKEN.findall(query.lower())
    excluded = [words[i + 1] for i, w in enumerate(words[:-1]) if w in _NEGATIONS and words[i + 1] not in _STOPWORDS]
    wanted = [t for t in terms(query) if t not in excluded and t not in _NEGATIONS]
    return QueryReading(wanted[:_MAX_TERMS], excluded)


def item_words(title: str, category: str | None, attributes: Mapping[str, str]) -> set[str]:
    text = " ".join([title, category or "", " ".join(f"{k} {v}" for k, v in attributes.items())])
    return {_stem(t) for t in _TOKEN.findall(text.lower())}


def _listing(words: Sequence[str]) -> str:
    return ", ".join(f"'{w}'" for w in words)


def grounded_reasoning(
    query: str,
    title: str,
    category: str | None,
    attributes: Mapping[str, str],
    level: int,
    rule_text: str | None = None,
) -> Reasoning:
    """The five steps for ``level``, each citing only what the row (or a retrieved rule) says."""
    reading = read_query(query)
    have = item_words(title, category, attributes)
    covered = [t for t in reading.wanted if _stem(t) in have]
    missing = [t for t in reading.wanted if _stem(t) not in have]
    contradicted = [t for t in reading.excluded if _stem(t) in have]
    category_verdict, attribute_verdict = VERDICTS[level]

    asks = f"'{query}'" + (f": {_listing(reading.wanted)}" if reading.wanted else "")
    if reading.excluded:
        asks += f", and not {_listing(reading.excluded)}"
    kind = category.split(">")[-1].strip() if category else None
    what = title + (f" (category {kind})" if kind else "")
    if attributes:
        what += "; " + ", ".join(f"{k} {v}" for k, v in list(attributes.items())[:3])

    coverage = f"the item has {_listing(covered)}" if covered else "the item shares no term with the query"
    if category_verdict == "mismatch":
        category_reason = f"{coverage}; it is not the kind of product the query asks for"
    elif level == 2:
        category_reason = f"{coverage}; same broad kind of product"
    else:
        category_reason = f"{coverage}; the kind of product the query asks for"
    if rule_text:
        category_reason += f" (rule: {rule_text.rstrip('.')})"

    if attribute_verdict == "match":
        attribute_reason = (
            "every query term is covered"
            if not missing
            else f"{_listing(missing)} not stated, not in conflict with the item"
        )
    elif attribute_verdict == "partial":
        attribute_reason = (
            f"{_listing(missing)} not stated or different" if missing else "a secondary requirement is not met exactly"
        )
    elif attribute_verdict == "violated":
        if contradicted:
            attribute_reason = f"the item has {_listing(contradicted)}, which the query excludes"
        elif missing:
            attribute_reason = f"the item does not meet {_listing(missing)}"
        else:
            attribute_reason = "a key requirement of the query is not met"
    else:
        attribute_reason = "not checked: wrong kind of item"
    return Reasoning(
        query=asks,
        item=what,
        category_verdict=category_verdict,
        category_reason=category_reason,
        attribute_verdict=attribute_verdict,
        attribute_reason=attribute_reason,
        decision=level,
    )

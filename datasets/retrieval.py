"""BM25 retrieval of atomic rules for a (query, item), on bm25s (a maintained sparse BM25)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

from taosr.datasets.knowledge import RULES, Rule


def load_rules(path: str | None) -> dict[str, Rule]:
    """The built-in knowledge base, or a user's JSONL of {"id": .., "text": ..} rules."""
    if not path:
        return dict(RULES)
    rules: dict[str, Rule] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            rule = Rule(str(entry["id"]), str(entry["text"]).strip())
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{number}: a rule needs an 'id' and a 'text'") from error
        if not rule.text or rule.id in rules:
            raise ValueError(f"{path}:{number}: empty text or duplicate rule id {rule.id!r}")
        rules[rule.id] = rule
    if not rules:
        raise ValueError(f"{path} holds no rules")
    return rules


def retrieval_text(query: str, title: str, category: str | None, attributes: Mapping[str, str]) -> str:
    parts = [query, title, category or "", " ".join(f"{k} {v}" for k, v in attributes.items())]
    return " ".join(part for part in parts if part)


class RuleRetriever:
    """Top-k rules by BM25 over the rule texts."""

    def __init__(self, rules: Mapping[str, Rule] | None = None):
        import bm25s

        self._bm25s = bm25s
        self.rules = dict(rules or RULES)
        self.ids = list(self.rules)
        self.index = bm25s.BM25()
        self.index.index(
            bm25s.tokenize([self.rules[i].text for i in self.ids], stopwords="en", show_progress=False),
            show_progress=False,
        )

    def retrieve(self, texts: Sequence[str], k: int = 4, min_score: float = 0.0) -> list[list[str]]:
        """Ids of the top ``k`` rules per text whose BM25 score is above ``min_score``: no rule
        at all rather than an unrelated one (see ``scored`` to measure the threshold)."""
        return [[rule_id for rule_id, score in row if score > min_score] for row in self.scored(texts, k)]

    def scored(self, texts: Sequence[str], k: int = 4) -> list[list[tuple[str, float]]]:
        """(rule id, BM25 score) of the top ``k`` rules per text, best first."""
        if not texts:
            return []
        k = min(k, len(self.ids))
        tokens = self._bm25s.tokenize(list(texts), stopwords="en", show_progress=False)
        documents, scores = self.index.retrieve(tokens, k=k, show_progress=False)
        return [
            [(self.ids[d], float(s)) for d, s in zip(row, row_scores)] for row, row_scores in zip(documents, scores)
        ]

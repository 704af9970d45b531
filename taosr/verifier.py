"""The offline verifier (docs/method.md section 6): step-level annotations keyed by (query, item)
judge the verdict words of steps 3 to 5 of a response.

Annotations come from people in real use (the log's ``step_annotations`` column) and, for the
generated data, from the knowledge base's trace. ``coverage`` keeps a deterministic share of the
annotated prompts, so the hybrid with the generative reward model can be studied.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Iterable, Mapping

from taosr.formats import Reasoning
from taosr.steps import NUM_STEPS

VERIFIED_STEPS = (3, 4, 5)


def annotation_key(query: str, item: str) -> str:
    return f"{query}\u241f{item}"


class OfflineVerifier:
    def __init__(self, annotations: Mapping[str, Mapping]):
        self.annotations = dict(annotations)

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping], coverage: float = 1.0, seed: int = 0) -> "OfflineVerifier":
        """Rows with query, an item key (``item_id`` or ``title``) and ``step_annotations`` (an
        object, or its JSON text as validated logs store it); a row is kept when a hash of its
        key and the seed falls under ``coverage``."""
        kept = {}
        for row in rows:
            steps = row.get("step_annotations")
            if isinstance(steps, str):
                steps = json.loads(steps)
            if not steps:
                continue
            key = annotation_key(row["query"], str(row.get("item_id") or row["title"]))
            digest = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
            if digest < coverage:
                kept[key] = steps
        return cls(kept)

    def __contains__(self, key: str) -> bool:
        return key in self.annotations

    def step_rewards(self, key: str, reasoning: Reasoning | None) -> list[float]:
        """One reward per step: 1/0 on steps 3-5 where annotated, NaN where the verifier has no
        view (steps 1-2, unannotated prompts, or a response without parseable steps)."""
        rewards = [math.nan] * NUM_STEPS
        truth = self.annotations.get(key)
        if truth is None or reasoning is None:
            return rewards
        checks = {
            3: ("category_verdict", reasoning.category_verdict),
            4: ("attribute_verdict", reasoning.attribute_verdict),
            5: ("decision", reasoning.decision),
        }
        for step, (field, value) in checks.items():
            if field in truth and truth[field] is not None:
                rewards[step - 1] = 1.0 if str(truth[field]) == str(value) else 0.0
        return rewards


def hybrid(verifier: list[float], genrm: list[float] | None) -> tuple[list[float], list[str]]:
    """Verifier where it has a judgement, the GenRM elsewhere; returns rewards and their sources."""
    rewards, sources = [], []
    for index, value in enumerate(verifier):
        if not math.isnan(value):
            rewards.append(value)
            sources.append("verifier")
        elif genrm is not None and not math.isnan(genrm[index]):
            rewards.append(genrm[index])
            sources.append("genrm")
        else:
            rewards.append(math.nan)
            sources.append("none")
    return rewards, sources

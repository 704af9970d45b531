"""Deterministic train/val/test splits by query: the split is a function of the normalised query
text and the seed alone, so no query lands in two splits and reruns give the same splits."""

from __future__ import annotations

import hashlib
from typing import Mapping

SPLIT_ORDER = ("train", "val", "test")


def normalise_query(query: str) -> str:
    """Case- and whitespace-insensitive form: 'Phone  Case' and 'phone case' share a split."""
    return " ".join(query.casefold().split())


def assign_split(query: str, fractions: Mapping[str, float], seed: int = 0) -> str:
    """The split of ``query`` for shares like {"train": 0.8, "val": 0.1, "test": 0.1}."""
    names = [name for name in SPLIT_ORDER if name in fractions] + sorted(set(fractions) - set(SPLIT_ORDER))
    shares = [float(fractions[name]) for name in names]
    if any(share < 0 for share in shares) or sum(shares) <= 0:
        raise ValueError(f"split fractions must be non-negative with a positive sum; got {dict(fractions)}")
    digest = hashlib.sha256(f"{seed}\x00{normalise_query(query)}".encode("utf-8")).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(shares)
    cumulative = 0.0
    for name, share in zip(names, shares):
        cumulative += share
        if point < cumulative:
            return name
    return names[-1]


def query_sampled(query: str, share: float, seed: int = 0) -> bool:
    """Whether ``query`` is in a seeded sample of about ``share`` of all queries (whole queries,
    independent of the split hash, so every split keeps its share)."""
    digest = hashlib.sha256(f"sample\x00{seed}\x00{normalise_query(query)}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share

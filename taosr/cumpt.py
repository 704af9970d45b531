"""Cumulative-probability tiering (CumPT, docs/method.md section 7).

One threshold beta replaces per-class thresholds: the predicted level is the highest k whose
upper tail reaches beta, k* = max{k : sum_{j>=k} P(j) >= beta}. beta near 1 is permissive
(only level 1 is certain to reach it), beta near 0 picks level 4 almost always.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from taosr.labels import DEFAULT_TIERS, LEVELS
from taosr.metrics import classification_metrics

_EPS = 1e-9


def level_probs_matrix(probs: Sequence[Mapping[int, float]]) -> np.ndarray:
    """Stack {level: p} dicts into an [N, 4] array with columns in LEVELS order (4, 3, 2, 1)."""
    return np.array([[p[level] for level in LEVELS] for p in probs], dtype=np.float64)


def cumpt_levels(probs: np.ndarray, beta: float) -> np.ndarray:
    """CumPT levels for an [N, 4] array with columns in LEVELS order (4, 3, 2, 1)."""
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta must be in (0, 1]; got {beta}")
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(LEVELS):
        raise ValueError(f"expected an [N, 4] probability array; got shape {probs.shape}")
    tails = np.cumsum(probs, axis=1)  # column c holds P(level >= LEVELS[c])
    reached = tails >= beta - _EPS
    reached[:, -1] = True  # the tail of level 1 is the whole distribution
    first = np.argmax(reached, axis=1)
    return np.asarray(LEVELS)[first]


def cumpt_level(probs: Mapping[int, float], beta: float) -> int:
    """CumPT level of one {level: probability} distribution."""
    return int(cumpt_levels(level_probs_matrix([probs]), beta)[0])


def tiers_of(levels: Sequence[int], tiers: Mapping[int, str] = DEFAULT_TIERS) -> list[str]:
    return [tiers[int(level)] for level in levels]


def level_and_tier_metrics(gold: Sequence[int], levels: Sequence[int]) -> dict:
    """``classification_metrics`` of the levels, plus the accuracy of their tiers."""
    metrics = classification_metrics(list(gold), list(levels))
    metrics["tier_accuracy"] = float(np.mean([g == p for g, p in zip(tiers_of(gold), tiers_of(levels))]))
    return metrics


def sweep_beta(probs: np.ndarray, gold: Sequence[int], betas: Sequence[float]) -> list[dict]:
    """Level and tier metrics for each beta; the basis of choosing beta on a validation set."""
    return [{"beta": float(beta), **level_and_tier_metrics(gold, cumpt_levels(probs, beta).tolist())} for beta in betas]


def best_beta(sweep: Sequence[Mapping], metric: str = "macro_f1") -> float:
    """The beta with the highest ``metric``; ties go to the beta closest to 0.5 (the middle)."""
    best = max(sweep, key=lambda row: (row[metric], -abs(row["beta"] - 0.5)))
    return best["beta"]

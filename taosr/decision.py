"""From first-token level probabilities to one level: the decision rule, chosen on validation.

Two families, both chosen on a held-out split the reported table never uses:

- CumPT (``taosr.cumpt``): the highest level whose upper tail reaches beta, the papers' rule.
- Prior-corrected argmax: argmax_k log P(k) - tau * log prior(k), where prior is the model's
  mean first-token distribution on the validation split. A model fine-tuned on skewed labels
  keeps some of their prior; dividing it out (logit adjustment, Menon et al. 2021) lets the
  rare levels be answered, which is what macro-F1 rewards. tau = 0 is the plain argmax.

On Home Depot's logs the SFT model answered level 1 for almost no row under the plain argmax
(test F1 of level 1: 1.4), and no CumPT beta fixed that (docs/results.md, "Teaching the decision").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np

from taosr.cumpt import cumpt_levels, level_and_tier_metrics
from taosr.labels import LEVELS

RULES = ("cumpt", "argmax")
DEFAULT_TAUS = tuple(round(0.1 * i, 1) for i in range(11))
DEFAULT_BETAS = tuple(round(0.05 * i, 2) for i in range(1, 21))


@dataclass(frozen=True)
class DecisionRule:
    """One rule for [N, 4] probabilities in LEVELS order (4, 3, 2, 1)."""

    rule: str = "cumpt"
    beta: float = 0.5  # CumPT's threshold (rule "cumpt")
    prior_tau: float = 0.0  # how much of the level prior the argmax divides out (rule "argmax")
    level_prior: tuple[float, ...] = field(default=(0.25, 0.25, 0.25, 0.25))  # LEVELS order

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"decision rule must be one of {RULES}; got {self.rule!r}")
        if not 0.0 < self.beta <= 1.0:
            raise ValueError(f"beta must be in (0, 1]; got {self.beta}")
        if self.prior_tau < 0:
            raise ValueError(f"prior_tau must be >= 0; got {self.prior_tau}")
        prior = np.asarray(self.level_prior, dtype=np.float64)
        if prior.shape != (len(LEVELS),) or (prior <= 0).any():
            raise ValueError(
                f"level_prior needs {len(LEVELS)} positive values (levels {LEVELS}); got {self.level_prior}"
            )
        object.__setattr__(self, "level_prior", tuple(float(p) for p in prior / prior.sum()))

    def levels(self, probs) -> np.ndarray:
        probs = np.asarray(probs, dtype=np.float64)
        if self.rule == "cumpt":
            return cumpt_levels(probs, self.beta)
        scores = np.log(np.clip(probs, 1e-12, None)) - self.prior_tau * np.log(np.asarray(self.level_prior))
        return np.asarray(LEVELS)[np.argmax(scores, axis=1)]

    def describe(self) -> str:
        if self.rule == "cumpt":
            return f"CumPT beta={self.beta:g}"
        return "argmax" if self.prior_tau == 0 else f"prior-corrected argmax tau={self.prior_tau:g}"

    def to_record(self) -> dict:
        return {**asdict(self), "level_prior": list(self.level_prior)}

    @classmethod
    def from_record(cls, record: Mapping | None) -> "DecisionRule | None":
        """The rule an export record names; a record from before rules existed has only a beta."""
        if not record:
            return None
        if record.get("decision_rule"):
            return cls(**{**record["decision_rule"], "level_prior": tuple(record["decision_rule"]["level_prior"])})
        if record.get("cumpt_beta") is not None:
            return cls(rule="cumpt", beta=float(record["cumpt_beta"]))
        return None


def choose_rule(
    probs,
    gold: Sequence[int],
    metric: str = "macro_f1",
    betas: Sequence[float] = DEFAULT_BETAS,
    taus: Sequence[float] = DEFAULT_TAUS,
    keep_argmax_within_noise: bool = False,
    seed: int = 0,
) -> tuple[DecisionRule, list[dict]]:
    """The candidate with the best ``metric`` (a ``classification_metrics`` key or
    ``tier_accuracy``) on (probs, gold), and every candidate's metrics.

    Ties go to CumPT (the papers' rule) and then to the smaller correction, so a rule is only
    made more elaborate when the validation split shows it pays. With
    ``keep_argmax_within_noise`` it must pay beyond noise: the best rule replaces the plain
    argmax only when the paired bootstrap's 95% interval of its gain over the argmax excludes 0.
    The best of 31 candidates on a few hundred rows is partly luck: on the main job's 300
    validation rows and Home Depot's 681 the chosen rule's gain was within noise, and it lost to
    the argmax on the test split both times (docs/results.md, "Teaching the decision")."""
    probs = np.asarray(probs, dtype=np.float64)
    prior = tuple(probs.mean(axis=0))
    candidates = [DecisionRule("cumpt", beta=beta) for beta in betas]
    candidates += [DecisionRule("argmax", prior_tau=tau, level_prior=prior) for tau in taus]
    rows = [
        {
            "rule": rule.describe(),
            "rank": rank,
            "_rule": rule,
            **level_and_tier_metrics(gold, rule.levels(probs).tolist()),
        }
        for rank, rule in enumerate(candidates)
    ]
    best = max(rows, key=lambda row: (row[metric] if row[metric] is not None else -1.0, -row["rank"]))
    chosen = best["_rule"]
    plain = DecisionRule("argmax", level_prior=prior)
    if keep_argmax_within_noise and chosen.levels(probs).tolist() != plain.levels(probs).tolist():
        low, high = gain_interval(gold, plain.levels(probs), chosen.levels(probs), metric, seed=seed)
        best["gain_over_argmax"] = {"low": low, "high": high}
        if low <= 0:
            chosen = plain
    return chosen, [{k: v for k, v in row.items() if k not in ("_rule", "rank")} for row in rows]


def gain_interval(
    gold: Sequence[int], before, after, metric: str, resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of ``metric``(after) - ``metric``(before) over paired bootstrap
    resamples of the rows (the metric as ``level_and_tier_metrics`` names it). The report's
    vectorised ``paired_bootstrap`` answers for the metrics it has; the tier metrics resample here."""
    from taosr.metrics import paired_bootstrap

    gold_, before, after = (np.asarray(x) for x in (gold, before, after))
    if metric in ("macro_f1", "accuracy", "qwk"):
        result = paired_bootstrap(gold_, before, after, resamples=resamples, seed=seed, confidence=confidence)[metric]
        return result["low"], result["high"]
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(resamples):
        picks = rng.integers(0, len(gold_), size=len(gold_))
        a = level_and_tier_metrics(gold_[picks].tolist(), before[picks].tolist())[metric]
        b = level_and_tier_metrics(gold_[picks].tolist(), after[picks].tolist())[metric]
        gains.append((b or 0.0) - (a or 0.0))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(gains, [tail, 100 - tail])
    return float(low), float(high)

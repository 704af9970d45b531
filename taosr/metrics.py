"""Evaluation metrics (docs/method.md section 8): per-class F1, macro-F1, accuracy, Good-F1, pass@k,
discriminative-hallucination rate and format-error rate, overall and per query type.

Conventions, fixed here so numbers are comparable across runs:
- macro-F1 averages the F1 of the levels that occur in the gold labels or the predictions
  (scikit-learn's convention); a level with gold examples but no correct prediction scores 0.
- Good-F1 is the F1 of the binary task {4, 3} ("Good") versus {2, 1}.
- pass@k uses the unbiased estimator 1 - C(n-c, k) / C(n, k) averaged over prompts.
- Rates are over the responses they can be measured on and report that denominator.
- Two models scored on the same examples are compared by a paired bootstrap: the examples are
  resampled with replacement and both models' metric is recomputed on each resample, so the
  interval of the difference accounts for their shared examples.
"""

from __future__ import annotations

from collections import defaultdict
from math import comb
from typing import Iterable, Mapping, Sequence

import numpy as np

LEVEL_ORDER = (1, 2, 3, 4)


def f1(tp: int, fp: int, fn: int) -> float:
    denominator = 2 * tp + fp + fn
    return 0.0 if denominator == 0 else 2 * tp / denominator


NO_ANSWER = 0  # a prediction that names no level (an unparseable decoded answer): always wrong


def confusion(gold: Sequence[int], pred: Sequence[int]) -> dict[int, dict[int, int]]:
    """confusion[g][p] = number of examples with gold level g predicted as p (p = 0: no answer)."""
    matrix = {g: {p: 0 for p in (NO_ANSWER, *LEVEL_ORDER)} for g in LEVEL_ORDER}
    for g, p in zip(gold, pred, strict=True):
        matrix[g][p] += 1
    return matrix


def classification_metrics(gold: Sequence[int], pred: Sequence[int]) -> dict:
    """Per-level F1, macro-F1, accuracy and Good-F1 of level predictions (all in [0, 1])."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    n = len(gold)
    if n == 0:
        return {"n": 0}
    per_class: dict[str, float | None] = {}
    present = (set(gold) | set(pred)) & set(LEVEL_ORDER)
    for level in LEVEL_ORDER:
        tp = sum(1 for g, p in zip(gold, pred) if g == level and p == level)
        fp = sum(1 for g, p in zip(gold, pred) if g != level and p == level)
        fn = sum(1 for g, p in zip(gold, pred) if g == level and p != level)
        per_class[f"f1_{level}"] = f1(tp, fp, fn) if level in present else None
    scored = [value for value in per_class.values() if value is not None]
    good_gold = [g >= 3 for g in gold]
    good_pred = [p >= 3 for p in pred]
    tp = sum(1 for g, p in zip(good_gold, good_pred) if g and p)
    fp = sum(1 for g, p in zip(good_gold, good_pred) if not g and p)
    fn = sum(1 for g, p in zip(good_gold, good_pred) if g and not p)
    return {
        "n": n,
        **per_class,
        "macro_f1": sum(scored) / len(scored),
        "accuracy": sum(1 for g, p in zip(gold, pred) if g == p) / n,
        "good_f1": f1(tp, fp, fn),
        "qwk": quadratic_weighted_kappa(gold, pred),
    }


def quadratic_weighted_kappa(gold: Sequence[int], pred: Sequence[int]) -> float | None:
    """Cohen's kappa with quadratic weights over levels 1-4 (0 = chance agreement, 1 = perfect):
    an ordinal score, so predicting 3 for a 4 costs less than predicting 1. Examples without an
    answer are left out; None when fewer than two examples remain. A constant prediction scores 0."""
    from sklearn.metrics import cohen_kappa_score

    answered = [(g, p) for g, p in zip(gold, pred) if p in LEVEL_ORDER]
    if len(answered) < 2:
        return None
    g, p = zip(*answered)
    if len(set(g)) == 1 and len(set(p)) == 1:
        return 0.0  # sklearn divides 0 by 0 here
    return float(cohen_kappa_score(g, p, labels=list(LEVEL_ORDER), weights="quadratic"))


def expected_level(probs: Sequence[float]) -> float:
    """sum_k k * P(k) over levels 1-4: the ranking score whose Spearman correlation we report."""
    return float(sum(level * p for level, p in zip(LEVEL_ORDER, probs)))


def spearman(scores: Sequence[float], gold: Sequence[float]) -> float | None:
    """Spearman rank correlation (ties averaged); None when either side is constant or n < 2."""
    from scipy.stats import spearmanr

    if len(scores) < 2 or len(set(scores)) < 2 or len(set(gold)) < 2:
        return None
    return float(spearmanr(scores, gold).statistic)


def _resampled_macro_f1_and_accuracy(gold: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Macro-F1 and accuracy of each row of (resamples, n) arrays, with classification_metrics'
    conventions (a level counts where it occurs in that resample's gold or predictions)."""
    f1_sum = np.zeros(gold.shape[0])
    levels_present = np.zeros(gold.shape[0])
    for level in LEVEL_ORDER:
        is_gold, is_pred = gold == level, pred == level
        tp = (is_gold & is_pred).sum(axis=1)
        fp = (~is_gold & is_pred).sum(axis=1)
        fn = (is_gold & ~is_pred).sum(axis=1)
        present = (is_gold | is_pred).any(axis=1)
        denominator = 2 * tp + fp + fn
        f1_sum += np.where(present, 2 * tp / np.maximum(denominator, 1), 0.0)
        levels_present += present
    return f1_sum / np.maximum(levels_present, 1), (gold == pred).mean(axis=1)


def _resampled_qwk(gold: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Quadratic weighted kappa of each row of (resamples, n) arrays, as
    ``quadratic_weighted_kappa`` computes it (unanswered predictions left out; 0 where the
    expected disagreement is 0, i.e. gold and predictions are one and the same constant)."""
    rows, size = gold.shape[0], len(LEVEL_ORDER)
    answered = (pred >= 1) & (pred <= size)
    cell = np.arange(rows)[:, None] * size * size + (gold - 1) * size + (pred - 1)
    observed = np.bincount(cell[answered], minlength=rows * size * size).reshape(rows, size, size).astype(float)
    total = observed.sum(axis=(1, 2), keepdims=True)
    expected = observed.sum(axis=2, keepdims=True) * observed.sum(axis=1, keepdims=True) / np.maximum(total, 1)
    levels = np.arange(size)
    weights = (levels[:, None] - levels[None, :]) ** 2 / (size - 1) ** 2
    disagreement = (weights * expected).sum(axis=(1, 2))
    kappa = 1 - (weights * observed).sum(axis=(1, 2)) / np.where(disagreement > 0, disagreement, 1)
    return np.where(disagreement > 0, kappa, 0.0)


def paired_bootstrap(
    gold: Sequence[int] | np.ndarray,
    pred_a: Sequence[int] | np.ndarray,
    pred_b: Sequence[int] | np.ndarray,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Difference b - a in macro-F1, accuracy and QWK on the same examples, with percentile
    intervals from a paired bootstrap. ``beyond_noise`` says whether the macro-F1 interval
    excludes 0."""
    gold_, a, b = (np.asarray(x) for x in (gold, pred_a, pred_b))
    if not (len(gold_) == len(a) == len(b)) or len(gold_) == 0:
        raise ValueError(
            f"paired bootstrap needs the same non-empty examples: {len(gold_)} gold, {len(a)} and {len(b)} predictions"
        )
    picks = np.random.default_rng(seed).integers(0, len(gold_), size=(resamples, len(gold_)))
    f1_a, acc_a = _resampled_macro_f1_and_accuracy(gold_[picks], a[picks])
    f1_b, acc_b = _resampled_macro_f1_and_accuracy(gold_[picks], b[picks])
    tail = 100 * (1 - confidence) / 2
    point_a = classification_metrics(gold_.tolist(), a.tolist())
    point_b = classification_metrics(gold_.tolist(), b.tolist())
    qwk_deltas = _resampled_qwk(gold_[picks], b[picks]) - _resampled_qwk(gold_[picks], a[picks])
    out: dict = {"n": len(gold_), "resamples": resamples, "confidence": confidence}
    for name, deltas in (("macro_f1", f1_b - f1_a), ("accuracy", acc_b - acc_a), ("qwk", qwk_deltas)):
        low, high = np.percentile(deltas, [tail, 100 - tail])
        out[name] = {"delta": (point_b[name] or 0.0) - (point_a[name] or 0.0), "low": float(low), "high": float(high)}
    out["beyond_noise"] = out["macro_f1"]["low"] > 0 or out["macro_f1"]["high"] < 0
    return out


def paired_accuracy_gain(
    right_a: Sequence[bool] | np.ndarray,
    right_b: Sequence[bool] | np.ndarray,
    clusters: Sequence | None = None,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Accuracy of b minus accuracy of a on the same questions, with a percentile interval from a
    paired bootstrap that resamples whole ``clusters`` (questions that share one, such as the five
    step questions about one response, are not independent; None: every question on its own).
    ``beyond_noise``: the interval excludes 0."""
    a, b = np.asarray(right_a, dtype=float), np.asarray(right_b, dtype=float)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"a paired accuracy gain needs the same non-empty questions: {len(a)} and {len(b)}")
    keys = np.arange(len(a)) if clusters is None else np.unique(np.asarray(clusters), return_inverse=True)[1]
    if len(keys) != len(a):
        raise ValueError(f"one cluster per question: {len(keys)} clusters for {len(a)} questions")
    count = int(keys.max()) + 1
    gained = np.bincount(keys, weights=b - a, minlength=count)  # per cluster: sum of b - a
    sizes = np.bincount(keys, minlength=count).astype(float)
    picks = np.random.default_rng(seed).integers(0, count, size=(resamples, count))
    deltas = gained[picks].sum(axis=1) / sizes[picks].sum(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(deltas, [tail, 100 - tail])
    return {
        "n": len(a),
        "clusters": count,
        "accuracy_a": float(a.mean()),
        "accuracy_b": float(b.mean()),
        "delta": float(b.mean() - a.mean()),
        "low": float(low),
        "high": float(high),
        "beyond_noise": bool(low > 0 or high < 0),
        "resamples": resamples,
        "confidence": confidence,
    }


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n is correct."""
    if not 0 <= num_correct <= num_samples:
        raise ValueError("need 0 <= correct <= samples")
    if not 1 <= k <= num_samples:
        raise ValueError(f"k must be in 1..{num_samples}; got {k}")
    if num_samples - num_correct < k:
        return 1.0
    return 1.0 - comb(num_samples - num_correct, k) / comb(num_samples, k)


def pass_at_k_table(correct_counts: Iterable[tuple[int, int]], max_k: int) -> dict[int, float]:
    """Mean pass@k over prompts for k = 1..max_k, from (samples, correct) per prompt."""
    counts = list(correct_counts)
    if not counts:
        return {}
    return {k: sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) for k in range(1, max_k + 1)}


def rate(flags: Iterable[bool | None]) -> dict:
    """Share of True among the measured (non-None) flags, with its denominator."""
    measured = [bool(flag) for flag in flags if flag is not None]
    return {"rate": (sum(measured) / len(measured)) if measured else None, "n": len(measured)}


FIRST_TOKEN_PASS_K = (1, 2, 4, 8)


def first_token_pass_at_k(
    gold: Sequence[int], probs: Sequence[Sequence[float]], ks: Sequence[int] = FIRST_TOKEN_PASS_K
) -> dict[str, float]:
    """{"pass@k": mean over examples of 1 - (1 - P(gold))^k}: the chance that at least one of k
    levels sampled at temperature 1 from an example's first-token distribution (``probs`` in
    LEVEL_ORDER) is right. It is what ``pass_at_k``'s sampled estimate converges to, without the
    sampling noise and without decoding, so every stage is measured on the same prompts and RL's
    sharpening shows as pass@1 closing on pass@k."""
    if len(gold) != len(probs) or not gold:
        raise ValueError(f"need one distribution per gold label: {len(gold)} labels, {len(probs)} distributions")
    right = np.array([row[LEVEL_ORDER.index(level)] for level, row in zip(gold, probs)], dtype=float)
    return {f"pass@{k}": float(np.mean(1.0 - (1.0 - right) ** k)) for k in ks}


def evaluate_records(records: Sequence[Mapping]) -> dict:
    """Metrics overall and per query type.

    Each record has ``gold`` and ``pred`` levels and ``query_type``; optionally ``format_ok``
    and ``hallucinated`` (None where not measured) when responses were decoded.
    """

    def summarise(rows: Sequence[Mapping]) -> dict:
        out = classification_metrics([r["gold"] for r in rows], [r["pred"] for r in rows])
        if rows and all(r.get("probs") for r in rows):
            out["spearman"] = spearman([expected_level(r["probs"]) for r in rows], [r["gold"] for r in rows])
            out["first_token_pass_at_k"] = first_token_pass_at_k([r["gold"] for r in rows], [r["probs"] for r in rows])
        if any("format_ok" in r for r in rows):
            decoded = [r for r in rows if "format_ok" in r]
            out["format_error_rate"] = rate(not r["format_ok"] for r in decoded)["rate"]
            hallucination = rate(r.get("hallucinated") for r in decoded)
            out["hallucination_rate"] = hallucination["rate"]
            out["hallucination_n"] = hallucination["n"]
        return out

    by_type: dict[str, list[Mapping]] = defaultdict(list)
    for record in records:
        by_type[str(record.get("query_type") or "unknown")].append(record)
    return {
        "overall": summarise(records),
        "by_query_type": {name: summarise(rows) for name, rows in sorted(by_type.items())},
        "confusion": confusion([r["gold"] for r in records], [r["pred"] for r in records]),
    }


TABLE_COLUMNS = ("f1_1", "f1_2", "f1_3", "f1_4", "macro_f1", "accuracy", "good_f1", "qwk", "spearman")
UNIT_SCALE_COLUMNS = ("qwk", "spearman")  # correlations: printed on their own -1..1 scale, not as %
DECODED_COLUMNS = ("format_error_rate", "hallucination_rate")  # present when responses were decoded


def markdown_table(rows: Mapping[str, Mapping], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """A Markdown table, one row per named metrics dict; scores as percentages like docs/method.md."""
    header = "| name | n | " + " | ".join(columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 2)]
    for name, metrics in rows.items():
        cells = [
            _unit(metrics.get(column)) if column in UNIT_SCALE_COLUMNS else _percent(metrics.get(column))
            for column in columns
        ]
        lines.append(f"| {name} | {metrics.get('n', 0)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _unit(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def sign_test(to_right: int, to_wrong: int) -> float:
    """Two-sided exact binomial p of the rows that became right against those that became wrong
    (1 when none did): how likely so lopsided a split is from changes that help and hurt alike."""
    from scipy.stats import binomtest  # with scikit-learn, already a dependency

    total = to_right + to_wrong
    return 1.0 if total == 0 else float(binomtest(to_right, total, 0.5).pvalue)

import numpy as np
import pytest

from taosr.cumpt import best_beta, cumpt_level, cumpt_levels, level_probs_matrix, sweep_beta
from taosr.metrics import (
    _resampled_macro_f1_and_accuracy,
    _resampled_qwk,
    classification_metrics,
    evaluate_records,
    first_token_pass_at_k,
    markdown_table,
    paired_bootstrap,
    pass_at_k,
    pass_at_k_table,
    quadratic_weighted_kappa,
    rate,
)

GOLD = [4, 4, 4, 3, 2, 1]
PRED = [4, 4, 2, 4, 2, 2]


def test_classification_metrics_by_hand():
    m = classification_metrics(GOLD, PRED)
    # level 4: tp 2, fp 1 (gold 3), fn 1 (gold 4 -> 2): F1 = 4 / 6
    assert m["f1_4"] == pytest.approx(4 / 6)
    assert m["f1_3"] == 0.0  # one gold 3, never predicted
    # level 2: tp 1, fp 2 (gold 4 and gold 1 predicted 2), fn 0: F1 = 2 / 4
    assert m["f1_2"] == pytest.approx(0.5)
    assert m["f1_1"] == 0.0
    assert m["macro_f1"] == pytest.approx((4 / 6 + 0.5) / 4)
    assert m["accuracy"] == pytest.approx(0.5)
    # Good = {4, 3}: gold TTTTFF, pred TTFTFF -> tp 3, fp 0, fn 1: F1 = 6 / 7
    assert m["good_f1"] == pytest.approx(6 / 7)
    assert m["n"] == 6


def test_macro_f1_skips_levels_absent_from_gold_and_predictions():
    m = classification_metrics([4, 4, 2], [4, 2, 2])
    assert m["f1_3"] is None and m["f1_1"] is None
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_no_answer_counts_as_wrong_for_its_gold_level():
    m = classification_metrics([4, 4], [4, 0])
    assert m["f1_4"] == pytest.approx(2 / 3) and m["accuracy"] == 0.5
    assert m["f1_1"] is None  # 0 is not a level


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        classification_metrics([4], [4, 3])


def test_vectorised_resample_metrics_match_classification_metrics():
    rng = np.random.default_rng(3)
    gold = rng.integers(1, 5, size=(50, 7))
    pred = rng.integers(0, 5, size=(50, 7))  # 0: no answer
    gold[:5] = 4  # rows where some levels are absent from gold and predictions
    pred[:5] = rng.choice([3, 4], size=(5, 7))
    macro, accuracy = _resampled_macro_f1_and_accuracy(gold, pred)
    for row in range(50):
        expected = classification_metrics(gold[row].tolist(), pred[row].tolist())
        assert macro[row] == pytest.approx(expected["macro_f1"]) and accuracy[row] == pytest.approx(
            expected["accuracy"]
        )


def test_resampled_qwk_by_hand_and_against_sklearn():
    # gold 1,2,3,4 answered 1,2,4,4: observed disagreement w(3,4) = 1/9; expected, with gold
    # marginals 1,1,1,1 and answered 1,1,0,2 over n = 4: (1/36) * (14 + 6 + 2 * 14) = 4/3;
    # kappa = 1 - (1/9) / (4/3) = 11/12. A constant answer scores 0; an unanswered row is left out.
    rows = _resampled_qwk(
        np.array([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]), np.array([[1, 2, 4, 4], [3, 3, 3, 3], [1, 2, 0, 4]])
    )
    assert rows.tolist() == pytest.approx([11 / 12, 0.0, 1.0])
    rng = np.random.default_rng(1)
    gold = rng.integers(1, 5, size=(50, 40))
    pred = np.clip(gold + rng.integers(-2, 3, size=(50, 40)), 0, 4)
    assert _resampled_qwk(gold, pred) == pytest.approx([quadratic_weighted_kappa(g, p) for g, p in zip(gold, pred)])


def test_paired_bootstrap_by_hand():
    gold, always_1, perfect = [1, 1, 2, 2], [1, 1, 1, 1], [1, 1, 2, 2]
    # always_1: F1(1) = 2*2 / (2*2 + 2 + 0) = 2/3, F1(2) = 0 -> macro 1/3, accuracy 1/2
    result = paired_bootstrap(gold, always_1, perfect, resamples=500)
    assert result["macro_f1"]["delta"] == pytest.approx(2 / 3) and result["accuracy"]["delta"] == pytest.approx(0.5)
    assert result["qwk"]["delta"] == pytest.approx(1.0)  # a constant answer's QWK is 0, a perfect one's 1
    assert (
        0 <= result["accuracy"]["low"] <= 0.5 <= result["accuracy"]["high"] <= 1
    )  # perfect is never worse on a resample
    same = paired_bootstrap(gold, perfect, perfect)
    assert same["macro_f1"] == {"delta": 0.0, "low": 0.0, "high": 0.0} and not same["beyond_noise"]


def test_paired_bootstrap_separates_a_real_gain_from_a_coin_flip():
    rng = np.random.default_rng(0)
    gold = rng.integers(1, 5, size=400)
    coin_a = np.where(rng.random(400) < 0.5, gold, 1 + gold % 4)  # right half the time
    coin_b = np.where(rng.random(400) < 0.5, gold, 1 + gold % 4)  # another draw of the same model
    better = np.where(rng.random(400) < 0.8, gold, 1 + gold % 4)
    assert paired_bootstrap(gold, coin_a, better)["beyond_noise"]
    noise = paired_bootstrap(gold, coin_a, coin_b)
    assert (
        not noise["beyond_noise"] and noise["macro_f1"]["low"] < noise["macro_f1"]["delta"] < noise["macro_f1"]["high"]
    )
    with pytest.raises(ValueError, match="same non-empty examples"):
        paired_bootstrap([1, 2], [1], [1, 2])


def test_first_token_pass_at_k_by_hand():
    # P(gold) = 0.5 and 0.1: pass@1 = (0.5 + 0.1) / 2 = 0.3; pass@2 = ((1 - 0.25) + (1 - 0.81)) / 2 = 0.47
    probs = [[0.0, 0.0, 0.5, 0.5], [0.1, 0.2, 0.3, 0.4]]
    result = first_token_pass_at_k([4, 1], probs, ks=(1, 2))
    assert result == pytest.approx({"pass@1": 0.3, "pass@2": 0.47})
    overall = evaluate_records([{"gold": 4, "pred": 4, "probs": probs[0]}, {"gold": 1, "pred": 4, "probs": probs[1]}])[
        "overall"
    ]
    assert overall["first_token_pass_at_k"]["pass@2"] == pytest.approx(0.47)
    with pytest.raises(ValueError, match="one distribution per gold label"):
        first_token_pass_at_k([4], probs)


def test_pass_at_k_by_hand():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(5, 2, 4) == 1.0
    assert pass_at_k(5, 0, 5) == 0.0
    table = pass_at_k_table([(5, 2), (5, 0)], max_k=2)
    assert table[1] == pytest.approx(0.2) and table[2] == pytest.approx(0.35)
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)


def test_rates_count_only_measured_responses():
    assert rate([True, False, None, False]) == {"rate": pytest.approx(1 / 3), "n": 3}
    assert rate([None]) == {"rate": None, "n": 0}


def test_evaluate_records_breaks_down_by_query_type_and_rates():
    records = [
        {"gold": 4, "pred": 4, "query_type": "plain", "format_ok": True, "hallucinated": False},
        {"gold": 2, "pred": 4, "query_type": "negation", "format_ok": True, "hallucinated": True},
        {"gold": 2, "pred": 2, "query_type": "negation", "format_ok": False, "hallucinated": None},
    ]
    out = evaluate_records(records)
    assert out["overall"]["accuracy"] == pytest.approx(2 / 3)
    assert out["overall"]["format_error_rate"] == pytest.approx(1 / 3)
    assert out["overall"]["hallucination_rate"] == pytest.approx(1 / 2)
    assert out["by_query_type"]["negation"]["n"] == 2
    assert out["by_query_type"]["plain"]["accuracy"] == 1.0
    assert out["confusion"][2][4] == 1
    table = markdown_table(out["by_query_type"])
    assert "| negation | 2 |" in table and "| plain | 1 |" in table


PROBS = {4: 0.30, 3: 0.25, 2: 0.25, 1: 0.20}  # tails: >=4 0.30, >=3 0.55, >=2 0.80, >=1 1.00


@pytest.mark.parametrize(
    "beta, level", [(0.1, 4), (0.3, 4), (0.31, 3), (0.55, 3), (0.56, 2), (0.8, 2), (0.81, 1), (1.0, 1)]
)
def test_cumpt_picks_highest_level_whose_tail_reaches_beta(beta, level):
    assert cumpt_level(PROBS, beta) == level


def test_cumpt_vectorised_matches_single_and_handles_rounding():
    matrix = level_probs_matrix([PROBS, {4: 0.9, 3: 0.05, 2: 0.03, 1: 0.02}, {4: 0.1, 3: 0.1, 2: 0.1, 1: 0.7 - 1e-12}])
    assert cumpt_levels(matrix, 0.5).tolist() == [3, 4, 1]
    assert cumpt_levels(matrix, 1.0).tolist() == [1, 1, 1]  # sums a hair under 1 still reach level 1
    with pytest.raises(ValueError):
        cumpt_levels(matrix, 0.0)
    with pytest.raises(ValueError):
        cumpt_levels(np.ones((2, 3)), 0.5)


def test_sweep_beta_and_pick():
    probs = level_probs_matrix([PROBS, {4: 0.9, 3: 0.05, 2: 0.03, 1: 0.02}])
    sweep = sweep_beta(probs, gold=[3, 4], betas=[0.3, 0.5, 0.9])
    # beta 0.9: the first row reaches it only at level 1 (wrong), the second at level 4 (right)
    assert [row["accuracy"] for row in sweep] == [0.5, 1.0, 0.5]
    assert sweep[1]["tier_accuracy"] == 1.0
    assert best_beta(sweep) == 0.5


def test_eval_markdown_shows_the_decoded_metrics_when_present():
    from taosr.ray_jobs.eval import render_markdown

    metrics = evaluate_records(
        [
            {"gold": 4, "pred": 4, "query_type": "plain", "format_ok": False, "hallucinated": None},
            {"gold": 2, "pred": 4, "query_type": "plain", "format_ok": True, "hallucinated": True},
        ]
    )
    text = render_markdown("m", metrics)
    assert "format_error_rate" in text and "hallucination_rate" in text and "50.00" in text


def test_eval_reads_a_scored_row_in_level_order_so_a_model_that_ranks_gets_a_positive_spearman():
    """The scorer writes p_4..p_1; the metrics take P(1)..P(4). A model whose P(4) follows the
    gold level must come out with Spearman +1, not -1 (the columns read in the scorer's order)."""
    from taosr.metrics import evaluate_records
    from taosr.ray_jobs.eval import level_probs

    rows = [{"p_4": 0.1 * gold, "p_3": 0.2, "p_2": 0.2, "p_1": 0.6 - 0.1 * gold} for gold in (1, 2, 3, 4)]
    assert level_probs(rows[3]) == pytest.approx([0.2, 0.2, 0.2, 0.4])  # P(1)..P(4)
    records = [
        {"gold": gold, "pred": gold, "query_type": "x", "probs": level_probs(row)}
        for gold, row in zip((1, 2, 3, 4), rows)
    ]
    assert evaluate_records(records)["overall"]["spearman"] == pytest.approx(1.0)


# Two rows in LEVELS order (4, 3, 2, 1); their mean, the level prior, is (0.45, 0.26, 0.115, 0.175).
TWO_ROWS = np.array([[0.5, 0.32, 0.13, 0.05], [0.4, 0.2, 0.1, 0.3]])


def test_prior_corrected_argmax_by_hand():
    from taosr.decision import DecisionRule

    prior = tuple(TWO_ROWS.mean(axis=0))
    assert np.allclose(prior, (0.45, 0.26, 0.115, 0.175))
    assert DecisionRule("argmax", level_prior=prior).levels(TWO_ROWS).tolist() == [4, 4]  # tau 0: plain argmax
    # tau 1: P / prior = (1.11, 1.23, 1.13, 0.29) and (0.89, 0.77, 0.87, 1.71)
    assert DecisionRule("argmax", prior_tau=1.0, level_prior=prior).levels(TWO_ROWS).tolist() == [3, 1]
    # tau 0.5: row 2 turns to level 1 once tau * log(0.45 / 0.175) > log(0.4 / 0.3), i.e. tau > 0.305;
    # row 1 keeps level 4 while tau * log(0.45 / 0.26) < log(0.5 / 0.32), i.e. tau < 0.81
    assert DecisionRule("argmax", prior_tau=0.5, level_prior=prior).levels(TWO_ROWS).tolist() == [4, 1]
    assert DecisionRule("cumpt", beta=0.75).levels(TWO_ROWS).tolist() == [3, 1]  # tails 0.5/0.82 and 0.4/0.6/0.7


def test_choose_rule_prefers_cumpt_on_a_tie_and_the_smallest_correction_that_pays():
    from taosr.decision import DecisionRule, choose_rule

    # Gold (3, 1): CumPT at beta in (0.7, 0.82] and the argmax at tau 1 are both perfect; CumPT wins the tie.
    rule, rows = choose_rule(TWO_ROWS, [3, 1])
    assert rule == DecisionRule("cumpt", beta=0.75)
    assert len(rows) == 20 + 11 and {row["rule"] for row in rows} >= {
        "CumPT beta=0.75",
        "argmax",
        "prior-corrected argmax tau=0.4",
    }
    # Gold (4, 1): no beta gives both (row 1 needs beta <= 0.5, row 2 beta > 0.7); tau > 0.305 does.
    rule, _ = choose_rule(TWO_ROWS, [4, 1])
    assert rule.rule == "argmax" and rule.prior_tau == 0.4 and np.allclose(rule.level_prior, (0.45, 0.26, 0.115, 0.175))
    # By tiers (4 and 3 Good, 2 Mid, 1 Bad) CumPT at 0.75 answers (3, 1), both tiers right: it wins again.
    rule, rows = choose_rule(TWO_ROWS, [4, 1], metric="tier_accuracy")
    assert rule == DecisionRule("cumpt", beta=0.75) and max(row["tier_accuracy"] for row in rows) == 1.0


def test_a_rule_replaces_the_argmax_only_when_its_gain_is_beyond_noise():
    from taosr.decision import choose_rule

    # Two rows: tau 0.4 is perfect where the argmax gets one of two, but a resample of the same
    # row twice shows no gain, so the interval's low end is 0 and the argmax stays.
    rule, rows = choose_rule(TWO_ROWS, [4, 1], keep_argmax_within_noise=True)
    assert rule.rule == "argmax" and rule.prior_tau == 0.0
    assert next(r for r in rows if "gain_over_argmax" in r)["gain_over_argmax"]["low"] <= 0
    # 200 rows, half of them gold 1, where the model always leans to 4 (0.4 against 0.3 for 1):
    # the argmax never answers 1 (macro-F1 1/3 at best), the prior correction answers it on
    # every such row. A gain that size is beyond any resample's noise.
    probs = np.array([[0.4, 0.2, 0.1, 0.3]] * 100 + [[0.7, 0.1, 0.1, 0.1]] * 100)
    gold = [1] * 100 + [4] * 100
    rule, rows = choose_rule(probs, gold, keep_argmax_within_noise=True)
    assert rule.rule == "argmax" and rule.prior_tau > 0 and rule.levels(probs).tolist() == gold
    assert next(r for r in rows if "gain_over_argmax" in r)["gain_over_argmax"]["low"] > 0.3


def test_decision_rule_records_round_trip_and_old_records_mean_cumpt():
    from taosr.decision import DecisionRule

    rule = DecisionRule("argmax", prior_tau=0.3, level_prior=(2, 1, 1, 0.5))  # normalised on the way in
    assert np.isclose(sum(rule.level_prior), 1.0) and rule.level_prior[0] == pytest.approx(0.4444, abs=1e-4)
    assert DecisionRule.from_record({"decision_rule": rule.to_record()}) == rule
    assert DecisionRule.from_record({"cumpt_beta": 0.35}) == DecisionRule("cumpt", beta=0.35)
    assert DecisionRule.from_record({"format": "post_cot"}) is None
    for bad in ({"rule": "vote"}, {"beta": 0.0}, {"prior_tau": -1.0}, {"level_prior": (1, 1, 0, 1)}):
        with pytest.raises(ValueError):
            DecisionRule(**bad)


def test_paired_accuracy_gain_by_hand():
    from taosr.metrics import paired_accuracy_gain

    # Three responses of two questions each; b fixes one question of every response: +3/6.
    a = [1, 0, 1, 0, 1, 0]
    b = [1, 1, 1, 1, 1, 1]
    clusters = ["r1", "r1", "r2", "r2", "r3", "r3"]
    gain = paired_accuracy_gain(a, b, clusters, resamples=500)
    assert gain["delta"] == pytest.approx(0.5) and gain["clusters"] == 3 and gain["n"] == 6
    assert gain["low"] == gain["high"] == pytest.approx(0.5)  # every response gains the same: no spread
    assert gain["beyond_noise"]
    # One response gains both questions, one loses both, one holds: the mean is 0 and the
    # interval must straddle it (resampling whole responses: -2/6 .. +2/6 at the extremes).
    mixed = paired_accuracy_gain([0, 0, 1, 1, 1, 0], [1, 1, 0, 0, 1, 0], clusters, resamples=2000)
    assert mixed["delta"] == 0.0 and mixed["low"] < 0 < mixed["high"] and not mixed["beyond_noise"]
    assert -1.0 <= mixed["low"] and mixed["high"] <= 1.0
    with pytest.raises(ValueError, match="same non-empty"):
        paired_accuracy_gain([1, 0], [1], None)

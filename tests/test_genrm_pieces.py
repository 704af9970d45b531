"""The GenRM's questions and training examples, and diversified filtering: pure logic, hand-checked."""

import random

import pytest

from taosr.dynamic_sampling import FEW_PATHS, TYPE_CAPPED, DynamicBatch, distinct_paths, verdict_path
from taosr.formats import Reasoning, render
from taosr.genrm import AnnotatedRow, annotated_reasoning, corrupt, judge_examples, judge_messages

SHOE = Reasoning(
    "running shoes for women",
    "a Nike running shoe (size 8)",
    "match",
    "a shoe, as asked",
    "partial",
    "the colour is not stated",
    3,
)
LAMP = Reasoning("desk lamp", "an IKEA desk lamp", "match", "a lamp, as asked", "match", "no further requirement", 4)


def rows():
    return [
        AnnotatedRow("running shoes women", "Title: Nike Pegasus", SHOE, (1, 2, 3, 4, 5)),
        AnnotatedRow("desk lamp", "Title: IKEA Forsa", LAMP, (1, 2, 3, 4, 5)),
    ]


def test_a_question_shows_the_steps_up_to_the_one_it_asks_about():
    lines = SHOE.step_lines()[:3]
    user = judge_messages("running shoes women", "Title: Nike Pegasus", lines)[1]["content"]
    assert user.endswith(f"Reasoning so far:\n{lines[0]}\n{lines[1]}\n{lines[2]}\n\nIs step 3 correct?")
    with pytest.raises(ValueError, match="1 to 5 step lines"):
        judge_messages("q", "item", [])


def test_corruptions_make_exactly_the_chosen_step_wrong():
    rng = random.Random(0)
    assert corrupt(SHOE, 1, rng, LAMP).step_lines() == [LAMP.step_lines()[0]] + SHOE.step_lines()[1:]
    assert corrupt(SHOE, 1, rng, SHOE) is None  # the other row restates the same query: not wrong
    assert corrupt(SHOE, 2, rng, None) is None
    for _ in range(10):
        assert corrupt(SHOE, 3, rng).category_verdict in ("partial", "mismatch")
        assert corrupt(SHOE, 4, rng).attribute_verdict in ("match", "violated", "unknown")
        assert corrupt(SHOE, 5, rng).decision in (1, 2, 4)
    wrong = corrupt(SHOE, 4, rng)
    assert [a == b for a, b in zip(wrong.step_lines(), SHOE.step_lines())] == [True, True, True, False, True]


def test_training_examples_are_one_yes_and_one_no_per_row():
    examples = judge_examples(rows(), random.Random(3))
    assert [e.answer for e in examples] == ["Yes", "No", "Yes", "No"]
    shoe_yes, shoe_no = examples[0], examples[1]
    assert shoe_yes.step_lines == tuple(SHOE.step_lines()[: shoe_yes.step])
    assert shoe_no.step_lines[:-1] == tuple(SHOE.step_lines()[: shoe_no.step - 1])
    assert shoe_no.step_lines[-1] != SHOE.step_lines()[shoe_no.step - 1]


def test_held_out_examples_ask_about_every_judged_step_both_ways():
    examples = judge_examples(rows(), random.Random(0), every_step=True)
    assert len(examples) == 20  # 2 rows x 5 steps x (correct, corrupted)
    assert sorted((e.step, e.answer) for e in examples[:10]) == sorted(
        [(s, a) for s in range(1, 6) for a in ("Yes", "No")]
    )
    # No other row to borrow a wrong restatement from: steps 1-2 are left out both ways, so the
    # answers stay balanced.
    lonely = judge_examples(rows()[:1], random.Random(0), every_step=True)
    assert sorted((e.step, e.answer) for e in lonely) == [
        (3, "No"),
        (3, "Yes"),
        (4, "No"),
        (4, "Yes"),
        (5, "No"),
        (5, "Yes"),
    ]


def test_annotations_full_partial_and_unusable():
    full = {field: getattr(SHOE, field) for field in Reasoning.__dataclass_fields__}
    assert annotated_reasoning(full, None) == (SHOE, (1, 2, 3, 4, 5))
    # a person judged the decision only: the CoT teacher's text fills the rest, only step 5 is checked
    reasoning, judged = annotated_reasoning('{"decision": 2}', LAMP)
    assert reasoning.decision == 2 and reasoning.item == LAMP.item and judged == (1, 2, 5)
    assert annotated_reasoning({"decision": 2}, None) is None
    assert annotated_reasoning({"category_verdict": "sort of"}, LAMP) is None
    assert annotated_reasoning(None, LAMP) is None and annotated_reasoning("{}", LAMP) is None


def test_verdict_paths_of_responses():
    assert verdict_path(render("post_cot", 3, SHOE)) == ("match", "partial", 3)
    assert verdict_path("4\nnot the steps") == ("unparsed",)
    texts = [render("post_cot", 3, SHOE), render("post_cot", 3, SHOE), render("post_cot", 4, LAMP), "garbage", ""]
    assert distinct_paths(texts) == 3


def test_diversified_filtering_prefers_more_paths_drops_too_few_and_caps_query_types():
    batch = DynamicBatch(target=4, min_pass_rate=0.0, max_pass_rate=1.0, diverse=True, min_paths=2, type_cap=0.5)
    varied = ([1, 0], [True, False])
    groups = ["a", "b", "c", "d", "e", "f"]
    paths = [2, 1, 3, 2, 4, 2]
    types = ["plain", "plain", "plain", "negation", "plain", "knowledge"]
    batch.add_round(groups, [varied[0]] * 6, [varied[1]] * 6, paths=paths, query_types=types)
    # b has one path (dropped); the rest by paths: e(4) c(3) a(2) d(2) f(2); plain is capped at 2 of 4
    assert batch.groups == ["e", "c", "d", "f"]
    assert batch.counts[FEW_PATHS] == 1 and batch.counts[TYPE_CAPPED] == 1
    stats = batch.stats()
    assert stats["distinct_paths_mean"] == pytest.approx((4 + 3 + 2 + 2) / 4)
    assert stats["top_query_type_share"] == 0.5 and stats["dropped_fraction"] == pytest.approx(2 / 6)


def test_without_diversity_the_batch_ignores_paths():
    batch = DynamicBatch(target=2, min_pass_rate=0.0, max_pass_rate=1.0)
    batch.add_round(["a", "b"], [[1, 0]] * 2, [[True, False]] * 2, paths=[1, 1], query_types=["x", "x"])
    assert batch.groups == ["a", "b"] and "distinct_paths_mean" not in batch.stats()


def test_which_genrm_an_rl_stage_uses(tmp_path):
    import json

    from taosr.config import load_config
    from taosr.training.rl_stage import genrm_choice, genrm_model_for

    config = load_config(None, [f"run_dir={tmp_path}"])
    assert genrm_model_for(config, config.srpo) is None  # auto, and no genrm stage ran
    trained = tmp_path / "genrm" / "model"
    trained.mkdir(parents=True)
    (trained / "config.json").write_text("{}")
    assert "not measured" in genrm_choice(config, config.srpo)["reason"]  # no summary: not used
    summary = tmp_path / "genrm" / "summary.json"
    gain = {
        "n": 200,
        "clusters": 20,
        "accuracy_a": 0.52,
        "accuracy_b": 0.50,
        "delta": -0.02,
        "low": -0.08,
        "high": 0.04,
        "beyond_noise": False,
        "beats_base": False,
    }
    summary.write_text(json.dumps({"gain_over_base": gain}))
    left_out = genrm_choice(config, config.srpo)
    assert left_out["model"] is None
    assert "not used" in left_out["reason"] and "50.0%" in left_out["reason"] and "52.0%" in left_out["reason"]
    assert "within noise of its base" in left_out["reason"]
    summary.write_text(json.dumps({"gain_over_base": {**gain, "high": -0.01, "beyond_noise": True}}))
    assert "below its base beyond noise" in genrm_choice(config, config.srpo)["reason"]
    summary.write_text(
        json.dumps(
            {
                "gain_over_base": {
                    **gain,
                    "accuracy_b": 0.71,
                    "delta": 0.19,
                    "low": 0.12,
                    "high": 0.26,
                    "beyond_noise": True,
                    "beats_base": True,
                }
            }
        )
    )
    assert genrm_model_for(config, config.srpo) == str(trained)
    assert genrm_model_for(config, config.grpo) is None  # GRPO has outcome rewards only
    config.srpo.genrm = "none"
    assert genrm_model_for(config, config.srpo) is None
    config.srpo.genrm = str(trained)  # a named model is used without the check
    summary.write_text(json.dumps({"gain_over_base": gain}))
    assert genrm_model_for(config, config.srpo) == str(trained)
    config.srpo.genrm = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        genrm_model_for(config, config.srpo)

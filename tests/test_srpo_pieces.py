"""SRPO's pure pieces with hand-checked numbers: step segmentation, the offline verifier and its
precedence over the GenRM, and step-level advantages (lambda = 0 is GRPO exactly)."""

import math
import random

import pytest
import torch

from taosr.advantages import AdvantageInputs, get_estimator
from taosr.formats import Reasoning, ResponseFormat, render
from taosr.steps import segment, step_char_spans, step_token_spans
from taosr.verifier import OfflineVerifier, annotation_key, hybrid

REASONING = Reasoning(
    "a phone case, not pink",
    "a Spigen phone case (colour pink)",
    "match",
    "the item is a phone case",
    "violated",
    "colour is pink, which the query excludes",
    2,
)
TEXT = render(ResponseFormat.POST_COT, 2, REASONING)
NAN = math.nan


def test_step_char_spans_find_the_five_step_lines():
    spans = step_char_spans(TEXT)
    assert [TEXT[a:b].split(" ")[0] for a, b in spans] == ["1.", "2.", "3.", "4.", "5."]
    assert TEXT[spans[4][0] : spans[4][1]] == "5. Decision: 2-Mismatch"


@pytest.mark.parametrize("broken", ["2-Mismatch\n1. Query: a phone case", "no label\n" + TEXT, ""])
def test_broken_responses_get_no_spans(broken):
    assert step_char_spans(broken) is None


def test_step_token_spans_hand_checked():
    # tokens "L", "\n", "A", "B", "\n", "CD" over the text "L\nAB\nCD"
    assert step_token_spans([(2, 4), (5, 7)], [1, 2, 3, 4, 5, 7]) == [(2, 4), (5, 6)]
    assert step_token_spans([(2, 4), (5, 9)], [1, 2, 3, 4]) is None  # cut before the last step


def test_segmentation_with_a_real_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    spans = segment(tokenizer, TEXT, ids)
    assert len(spans) == 5
    assert all(a < b for a, b in spans) and all(spans[i][1] <= spans[i + 1][0] for i in range(4))
    for number, (a, b) in enumerate(spans, start=1):
        assert tokenizer.decode(ids[a:b]).strip().startswith(f"{number}.")


def test_verifier_judges_steps_3_to_5_and_takes_precedence_over_the_genrm():
    key = annotation_key(REASONING.query, "item-1")
    truth = {"category_verdict": "match", "attribute_verdict": "match", "decision": 2}
    verifier = OfflineVerifier({key: truth})
    rewards = verifier.step_rewards(key, REASONING)
    assert rewards[:2] == pytest.approx([NAN, NAN], nan_ok=True) and rewards[2:] == [1.0, 0.0, 1.0]
    assert all(math.isnan(r) for r in verifier.step_rewards("unknown", REASONING))
    combined, sources = hybrid(rewards, [0.9, 0.8, 0.2, 0.9, 0.1])
    assert combined == [0.9, 0.8, 1.0, 0.0, 1.0]
    assert sources == ["genrm", "genrm", "verifier", "verifier", "verifier"]
    combined, sources = hybrid(verifier.step_rewards("unknown", REASONING), None)
    assert sources == ["none"] * 5


def test_verifier_coverage_keeps_a_stable_share():
    rows = [{"query": f"q{i}", "item_id": f"i{i}", "step_annotations": '{"decision": 4}'} for i in range(2000)]
    covered = OfflineVerifier.from_rows(rows, coverage=0.3, seed=1)
    assert 0.26 < len(covered.annotations) / 2000 < 0.34
    assert covered.annotations == OfflineVerifier.from_rows(rows, coverage=0.3, seed=1).annotations


def _srpo(rewards, step_rewards, spans, width, **extras):
    mask = torch.ones(len(spans), width)
    inputs = AdvantageInputs(
        torch.tensor(rewards), mask, extras={"step_rewards": torch.tensor(step_rewards), "step_spans": spans, **extras}
    )
    return get_estimator("srpo")(inputs)


def test_srpo_step_advantages_hand_checked():
    # one group of two rollouts, one scored step; outcome advantages +1 / -1
    advantages, metrics = _srpo([[1.0, 0.0]], [[[1.0], [0.0]]], [[(1, 3)], [(0, 2)]], 4, lam=0.5, critical_weight=2.0)
    # step mean 0.5, majority "right": rollout 0 agrees (w=1): +0.5*0.5; rollout 1 is critical (w=2): -0.5*2*0.5
    expected = torch.tensor([[1.0, 1.25, 1.25, 1.0], [-1.5, -1.5, -1.0, -1.0]])
    assert torch.allclose(advantages, expected, atol=1e-5)
    assert metrics["critical_step_fraction"] == 0.5 and metrics["unsegmented_rollouts"] == 0


def test_srpo_with_lambda_zero_is_grpo_exactly():
    rng = random.Random(0)
    rewards = [[float(rng.random() > 0.5) for _ in range(4)] for _ in range(3)]
    steps = [[[rng.random() for _ in range(5)] for _ in range(4)] for _ in range(3)]
    spans = [[(i, i + 2) for i in range(0, 10, 2)] for _ in range(12)]
    srpo, _ = _srpo(rewards, steps, spans, 12, lam=0.0, critical_weight=3.0)
    grpo, _ = get_estimator("grpo")(AdvantageInputs(torch.tensor(rewards), torch.ones(12, 12)))
    assert torch.equal(srpo, grpo)


def test_unscored_steps_and_unsegmented_rollouts_get_the_outcome_advantage_only():
    advantages, metrics = _srpo([[1.0, 0.0]], [[[NAN], [0.0]]], [[(0, 2)], None], 3, lam=1.0)
    assert torch.allclose(advantages, torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]), atol=1e-5)
    assert metrics["unsegmented_rollouts"] == 1 and metrics["scored_step_fraction"] == 0.0


def test_srpo_starts_from_the_last_policy_before_it_or_beside_grpo(tmp_path):
    from taosr.config import load_config
    from taosr.ray_jobs import srpo

    for stage in ("sft", "dpo", "grpo"):
        (tmp_path / stage / "model").mkdir(parents=True)
        (tmp_path / stage / "model" / "config.json").write_text("{}")
    config = load_config(None, [f"run_dir={tmp_path}"])
    assert srpo.start_model_for(config).endswith("grpo/model")
    config = load_config(None, [f"run_dir={tmp_path}", "srpo.start_from=dpo"])
    assert srpo.start_model_for(config).endswith("dpo/model")
    (tmp_path / "grpo" / "model" / "config.json").unlink()
    assert srpo.start_model_for(load_config(None, [f"run_dir={tmp_path}"])).endswith("dpo/model")

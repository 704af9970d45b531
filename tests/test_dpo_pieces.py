"""DPO loss and preference-pair construction (pure pieces of stage 2), hand-checked."""

import math
import random

import pytest
import torch

from taosr.losses import dpo_loss, sequence_logprobs
from taosr.preferences import ORACLE, SELF_CORRECTION, Sample, build_pairs, pair_counts, pass_rate
from taosr.sft_examples import IGNORE_INDEX


def test_dpo_loss_value_and_gradient_by_hand():
    policy_chosen = torch.tensor([-1.0], requires_grad=True)
    policy_rejected = torch.tensor([-2.0], requires_grad=True)
    loss, metrics = dpo_loss(policy_chosen, policy_rejected, torch.tensor([-1.5]), torch.tensor([-1.5]), beta=0.1)
    # rewards: 0.1 * 0.5 = 0.05 and 0.1 * -0.5 = -0.05; margin 0.1; loss = log(1 + e^-0.1)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.1)), rel=1e-6)
    assert float(metrics["reward_margin"]) == pytest.approx(0.1)
    assert float(metrics["reward_accuracy"]) == 1.0
    loss.backward()
    sigma = 1 / (1 + math.exp(0.1))  # sigmoid(-margin)
    assert float(policy_chosen.grad) == pytest.approx(-0.1 * sigma, rel=1e-5)
    assert float(policy_rejected.grad) == pytest.approx(0.1 * sigma, rel=1e-5)


def test_dpo_at_the_reference_is_log_two_and_pushes_chosen_up():
    chosen = torch.tensor([-3.0, -1.0], requires_grad=True)
    rejected = torch.tensor([-2.0, -4.0], requires_grad=True)
    loss, metrics = dpo_loss(chosen, rejected, chosen.detach().clone(), rejected.detach().clone(), beta=0.5)
    assert loss.item() == pytest.approx(math.log(2))
    assert float(metrics["reward_margin"]) == 0.0
    loss.backward()
    # At policy == reference the margin is 0 but the gradient is not: -beta/2 per pair, averaged over 2.
    assert chosen.grad.tolist() == pytest.approx([-0.125, -0.125])
    assert rejected.grad.tolist() == pytest.approx([0.125, 0.125])


def test_the_chosen_nll_term_by_hand():
    chosen = torch.tensor([-6.0, -2.0], requires_grad=True)
    rejected = torch.tensor([-5.0, -5.0])
    plain, _ = dpo_loss(chosen, rejected, chosen.detach().clone(), rejected.clone(), beta=0.5)
    loss, metrics = dpo_loss(
        chosen,
        rejected,
        chosen.detach().clone(),
        rejected.clone(),
        beta=0.5,
        nll_weight=2.0,
        chosen_tokens=torch.tensor([3, 4]),
    )
    # per-token NLL: 6/3 = 2 and 2/4 = 0.5, mean 1.25; loss = log 2 + 2 * 1.25
    assert float(metrics["chosen_nll"]) == pytest.approx(1.25)
    assert loss.item() == pytest.approx(plain.item() + 2.5)
    loss.backward()
    # DPO part -beta/2 per pair averaged over 2 = -0.125; NLL part -2 / tokens / 2 pairs
    assert chosen.grad.tolist() == pytest.approx([-0.125 - 1 / 3, -0.125 - 0.25])
    with pytest.raises(ValueError, match="chosen_tokens"):
        dpo_loss(chosen, rejected, chosen, rejected, nll_weight=1.0)


def test_label_smoothing_is_symmetric():
    m = torch.tensor([0.0])
    loss, _ = dpo_loss(m + 1, m, m, m, beta=1.0, label_smoothing=0.5)
    assert loss.item() == pytest.approx(0.5 * (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1))))


def test_sequence_logprobs_sum_only_the_response_tokens():
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]]]))
    labels = torch.tensor([[IGNORE_INDEX, 1, 1]])
    assert float(sequence_logprobs(logits, labels)[0]) == pytest.approx(math.log(0.5) + math.log(0.75))


def test_first_token_weight_counts_each_rows_level_token_that_many_times():
    # Row 0's response starts at column 1, row 1's at column 2 (a longer prompt): the weight
    # lands on each row's own first labelled token, never on a later one or the prompt.
    logits = torch.log(
        torch.tensor(
            [[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5], [0.2, 0.8], [0.6, 0.4]]]
        )
    )
    labels = torch.tensor([[IGNORE_INDEX, 1, 1, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX, 0, 0]])
    weighted = sequence_logprobs(logits, labels, first_token_weight=10.0)
    assert float(weighted[0]) == pytest.approx(10 * math.log(0.5) + math.log(0.75))
    assert float(weighted[1]) == pytest.approx(10 * math.log(0.5) + math.log(0.2))
    plain = sequence_logprobs(logits, labels)
    assert float(plain[1]) == pytest.approx(math.log(0.5) + math.log(0.2))


def test_decision_scale_must_be_positive():
    from taosr.config import DpoConfig

    with pytest.raises(ValueError, match="decision_scale"):
        DpoConfig(decision_scale=0.0)


SAMPLES = [
    Sample("4-Excellent\n...a", 4),
    Sample("2-Mismatch\n...b", 2),
    Sample("2-Mismatch\n...b", 2),
    Sample("garbled", None),
    Sample("4-Excellent\n...c", 4),
]


def test_self_correction_pairs_when_some_sample_is_right():
    pairs = build_pairs("p1", SAMPLES, gold=4, oracle_response="4-Excellent\n...oracle", max_pairs=10)
    assert {p.kind for p in pairs} == {SELF_CORRECTION}
    assert {(p.chosen, p.rejected) for p in pairs} == {
        (c, w) for c in ("4-Excellent\n...a", "4-Excellent\n...c") for w in ("2-Mismatch\n...b", "garbled")
    }
    assert len(pairs) == 4  # the duplicate wrong sample is merged
    assert pass_rate(SAMPLES, 4) == pytest.approx(0.4)


def test_oracle_pairs_when_every_sample_is_wrong_and_none_without_a_wrong_one():
    pairs = build_pairs(
        "p2", SAMPLES, gold=3, oracle_response="3-Related\n...oracle", max_pairs=2, rng=random.Random(1)
    )
    assert len(pairs) == 2 and all(p.kind == ORACLE and p.chosen == "3-Related\n...oracle" for p in pairs)
    assert build_pairs("p3", SAMPLES, gold=3, oracle_response=None) == []
    assert build_pairs("p4", [Sample("4-Excellent", 4)] * 3, gold=4, oracle_response="x") == []
    assert pair_counts(p.kind for p in pairs) == {SELF_CORRECTION: 0, ORACLE: 2}


def test_pair_choice_is_seeded():
    first = build_pairs("p", SAMPLES, 4, None, max_pairs=1, rng=random.Random(7))
    again = build_pairs("p", SAMPLES, 4, None, max_pairs=1, rng=random.Random(7))
    assert first == again and len(first) == 1


def test_dpo_training_order_depends_on_the_pairs_and_seed_not_on_how_they_arrived():
    import pyarrow as pa

    from taosr.training.dpo_pairs import with_training_order

    keys = [f"pair-{i}" for i in range(20)]

    def order(pair_keys, seed):
        table = with_training_order(pa.table({"pair_key": pair_keys}), seed=seed)
        return [k for _, k in sorted(zip(table.column("training_order").to_pylist(), pair_keys))]

    assert order(keys, 0) == order(list(reversed(keys)), 0)  # same pairs in another order: same training order
    assert order(keys, 0) != order(keys, 1) and sorted(order(keys, 0)) == sorted(keys)  # a seeded permutation


def test_the_dpo_step_counts_only_chosen_response_tokens_for_its_nll(tiny_model):
    from transformers import AutoModelForCausalLM

    from taosr.training.dpo_objective import dpo_step_loss

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    # chosen: 2 prompt tokens then 3 response tokens; rejected: 2 prompt tokens then 1 response token
    row = {
        "chosen_input_ids": [5, 6, 7, 8, 9],
        "chosen_labels": [IGNORE_INDEX, IGNORE_INDEX, 7, 8, 9],
        "rejected_input_ids": [5, 6, 10],
        "rejected_labels": [IGNORE_INDEX, IGNORE_INDEX, 10],
    }
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([row["chosen_input_ids"]])).logits
        chosen = float(sequence_logprobs(logits, torch.tensor([row["chosen_labels"]]))[0])
    row.update(reference_chosen=chosen, reference_rejected=-3.0)
    _, metrics, _ = dpo_step_loss(beta=0.1, label_smoothing=0.0, nll_weight=1.0)(model, [row])
    assert float(metrics["chosen_nll"]) == pytest.approx(-chosen / 3, rel=1e-5)

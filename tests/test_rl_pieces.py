"""GRPO's pure pieces with hand-checked numbers: rewards, group advantages, the clipped
policy loss with KL, dynamic sampling, and label-balanced prompt order."""

import math
import statistics

import pytest
import torch

from taosr.advantages import AdvantageInputs, get_estimator, group_zscore
from taosr.dynamic_sampling import KEPT, OUT_OF_WINDOW, ZERO_VARIANCE, DynamicBatch, group_verdict, lost_format_error
from taosr.formats import Reasoning, ResponseFormat, render
from taosr.label_balance import BalancedSampler, label_cv, prefilter_by_pass_rate, target_mix
from taosr.losses import clipped_policy_loss, kl_k3, token_logprobs
from taosr.rewards import outcome_reward

REASONING = Reasoning(
    "a headlamp", "a Petzl headlamp", "match", "the item is a headlamp", "match", "no further requirement", 4
)


def test_outcome_reward_is_first_token_correctness_and_zero_for_broken_format():
    good = render(ResponseFormat.POST_COT, 4, REASONING)
    assert outcome_reward(good, 4).reward == 1.0 and outcome_reward(good, 4).format_ok
    assert outcome_reward(good, 2).reward == 0.0 and not outcome_reward(good, 2).correct
    assert outcome_reward(good, 3, partial_credit=True).reward == pytest.approx(2 / 3)
    assert outcome_reward(good, 1, partial_credit=True).reward == 0.0
    broken = outcome_reward("4-Excellent\n1. Query: a headlamp", 4)
    assert (broken.reward, broken.correct, broken.format_ok) == (0.0, True, False)
    assert outcome_reward("4-Excellent\n1. Query: a headlamp", 4, format_gate=False).reward == 1.0
    assert outcome_reward("no label at all", 4).label is None
    lying = render(ResponseFormat.POST_COT, 4, REASONING).replace(
        "5. Decision: 4-Excellent", "5. Decision: 1-Irrelevant"
    )
    assert outcome_reward(lying, 4).hallucinated is True


def test_group_zscore_hand_checked():
    got = group_zscore(torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 1.0]]))
    std = math.sqrt(0.25 * 0.75)
    expected = [[0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std], [0, 0, 0, 0], [1, -1, -1, 1]]
    assert torch.allclose(got, torch.tensor(expected), atol=1e-5)


def test_group_zscore_vectorised_equals_a_loop():
    rewards = torch.rand(8, 5, generator=torch.Generator().manual_seed(0)).round()
    loop = [[(r - statistics.fmean(row)) / (statistics.pstdev(row) + 1e-6) for r in row] for row in rewards.tolist()]
    assert torch.allclose(group_zscore(rewards), torch.tensor(loop), atol=1e-5)


def test_grpo_estimator_puts_the_rollout_advantage_on_every_response_token():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    advantages, metrics = get_estimator("grpo")(AdvantageInputs(torch.tensor([[1.0, 0.0]]), mask))
    assert torch.allclose(advantages, torch.tensor([[1.0, 1.0, 0.0], [-1.0, -1.0, -1.0]]), atol=1e-5)
    assert metrics["outcome_advantage_abs_mean"] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="unknown advantage estimator"):
        get_estimator("nope")


def _one_token(logp, old, adv, ref=None, **kwargs):
    t = lambda v: torch.tensor([[float(v)]])  # noqa: E731
    return clipped_policy_loss(t(logp), t(old), t(adv), t(1), None if ref is None else t(ref), **kwargs)


def test_clipped_policy_loss_hand_checked():
    loss, metrics = _one_token(math.log(1.5), 0.0, 1.0, kl_coef=0.0)  # ratio 1.5 clipped to 1.2
    assert float(loss) == pytest.approx(-1.2) and metrics["clip_fraction"] == 1.0
    loss, metrics = _one_token(math.log(1.5), 0.0, -1.0, kl_coef=0.0)  # pessimistic side: unclipped
    assert float(loss) == pytest.approx(1.5) and metrics["clip_fraction"] == 0.0
    loss, _ = _one_token(0.0, 0.0, 5.0, kl_coef=0.0)  # advantage clamped to +2
    assert float(loss) == pytest.approx(-2.0)
    loss, metrics = _one_token(0.0, 0.0, 0.0, ref=math.log(0.5), kl_coef=0.02)
    assert metrics["kl"] == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)
    assert float(loss) == pytest.approx(0.02 * (0.5 + math.log(2) - 1), abs=1e-7)
    assert float(kl_k3(torch.tensor(0.3), torch.tensor(0.3))) == 0.0


def test_policy_loss_aggregates_per_token_not_per_sequence():
    # Sequence 1 has one token with advantage 1, sequence 2 three tokens with advantage -1.
    logp = torch.zeros(2, 3)
    adv = torch.tensor([[1.0, 0, 0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    loss, _ = clipped_policy_loss(logp, logp, adv, mask, kl_coef=0.0)
    assert float(loss) == pytest.approx((-1 + 3 * 1) / 4)  # not (-1 + 1) / 2
    loss, _ = clipped_policy_loss(logp, logp, adv, mask, kl_coef=0.0, num_tokens=8.0)
    assert float(loss) == pytest.approx(2 / 8)


def test_policy_gradient_at_ratio_one_is_minus_the_advantage():
    logp = torch.zeros(1, 2, requires_grad=True)
    loss, _ = clipped_policy_loss(logp, torch.zeros(1, 2), torch.tensor([[0.5, -1.0]]), torch.ones(1, 2), kl_coef=0.0)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-0.25, 0.5]]))


def test_token_logprobs_divides_by_temperature():
    logits = torch.tensor([[[2.0, 0.0]]])
    assert float(token_logprobs(logits, torch.tensor([[0]]), temperature=2.0)) == pytest.approx(
        1.0 - math.log(math.e + 1.0)
    )


def test_group_verdicts_filter_on_variance_and_the_pass_rate_window():
    assert group_verdict([1, 1, 1, 1], [True] * 4, 0.01, 0.9) == ZERO_VARIANCE
    assert group_verdict([0, 0, 0, 0], [False] * 4, 0.01, 0.9) == ZERO_VARIANCE
    assert group_verdict([1, 0, 0, 0], [True, False, False, False], 0.01, 0.9) == KEPT
    ten = [True] * 9 + [False]
    assert group_verdict([float(c) for c in ten], ten, 0.01, 0.8) == OUT_OF_WINDOW
    # partial credit: all wrong, yet the rewards vary, so the group carries signal
    assert group_verdict([0.0, 2 / 3, 1 / 3], [False] * 3, 0.0, 0.9) == KEPT


def test_dynamic_batch_refills_until_full_and_counts_what_it_dropped():
    batch = DynamicBatch(target=3, min_pass_rate=0.01, max_pass_rate=0.9)
    batch.add_round(["a", "b", "c"], [[1, 1], [1, 0], [0, 0]], [[True, True], [True, False], [False, False]])
    assert not batch.full and batch.missing == 2
    batch.add_round(
        ["d", "e", "f", "g"],
        [[0, 1], [1, 1], [1, 0], [0, 1]],
        [[False, True], [True, True], [True, False], [False, True]],
    )
    assert batch.full and batch.groups == ["b", "d", "f"]
    stats = batch.stats()
    assert stats == {
        "groups_seen": 7,
        "groups_kept": 3,
        "rounds": 2,
        "dropped_fraction": 3 / 7,
        "dropped_zero_variance": 3,
        "dropped_out_of_window": 0,
    }


def test_label_cap_keeps_each_level_to_its_share_of_the_kept_groups():
    from taosr.dynamic_sampling import LABEL_CAPPED

    varied = ([1, 0], [True, False])
    batch = DynamicBatch(target=4, min_pass_rate=0.0, max_pass_rate=1.0, label_cap=0.5)  # at most 2 per level
    batch.add_round(["a", "b", "c", "d"], [varied[0]] * 4, [varied[1]] * 4, labels=[4, 4, 4, 2])
    assert batch.groups == ["a", "b", "d"] and batch.counts[LABEL_CAPPED] == 1
    batch.add_round(["e", "f"], [varied[0]] * 2, [varied[1]] * 2, labels=[4, 1])
    assert batch.full and batch.groups == ["a", "b", "d", "f"] and batch.kept_labels == [4, 4, 2, 1]
    assert batch.stats()["dropped_label_capped"] == 2
    even = DynamicBatch(target=8, min_pass_rate=0.0, max_pass_rate=1.0, label_cap=0.25)
    even.add_round(list(range(12)), [varied[0]] * 12, [varied[1]] * 12, labels=[4, 4, 4, 2, 2, 2, 1, 1, 1, 3, 3, 3])
    assert label_cv(even.kept_labels) == 0.0 and len(even.groups) == 8
    with pytest.raises(ValueError, match="gold level"):
        DynamicBatch(target=2, label_cap=0.5).add_round(["a"], [varied[0]], [varied[1]])


def test_label_cap_outside_its_range_is_refused_when_the_config_loads():
    from taosr.config import GrpoConfig

    with pytest.raises(ValueError, match="label_cap"):
        GrpoConfig(label_cap=0.2)


def test_label_cv_and_target_mix_hand_checked():
    assert label_cv([4, 4, 2, 1]) == pytest.approx(math.sqrt(0.125 / 4) / 0.25)
    assert label_cv([1, 2, 3, 4]) == 0.0
    labels = [4] * 6 + [2] * 2 + [1] + [3]
    assert target_mix(labels, 0.0) == pytest.approx({1: 0.25, 2: 0.25, 3: 0.25, 4: 0.25})
    natural = target_mix(labels, label_cv(labels))
    assert natural == pytest.approx({1: 0.1, 2: 0.2, 3: 0.1, 4: 0.6})
    halfway = target_mix(labels, label_cv(labels) / 2)
    assert halfway[4] == pytest.approx((0.25 + 0.6) / 2)


def test_balanced_sampler_balances_and_resumes_exactly():
    labels = [4] * 6 + [2] * 2 + [1] + [3]
    sampler = BalancedSampler(labels, target_cv=0.0, seed=3)
    first = sampler.take(8)
    assert sorted(labels[i] for i in first) == [1, 1, 2, 2, 3, 3, 4, 4]
    assert label_cv([labels[i] for i in first]) == 0.0
    uninterrupted = BalancedSampler(labels, seed=3).take(20)
    resumed = BalancedSampler(labels, seed=3)
    part = resumed.take(7)
    state = resumed.state_dict()
    fresh = BalancedSampler(labels, seed=3)
    fresh.load_state_dict(state)
    assert part + fresh.take(13) == uninterrupted


def test_balanced_sampler_resumes_exactly_at_an_epoch_boundary():
    labels = [4, 3, 2, 1] * 3  # three prompts per level: 12 draws end every level's first epoch together
    uninterrupted = BalancedSampler(labels, seed=5).take(24)
    first_epoch, second_epoch = uninterrupted[:12], uninterrupted[12:]
    assert sorted(first_epoch) == sorted(second_epoch) == list(range(12))  # each epoch: every prompt once
    assert first_epoch != second_epoch  # ...in a fresh order
    stopped = BalancedSampler(labels, seed=5)
    assert stopped.take(12) == first_epoch
    restarted = BalancedSampler(labels, seed=5)
    restarted.load_state_dict(stopped.state_dict())
    assert restarted.take(12) == second_epoch


def test_prefilter_keeps_prompts_inside_the_offline_pass_rate_window():
    assert prefilter_by_pass_rate({"a": 0.0, "b": 0.4, "c": 1.0, "d": 0.8}, 0.2, 0.8) == {"b", "d"}


def test_response_window_gives_the_full_grid_values_on_response_tokens(tiny_model):
    """The learner computes logits only from the first response column on; on every response
    token its log-probs must equal those of the full [B, T - 1] grid."""
    from transformers import AutoModelForCausalLM

    from taosr.training.policy_update import _logprobs_and_entropy, response_window
    from taosr.rollout_batch import pack_rollouts

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    rows = [
        {"prompt_ids": [5, 6, 7, 8, 9], "response_ids": [10, 11], "old_logprobs": [0.0] * 2, "advantages": [1.0] * 2},
        {"prompt_ids": [5, 6, 7], "response_ids": [12, 13, 14, 15], "old_logprobs": [0.0] * 4, "advantages": [1.0] * 4},
    ]
    packed = pack_rollouts(rows)
    view = response_window(packed)
    assert view["first"] == 2 and view["response_mask"].sum() == 6
    with torch.no_grad():
        windowed, _ = _logprobs_and_entropy(model, view, 0.7, False)
        logits = model(input_ids=packed["input_ids"], attention_mask=packed["attention_mask"]).logits[:, :-1]
        full = token_logprobs(logits, packed["targets"], 0.7)
    mask = packed["response_mask"].bool()
    assert torch.allclose(windowed[view["response_mask"].bool()], full[mask], atol=1e-5)


def test_one_token_rollouts_share_their_prompt_pass_with_the_same_loss_and_gradients(tiny_model):
    """Two groups of one-token rollouts (prompts of different lengths, interleaved, with a
    repeated token): one forward per distinct prompt must give the loss, KL, entropy and every
    parameter's gradient of one forward per rollout."""
    from transformers import AutoModelForCausalLM

    from taosr.training.policy_update import _logprobs_and_entropy, response_window, shared_prompt_window
    from taosr.rollout_batch import pack_rollouts

    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    with torch.no_grad():  # a reference that differs from the policy, so the KL term is not 0
        for param in reference.parameters():
            param.add_(0.01 * torch.randn_like(param))
    long, short = [5, 6, 7, 8, 9, 10], [5, 6, 7]
    prompts, tokens = [long, short, long, long, short, short], [11, 12, 13, 11, 14, 12]
    rows = [
        {"prompt_ids": p, "response_ids": [t], "old_logprobs": [-1.5 + 0.1 * i], "advantages": [(-1.0) ** i]}
        for i, (p, t) in enumerate(zip(prompts, tokens))
    ]

    def loss_and_grads(view):
        policy.zero_grad()
        with torch.no_grad():
            ref, _ = _logprobs_and_entropy(reference, view, 0.7, False)
        logprobs, entropy = _logprobs_and_entropy(policy, view, 0.7, True)
        mask = view["response_mask"]
        loss, metrics = clipped_policy_loss(
            logprobs, view["old_logprobs"], view["advantages"], mask, ref, kl_coef=0.05, num_tokens=float(mask.sum())
        )
        loss.backward()
        grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
        return loss.detach(), metrics["kl"], float((entropy * mask).sum()), logprobs[mask.bool()].detach(), grads

    shared = shared_prompt_window(rows)
    assert shared["input_ids"].shape[0] == 2 and shared["rows"].tolist() == [0, 1, 0, 0, 1, 1]
    full = loss_and_grads(response_window(pack_rollouts(rows)))
    one_pass = loss_and_grads(shared)
    assert torch.allclose(one_pass[3], full[3], atol=1e-5)
    assert torch.allclose(one_pass[0], full[0], atol=1e-6)
    assert one_pass[1] == pytest.approx(full[1], abs=1e-6) and one_pass[1] > 0
    assert one_pass[2] == pytest.approx(full[2], rel=1e-5)
    assert full[4].keys() == one_pass[4].keys()
    for name, grad in full[4].items():
        assert torch.allclose(one_pass[4][name], grad, atol=1e-6), name


def test_longer_responses_keep_the_full_window():
    from taosr.training.policy_update import shared_prompt_window

    rows = [
        {"prompt_ids": [5, 6], "response_ids": [7], "old_logprobs": [0.0], "advantages": [1.0]},
        {"prompt_ids": [5, 6], "response_ids": [7, 8], "old_logprobs": [0.0, 0.0], "advantages": [1.0, 1.0]},
    ]
    assert shared_prompt_window(rows) is None


def test_rl_layouts_the_loop_cannot_run_are_refused_before_any_actor_starts():
    from taosr.config import GrpoConfig
    from taosr.training.rl_stage import check_layout

    check_layout(GrpoConfig(zero_stage=3))  # ZeRO-3 learners sync bucket by bucket
    with pytest.raises(ValueError, match="weight_sync"):
        GrpoConfig(weight_sync="nccl")
    with pytest.raises(ValueError, match="sync_bucket_mb"):
        GrpoConfig(sync_bucket_mb=0)
    with pytest.raises(ValueError, match="group_size must be at least 2"):
        check_layout(GrpoConfig(group_size=1, prompts_per_step=8, micro_batch_size=8))
    with pytest.raises(ValueError, match="divide evenly"):
        check_layout(GrpoConfig(prompts_per_step=3, group_size=3, micro_batch_size=8))
    check_layout(GrpoConfig())  # the defaults are a valid layout


def test_the_loop_stops_only_when_stalled_by_a_lost_format():
    from dataclasses import replace

    from taosr.config import GrpoConfig

    rl = GrpoConfig()  # format_gate on, stall alarm after 3 steps, abort at 95% format errors
    assert rl.format_gate and rl.stall_alarm_steps == 3 and rl.lost_format_abort == 0.95
    message = lost_format_error("grpo", 7, 3, 1.0, rl)
    assert message.startswith("grpo: 3 steps in a row kept no group, and 100% of step 7's rollouts broke")
    assert "grpo.lost_format_abort=1.1" in message
    assert lost_format_error("grpo", 7, 2, 1.0, rl) is None  # not stalled long enough yet
    assert lost_format_error("grpo", 7, 3, 0.94, rl) is None  # stalled for another reason (all right / all wrong)
    assert (
        lost_format_error("grpo", 7, 3, 1.0, replace(rl, format_gate=False)) is None
    )  # label alone decides the reward
    assert lost_format_error("grpo", 7, 3, 1.0, replace(rl, lost_format_abort=1.1)) is None


def test_every_input_an_estimator_declares_has_a_provider_in_the_loop():
    from taosr.advantages import ESTIMATOR_NEEDS, estimator_needs
    from taosr.training.rl import INPUT_PROVIDERS

    assert estimator_needs("grpo") == () and estimator_needs("srpo") == ("step_rewards",)
    declared = {need for needs in ESTIMATOR_NEEDS.values() for need in needs}
    assert declared <= set(INPUT_PROVIDERS), declared - set(INPUT_PROVIDERS)
    with pytest.raises(ValueError, match="unknown advantage estimator"):
        estimator_needs("srp")

"""Losses. Pure torch, no Ray."""

from __future__ import annotations

import torch

from taosr.sft_examples import IGNORE_INDEX


def masked_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token negative log-likelihood over the labelled (unmasked) tokens.

    ``logits`` is [B, T, V] for inputs [B, T]; the label of position t is predicted at t-1.
    Returns (loss, number of tokens it averages over).
    """
    shifted_logits = logits[:, :-1, :].float()
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    count = mask.sum()
    if count == 0:
        return shifted_logits.sum() * 0.0, count
    log_probs = torch.log_softmax(shifted_logits, dim=-1)
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(picked * mask).sum() / count, count


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of the log-probabilities of the labelled tokens of each sequence: [B, T, V] -> [B].

    Same shift and mask as ``masked_token_nll``; this is log pi(response | prompt), what DPO
    compares between the policy and the frozen reference.
    """
    shifted_logits = logits[:, :-1, :].float()
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    picked = torch.log_softmax(shifted_logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(dim=-1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float = 0.1, label_smoothing: float = 0.0):
    """Direct preference optimisation on sequence log-probabilities (all [B]).

    Implicit rewards r = beta * (log pi - log pi_ref); loss = -log sigmoid(r_chosen - r_rejected),
    optionally smoothed for noisy preferences (conservative DPO). Returns (mean loss, metrics).
    """
    chosen_rewards = beta * (policy_chosen - reference_chosen)
    rejected_rewards = beta * (policy_rejected - reference_rejected)
    margin = chosen_rewards - rejected_rewards
    losses = -(1.0 - label_smoothing) * torch.nn.functional.logsigmoid(margin) \
        - label_smoothing * torch.nn.functional.logsigmoid(-margin)
    metrics = {
        "reward_chosen": chosen_rewards.detach().mean(),
        "reward_rejected": rejected_rewards.detach().mean(),
        "reward_margin": margin.detach().mean(),
        "reward_accuracy": (margin.detach() > 0).float().mean(),
    }
    return losses.mean(), metrics

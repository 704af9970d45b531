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

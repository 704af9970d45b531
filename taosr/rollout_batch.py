"""Rollouts -> padded training tensors, aligned for next-token log-probs.

A sequence is its prompt's token ids followed by the response's. The model's logits at position
t predict token t + 1, so every per-token array here is on the shifted grid [B, T - 1]: entry
t belongs to token t + 1, and the response mask is 1 exactly on the response tokens.
"""

from __future__ import annotations

from typing import Sequence

import torch


def pack_rollouts(rows: Sequence[dict], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Each row: ``prompt_ids``, ``response_ids``, and per-response-token lists ``old_logprobs``
    and ``advantages``. Returns input_ids and attention_mask [B, T]; targets, response_mask,
    old_logprobs and advantages [B, T - 1]."""
    if not rows:
        raise ValueError("no rollouts to pack")
    width = max(len(r["prompt_ids"]) + len(r["response_ids"]) for r in rows)
    batch = len(rows)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    attention = torch.zeros((batch, width), dtype=torch.long)
    response_mask = torch.zeros((batch, width - 1), dtype=torch.float32)
    old_logprobs = torch.zeros((batch, width - 1), dtype=torch.float32)
    advantages = torch.zeros((batch, width - 1), dtype=torch.float32)
    for i, row in enumerate(rows):
        prompt, response = list(row["prompt_ids"]), list(row["response_ids"])
        if not response:
            raise ValueError("a rollout with no response tokens cannot be trained on")
        if len(row["old_logprobs"]) != len(response) or len(row["advantages"]) != len(response):
            raise ValueError("old_logprobs and advantages need one value per response token")
        length = len(prompt) + len(response)
        input_ids[i, :length] = torch.tensor(prompt + response)
        attention[i, :length] = 1
        span = slice(len(prompt) - 1, length - 1)
        response_mask[i, span] = 1.0
        old_logprobs[i, span] = torch.tensor(row["old_logprobs"], dtype=torch.float32)
        advantages[i, span] = torch.tensor(row["advantages"], dtype=torch.float32)
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "targets": input_ids[:, 1:],
        "response_mask": response_mask,
        "old_logprobs": old_logprobs,
        "advantages": advantages,
    }

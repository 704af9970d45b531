"""First-token scoring with a plain torch model: what SFT's validation reads while training.

The level distribution is the softmax over the four level tokens' logits at the position right
after the prompt, the same quantity the vLLM scorer and serving compute (docs/method.md section 7).
Prompts are left-padded so that position is the last column of every row, and only that
column's logits are computed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from taosr.metrics import LEVEL_ORDER, classification_metrics, expected_level, spearman


@torch.no_grad()
def first_token_scores(
    model, prompts: Sequence[Sequence[int]], level_ids: Sequence[int], pad_id: int, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """(P(level 1..4) [n, 4], log-softmax over the whole vocabulary at the level tokens [n, 4])."""
    was_training = model.training
    model.eval()
    level_index = torch.tensor(list(level_ids))
    probs, logprobs = [], []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            width = max(len(p) for p in chunk)
            ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in chunk])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift the positions
            device = next(model.parameters()).device
            logits = (
                model(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    position_ids=positions.to(device),
                    logits_to_keep=1,
                )
                .logits[:, -1, :]
                .float()
                .cpu()
            )
            at_levels = logits[:, level_index]
            probs.append(torch.softmax(at_levels, dim=-1))
            logprobs.append(torch.log_softmax(logits, dim=-1)[:, level_index])
    finally:
        model.train(was_training)
    return torch.cat(probs).numpy(), torch.cat(logprobs).numpy()


def validation_metrics(probs: np.ndarray, vocab_logprobs: np.ndarray, gold: Sequence[int]) -> dict:
    """Argmax-level metrics of first-token scores, plus the decision's cross-entropy (the mean
    -log P(gold level token) over the whole vocabulary, what SFT's decision term minimises)."""
    gold = [int(g) for g in gold]
    pred = [LEVEL_ORDER[i] for i in probs.argmax(axis=1)]
    metrics = classification_metrics(gold, pred)
    columns = [LEVEL_ORDER.index(g) for g in gold]
    metrics["decision_nll"] = float(-vocab_logprobs[np.arange(len(gold)), columns].mean())
    metrics["spearman"] = spearman([expected_level(p) for p in probs], gold)
    metrics["predicted_levels"] = {str(level): pred.count(level) for level in LEVEL_ORDER}
    return metrics

"""Losses. Pure torch, no Ray."""

from __future__ import annotations

import torch

from taosr.sft_examples import IGNORE_INDEX


def label_window_start(labels: torch.Tensor) -> int:
    """The first column whose logits a loss reads: the one that predicts the batch's earliest
    labelled token (0 when no token is labelled). Every column before it is prompt."""
    labelled = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    return max(int(labelled[0]) - 1, 0) if len(labelled) else 0


def labelled_logits(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    position_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) over the columns from ``label_window_start`` on, for ``masked_token_nll``
    and ``sequence_logprobs``, which give the same values as on the whole sequence. The model
    still reads every token; only the vocabulary projection and the float32 softmax skip the
    prompt columns, which are most of each sequence (a [B, T, 49152] tensor for SmolLM2).
    ``position_ids`` are needed with left padding (``pad_batch(left=True)``)."""
    start = label_window_start(labels)
    extra = {} if position_ids is None else {"position_ids": position_ids}
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=input_ids.shape[1] - start, **extra
    ).logits
    return logits, labels[:, start:]


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


def decision_weighted_nll(
    logits: torch.Tensor,
    labels: torch.Tensor,
    decision_index: torch.Tensor,
    decision_weight: float,
    example_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """SFT's loss with the level token weighed on its own (docs/method.md section 3).

    In a CoT response the decision is one token of ~90, and the others are predictable without
    deciding anything, so a plain token mean spends ~1% of the gradient on the decision. Here

        loss = w * decision_nll + (1 - w) * rest_nll

    where decision_nll is the (``example_weight``-weighted) mean NLL of each example's level
    token, at column ``decision_index`` of ``labels`` (-1: the example has none, e.g. a cut
    pre-CoT answer), and rest_nll the mean NLL of every other labelled token. ``w = 0`` falls
    back to ``masked_token_nll`` (the decision weighs as one token). ``logits`` and ``labels``
    are [B, T(, V)] and aligned (``labelled_logits`` output, indices shifted to its window).
    Returns (loss, {decision_nll, rest_nll}) with the parts detached.
    """
    if not 0.0 <= decision_weight <= 1.0:
        raise ValueError(f"decision_weight is a share of the loss, in [0, 1]; got {decision_weight}")
    shifted = logits[:, :-1, :].float()
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    nll = -torch.log_softmax(shifted, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    has_decision = decision_index >= 1
    rows = has_decision.nonzero(as_tuple=True)[0]
    columns = decision_index[rows] - 1  # the logits at t-1 predict the token at t
    decision_mask = torch.zeros_like(mask)
    decision_mask[rows, columns] = True
    if bool((decision_mask & ~mask).any()):
        raise ValueError("a decision_index points at a token that carries no label")
    rest_mask = mask & ~decision_mask
    rest = (nll * rest_mask).sum() / rest_mask.sum().clamp(min=1)
    decision_nll = nll[rows, columns]
    weights = torch.ones_like(decision_nll) if example_weight is None else example_weight[rows].to(nll.dtype)
    decision = (weights * decision_nll).sum() / weights.sum().clamp(min=1e-12) if len(rows) else nll.sum() * 0.0
    parts = {"decision_nll": decision.detach(), "rest_nll": rest.detach()}
    if decision_weight == 0.0:
        return (nll * mask).sum() / mask.sum().clamp(min=1), parts
    return decision_weight * decision + (1.0 - decision_weight) * rest, parts


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor, first_token_weight: float = 1.0) -> torch.Tensor:
    """Sum of the log-probabilities of the labelled tokens of each sequence: [B, T, V] -> [B].

    Same shift and mask as ``masked_token_nll``; this is log pi(response | prompt), what DPO
    compares between the policy and the frozen reference. The softmax runs over the labelled
    positions only: prompts are most of each sequence, and a float32 [B, T, V] copy is large.
    ``first_token_weight`` counts each sequence's first labelled token that many times (1: a
    plain sum). In a post-CoT response that token is the level: ``dpo.decision_scale``.
    """
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    rows = mask.nonzero(as_tuple=True)
    picked_logits = logits[:, :-1, :][rows].float()  # [M, V], M = labelled tokens in the batch
    picked = torch.log_softmax(picked_logits, dim=-1).gather(-1, targets[rows].unsqueeze(-1)).squeeze(-1)
    if first_token_weight != 1.0:
        first_column = mask.int().argmax(dim=1)  # argmax returns the first maximal column
        is_first = rows[1] == first_column[rows[0]]
        picked = torch.where(is_first, picked * first_token_weight, picked)
    return torch.zeros(labels.shape[0], dtype=picked.dtype, device=picked.device).index_add(0, rows[0], picked)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    nll_weight: float = 0.0,
    chosen_tokens: torch.Tensor | None = None,
):
    """Direct preference optimisation on sequence log-probabilities (all [B]).

    Implicit rewards r = beta * (log pi - log pi_ref); loss = -log sigmoid(r_chosen - r_rejected),
    optionally smoothed for noisy preferences (conservative DPO). ``nll_weight`` adds the chosen
    responses' per-token negative log-likelihood (``chosen_tokens`` long each), as in RPO (Pang
    et al., 2024): plain DPO can lower the chosen responses' likelihood along with the rejected
    ones until the model stops writing the format. Returns (mean loss, metrics).
    """
    chosen_rewards = beta * (policy_chosen - reference_chosen)
    rejected_rewards = beta * (policy_rejected - reference_rejected)
    margin = chosen_rewards - rejected_rewards
    losses = -(1.0 - label_smoothing) * torch.nn.functional.logsigmoid(
        margin
    ) - label_smoothing * torch.nn.functional.logsigmoid(-margin)
    loss = losses.mean()
    metrics = {}
    if nll_weight:
        if chosen_tokens is None:
            raise ValueError("nll_weight needs chosen_tokens, the number of response tokens of each chosen sequence")
        chosen_nll = (-policy_chosen / chosen_tokens.clamp(min=1)).mean()
        loss = loss + nll_weight * chosen_nll
        metrics["chosen_nll"] = chosen_nll.detach()
    metrics.update(
        {
            "reward_chosen": chosen_rewards.detach().mean(),
            "reward_rejected": rejected_rewards.detach().mean(),
            "reward_margin": margin.detach().mean(),
            "reward_accuracy": (margin.detach() > 0).float().mean(),
        }
    )
    return loss, metrics


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi || pi_ref) estimate exp(d) - d - 1 with d = log pi_ref - log pi: unbiased
    for samples from pi, and never negative."""
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1.0


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logprobs: torch.Tensor | None = None,
    clip_eps: float = 0.2,
    kl_coef: float = 0.02,
    advantage_clip: float = 2.0,
    num_tokens: float | None = None,
) -> tuple[torch.Tensor, dict]:
    """GRPO's objective on [N, T] per-token tensors, aggregated per token (every response token
    of the batch weighs the same, so long responses are not down-weighted).

    loss = sum_t mask * (-min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A) + kl_coef * KL) / tokens
    with A clamped to +-advantage_clip. ``num_tokens`` overrides the denominator, so that
    micro-batches and ranks can share one global token count.
    """
    mask = mask.float()
    tokens = num_tokens if num_tokens is not None else mask.sum().clamp(min=1.0)
    advantages = advantages.clamp(-advantage_clip, advantage_clip)
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * advantages
    per_token = -torch.minimum(unclipped, clipped)
    kl = kl_k3(logprobs, ref_logprobs) if ref_logprobs is not None else torch.zeros_like(logprobs)
    per_token = per_token + kl_coef * kl
    loss = (per_token * mask).sum() / tokens
    with torch.no_grad():
        measured = mask.sum().clamp(min=1.0)
        metrics = {
            "clip_fraction": float(((clipped < unclipped).float() * mask).sum() / measured),
            "kl": float((kl * mask).sum() / measured),
            "ratio_mean": float((ratio * mask).sum() / measured),
        }
    return loss, metrics


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log pi(token_t | tokens_<t) for [B, T, V] logits of inputs whose next tokens are [B, T];
    logits are divided by the sampling temperature first, as the engine did."""
    logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution at every position: [B, T, V] -> [B, T]."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return -(logprobs.exp() * logprobs).sum(dim=-1)

"""The RL learner's step on a batch of rollouts (every rank): the windows its logits are computed
on, the log-probs and entropy there, and the clipped policy loss with KL over micro-batches.
``training/rl.py`` drives it; docs/architecture.md, "The RL loop on Ray".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taosr.rollout_batch import pack_rollouts

if TYPE_CHECKING:  # the GPU smoke script imports this module without omegaconf
    from taosr.config import GrpoConfig

SHIFTED = ("targets", "response_mask", "old_logprobs", "advantages")  # [B, T - 1] grids of pack_rollouts


def response_window(packed: dict) -> dict:
    """The packed batch cut to the columns from the first response token on: the logits (and
    their [B, K, V] softmax copies, most of a step's memory) are computed only there."""
    first = int(packed["response_mask"].any(dim=0).nonzero()[0])
    view = {key: packed[key][:, first:] for key in SHIFTED}
    view.update(input_ids=packed["input_ids"], attention_mask=packed["attention_mask"], first=first)
    return view


def shared_prompt_window(chunk: list[dict]) -> dict | None:
    """For one-token responses, the same grids as ``response_window`` ([B, 1]) with the model
    input cut to the distinct prompts: rollouts of one group differ only in the token the prompt's
    last position predicts, so one forward per prompt scores all G of them (the same log-probs
    and gradients for a G-th of the passes). None when any response is longer."""
    import torch

    if any(len(r["response_ids"]) != 1 for r in chunk):
        return None
    distinct: dict[tuple, int] = {}
    rows = [distinct.setdefault(tuple(r["prompt_ids"]), len(distinct)) for r in chunk]
    width = max(len(p) for p in distinct)
    input_ids = torch.zeros((len(distinct), width), dtype=torch.long)
    attention = torch.zeros((len(distinct), width), dtype=torch.long)
    for i, prompt in enumerate(distinct):
        input_ids[i, : len(prompt)] = torch.tensor(prompt)
        attention[i, : len(prompt)] = 1
    column = lambda key: torch.tensor([[float(r[key][0])] for r in chunk])  # noqa: E731
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "last": torch.tensor([len(p) - 1 for p in distinct]),
        "rows": torch.tensor(rows),
        "targets": torch.tensor([[r["response_ids"][0]] for r in chunk]),
        "response_mask": torch.ones((len(chunk), 1)),
        "old_logprobs": column("old_logprobs"),
        "advantages": column("advantages"),
    }


def learner_window(chunk: list[dict], device) -> dict:
    shared = shared_prompt_window(chunk)
    if shared is not None:
        return {k: v.to(device) for k, v in shared.items()}
    return response_window({k: v.to(device) for k, v in pack_rollouts(chunk).items()})


def _window_logits(model, view: dict):
    """Logits on the view's [B, K] response grid."""
    import torch

    if "last" not in view:
        keep = torch.arange(view["first"], view["input_ids"].shape[1] - 1, device=view["input_ids"].device)
        return model(input_ids=view["input_ids"], attention_mask=view["attention_mask"], logits_to_keep=keep).logits
    keep, column = torch.unique(view["last"], return_inverse=True)
    logits = model(input_ids=view["input_ids"], attention_mask=view["attention_mask"], logits_to_keep=keep).logits
    last = logits[torch.arange(len(column), device=logits.device), column]  # [prompts, V]
    return last[view["rows"]].unsqueeze(1)  # [B, 1, V]: each rollout reads its prompt's row


def _logprobs_and_entropy(model, view: dict, temperature: float, with_entropy: bool):
    from taosr.losses import token_entropy, token_logprobs

    logits = _window_logits(model, view)
    logprobs = token_logprobs(logits, view["targets"], temperature)
    entropy = token_entropy(logits.detach() / temperature) if with_entropy else None
    return logprobs, entropy


def train_on(engine, reference, rl: GrpoConfig, rows: list[dict], global_tokens: float, world: int, gas: int) -> dict:
    import torch

    from taosr.losses import clipped_policy_loss

    sums = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "ratio_mean": 0.0, "entropy": 0.0}
    size = rl.micro_batch_size
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        if not any(r["weight"] for r in chunk):
            # Padding only (dynamic sampling kept fewer groups than a full batch): DeepSpeed still
            # counts this micro-step towards its accumulation boundary, so it gets a zero-gradient
            # backward through every parameter instead of a forward over padding (the step's time
            # then follows the groups kept, not the batch size).
            zero = sum(p.sum() for p in engine.module.parameters() if p.requires_grad) * 0.0
            engine.backward(zero)
            engine.step()
            continue
        packed = learner_window(chunk, engine.device)
        weights = torch.tensor([r["weight"] for r in chunk], device=engine.device).unsqueeze(1)
        mask = packed["response_mask"] * weights
        ref_logprobs = None
        if reference is not None:
            with torch.no_grad():
                ref_logprobs, _ = _logprobs_and_entropy(reference, packed, rl.temperature, False)
        logprobs, entropy = _logprobs_and_entropy(engine, packed, rl.temperature, True)
        loss, metrics = clipped_policy_loss(
            logprobs,
            packed["old_logprobs"],
            packed["advantages"],
            mask,
            ref_logprobs,
            clip_eps=rl.clip_eps,
            kl_coef=rl.kl_coef,
            advantage_clip=rl.advantage_clip,
            num_tokens=global_tokens / (world * gas),
        )
        engine.backward(loss)
        engine.step()
        share = float(mask.sum()) / max(global_tokens, 1.0)
        sums["loss"] += float(loss.detach())  # summed over micro-steps and ranks, then / (world * gas)
        for key in ("kl", "clip_fraction", "ratio_mean"):
            sums[key] += metrics[key] * share
        sums["entropy"] += float((entropy * mask).sum()) / max(global_tokens, 1.0)
    return sums

"""DPO's loss as ``run_training`` calls it inside a Ray Train worker: chosen and rejected through
the policy as one batch, against the reference log-probs stored with each pair."""

from __future__ import annotations

from taosr.sft_examples import IGNORE_INDEX, pad_batch


def dpo_step_loss(beta: float, label_smoothing: float, nll_weight: float = 0.0, decision_scale: float = 1.0):
    """The loss_fn for ``run_training``: chosen and rejected go through the policy as one batch.
    ``decision_scale`` weighs the level token as the reference log-probs were built with."""

    def loss_fn(engine, rows: list[dict]):
        import torch

        from taosr.losses import dpo_loss, labelled_logits, sequence_logprobs

        sequences = [{"input_ids": r["chosen_input_ids"], "labels": r["chosen_labels"]} for r in rows] + [
            {"input_ids": r["rejected_input_ids"], "labels": r["rejected_labels"]} for r in rows
        ]
        padded = {k: torch.tensor(v, device=engine.device) for k, v in pad_batch(sequences, pad_id=0).items()}
        logits, labels = labelled_logits(engine, padded["input_ids"], padded["attention_mask"], padded["labels"])
        policy = sequence_logprobs(logits, labels, decision_scale)
        reference = torch.tensor(
            [r["reference_chosen"] for r in rows] + [r["reference_rejected"] for r in rows],
            device=policy.device,
            dtype=policy.dtype,
        )
        half = len(rows)
        # The NLL term is a mean over the same weighted tokens the log-probs sum.
        chosen_tokens = (padded["labels"][:half, 1:] != IGNORE_INDEX).sum(dim=1) + (decision_scale - 1.0)
        loss, metrics = dpo_loss(
            policy[:half],
            policy[half:],
            reference[:half],
            reference[half:],
            beta=beta,
            label_smoothing=label_smoothing,
            nll_weight=nll_weight,
            chosen_tokens=chosen_tokens,
        )
        return loss, metrics, int(padded["attention_mask"].sum())

    return loss_fn

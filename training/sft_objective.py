"""SFT's losses, as ``run_training`` calls them inside a Ray Train worker: plain next-token
cross-entropy on the assistant turn (``sft_loss``; the GenRM trains with it) and the
decision-weighted loss with per-level weights (``sft_step_loss``, ``class_weights``)."""

from __future__ import annotations

from taosr.sft_examples import pad_batch, padded_decision_index


def sft_loss(engine, rows: list[dict]):
    """Plain next-token cross-entropy on the assistant turn (the GenRM's loss: its answer is
    one Yes/No token, so there is nothing to weigh apart)."""
    import torch

    from taosr.losses import labelled_logits, masked_token_nll

    padded = pad_batch(rows, pad_id=0)  # any valid id: padding is masked out and right of every real token
    tensors = {key: torch.tensor(value, device=engine.device) for key, value in padded.items()}
    loss, _ = masked_token_nll(
        *labelled_logits(engine, tensors["input_ids"], tensors["attention_mask"], tensors["labels"])
    )
    return loss, {}, int(tensors["attention_mask"].sum())


def class_weights(levels: list[int], power: float) -> dict[int, float]:
    """{level: count^-power}, scaled so the mean weight over ``levels`` is 1 (power 0: all 1)."""
    counts = {level: levels.count(level) for level in set(levels)}
    raw = {level: count**-power for level, count in counts.items()}
    mean = sum(raw[level] for level in levels) / len(levels)
    return {level: weight / mean for level, weight in raw.items()}


def sft_step_loss(decision_weight: float, level_weights: dict | None = None):
    """The loss_fn for ``run_training``: decision-weighted cross-entropy on the assistant turn."""

    def loss_fn(engine, rows: list[dict]):
        import torch

        from taosr.losses import decision_weighted_nll, label_window_start, labelled_logits

        # Left padding: a decision-only row's labels are its last two tokens, so every row's
        # end sits in the last columns and the vocabulary projection covers those alone.
        padded = pad_batch(rows, pad_id=0, left=True)  # any valid id: padding is masked out
        tensors = {key: torch.tensor(value, device=engine.device) for key, value in padded.items()}
        start = label_window_start(tensors["labels"])
        logits, labels = labelled_logits(
            engine, tensors["input_ids"], tensors["attention_mask"], tensors["labels"], tensors["position_ids"]
        )
        decision = torch.tensor(
            padded_decision_index(rows, tensors["input_ids"].shape[1], left=True), device=engine.device
        )
        decision = torch.where(decision >= 0, decision - start, decision)
        weights = None
        if level_weights:
            weights = torch.tensor([level_weights[str(r["level"])] for r in rows], device=engine.device)
        loss, parts = decision_weighted_nll(logits, labels, decision, decision_weight, weights)
        return loss, parts, int(tensors["attention_mask"].sum())

    return loss_fn

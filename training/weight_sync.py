"""The learner's half of the weight sync: its parameters as buckets, gathered from their shards.

Under ZeRO-3 no rank holds the whole model, so every rank walks the same buckets in the same
order and each bucket's parameters are gathered for the moment it is sent
(``deepspeed.zero.GatheredParameters``, a collective); under ZeRO 0-2 rank 0 holds every
parameter and walks them alone. Either way rank 0 holds at most one bucket beyond its shard of the
model, never a second copy of the whole of it. Names are the Hugging Face ones the engines load.
``sync_engines`` sends the buckets and checks the engines against a fixed probe (``verify_sync``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from taosr.actors.rollout_group import RolloutGroup, WeightSyncError
from taosr.actors.weight_group import TensorSpec, bucket_specs
from taosr.config import GrpoConfig
from taosr.training.loop_inputs import RlInputs


def _shape(parameter: Any) -> tuple[int, ...]:
    """The full shape, also of a ZeRO-3 partitioned parameter (whose local tensor is empty)."""
    return tuple(getattr(parameter, "ds_shape", None) or parameter.shape)


def sync_plan(module: Any, dtype: Any, bucket_mb: float) -> list[list[TensorSpec]]:
    """The buckets a sync sends, as (name, full shape) specs: the engines allocate from them."""
    named = [(name, _shape(p)) for name, p in named_parameters(module)]
    return bucket_specs(named, dtype.itemsize, int(bucket_mb * 2**20))


def named_parameters(module: Any) -> list[tuple[str, Any]]:
    """Every parameter under every name it has: a tied output layer is sent as ``lm_head.weight``
    too, since vLLM keeps its own copy of it for some models (Qwen2 among them)."""
    return list(module.named_parameters(remove_duplicate=False))


def _gathered(parameters: list, zero3: bool):
    if not zero3:
        return contextlib.nullcontext()
    import deepspeed

    unique = list({id(p): p for p in parameters}.values())  # a tied tensor is gathered once
    return deepspeed.zero.GatheredParameters(unique, modifier_rank=None)


def parameter_buckets(
    module: Any, plan: list[list[TensorSpec]], dtype: Any, zero3: bool, keep: bool, device: Any = "cpu"
) -> Iterator[list[tuple[str, Any]]]:
    """Each bucket of ``plan`` as (name, tensor) copies in ``dtype`` on ``device``. Under ZeRO-3
    every rank must consume this (each bucket is gathered collectively); ``keep`` is whether
    this rank wants the tensors (rank 0), the others get empty lists."""
    parameters = dict(named_parameters(module))
    for specs in plan:
        bucket = [parameters[spec.name] for spec in specs]
        with _gathered(bucket, zero3):
            # copy=True: under DeepSpeed bf16 a parameter is a view into one flat buffer, and a
            # pickled view ships the whole buffer.
            yield (
                [(spec.name, p.detach().to(device, dtype, copy=True)) for spec, p in zip(specs, bucket)] if keep else []
            )


def sync_engines(
    module, group: RolloutGroup | None, rl: GrpoConfig, inputs: RlInputs, version: int, probe: dict
) -> dict:
    """Send the learner's weights to every engine, bucket by bucket, and check them with the
    probe; raises when the gap is too big. Rank 0 (``group`` given) sends; under ZeRO-3 every
    rank calls this too, since each bucket is gathered from the shards of all of them. Returns
    rank 0's ``sync_gap`` and the sync's size (empty elsewhere)."""
    import torch

    dtype = getattr(torch, inputs.engine_dtype)
    zero3 = rl.zero_stage == 3
    plan = sync_plan(module, dtype, rl.sync_bucket_mb)
    on_gpu = rl.weight_sync == "collective" and rl.use_gpu  # NCCL sends from GPU memory
    device = next(module.parameters()).device if on_gpu else "cpu"
    buckets = parameter_buckets(module, plan, dtype, zero3, keep=group is not None, device=device)
    sent: dict = {}
    if group is not None and version != rl.faults.skip_sync_step:
        sent = group.push_buckets(buckets, plan, inputs.engine_dtype, version, timeout_s=rl.sync_timeout_s)
    elif zero3:
        for _ in buckets:  # this rank's part in each bucket's gather
            pass
    gap = verify_sync(module, group, probe, rl)
    return {"sync_gap": gap, **sent} if group is not None else {}


def verify_sync(model, group: RolloutGroup | None, probe: dict, rl: GrpoConfig) -> float | None:
    """The largest mean |log-prob gap| per token between the learner and any engine on the probe
    (rank 0; None elsewhere, where under ZeRO-3 the forward is still needed for the gathers)."""
    import torch

    from taosr.losses import token_logprobs

    if group is None and rl.zero_stage != 3:
        return None
    ids = torch.tensor([probe["prompt_ids"] + probe["response_ids"]], device=next(model.parameters()).device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, :-1, :]
        learner = token_logprobs(logits, ids[:, 1:])[0, len(probe["prompt_ids"]) - 1 :].float().cpu()
    if group is None:
        return None
    worst = 0.0
    for engine_logprobs in group.probe(probe["prompt_ids"], probe["response_ids"], timeout_s=rl.sync_timeout_s):
        worst = max(worst, float((learner - torch.tensor(engine_logprobs)).abs().mean()))
    if worst > rl.sync_tolerance:
        raise WeightSyncError(
            f"weight sync check failed: learner and engine log-probs differ by {worst:.4f} "
            f"(mean |gap| per token) > sync_tolerance {rl.sync_tolerance}"
        )
    return worst

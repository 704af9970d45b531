"""The learner's half of the weight sync: its parameters as buckets, gathered from their shards.

Under ZeRO-3 no rank holds the whole model, so every rank walks the same buckets in the same
order and each bucket's parameters are gathered for the moment it is sent
(``deepspeed.zero.GatheredParameters``, a collective); under ZeRO 0-2 rank 0 holds every
parameter and walks them alone. Either way rank 0 holds at most one bucket beyond its shard of the
model, never a second copy of the whole of it. Names are the Hugging Face ones the engines load.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from taosr.actors.weight_group import TensorSpec, bucket_specs


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

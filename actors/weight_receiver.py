"""The engine side of the collective weight sync: a vLLM worker extension.

vLLM mixes this class into each of its workers (``worker_extension_cls``), and the rollout
engine reaches it through ``LLM.collective_rpc``, so every worker of a tensor-parallel engine
joins the learner's weight group (``taosr.actors.weight_group``) and takes each broadcast
bucket itself. The buckets stream into vLLM's in-place ``reload_weights`` one at a time: a
worker holds one bucket beyond its model, whatever the model's size.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from taosr.actors.weight_group import GroupAddress, TensorSpec, broadcast, open_group, unflatten

EXTENSION = "taosr.actors.weight_receiver.WeightReceiver"


class WeightReceiver:
    """Methods added to a vLLM worker (``self`` is the worker: ``rank``, ``device``,
    ``reload_weights``). Names are prefixed so they cannot clash with the worker's own."""

    def taosr_join_weight_group(self, address: GroupAddress, first_rank: int) -> int:
        """Join as rank ``first_rank`` + this worker's rank in its engine; returns that rank."""
        rank = first_rank + int(getattr(self, "rank", 0))
        self._taosr_weight_group = open_group(address, rank)
        return rank

    def taosr_leave_weight_group(self) -> None:
        self._taosr_weight_group = None

    def taosr_receive_buckets(self, buckets: Sequence[Sequence[TensorSpec]], dtype_name: str) -> int:
        """Take every bucket rank 0 broadcasts, in order, into the model in place; returns the
        number of tensors loaded."""
        import torch

        group = getattr(self, "_taosr_weight_group", None)
        if group is None:
            raise RuntimeError("this engine has not joined a weight group: call taosr_join_weight_group first")
        dtype = getattr(torch, dtype_name)
        device = getattr(self, "device", torch.device("cpu"))
        loaded = [0]

        def stream() -> Iterator[tuple[str, Any]]:
            for specs in buckets:
                flat = torch.empty(sum(spec.numel for spec in specs), dtype=dtype, device=device)
                broadcast(group, flat)
                for name, tensor in unflatten(flat, specs):
                    loaded[0] += 1
                    yield name, tensor

        self.reload_weights(weights_iterator=stream())  # type: ignore[attr-defined]
        return loaded[0]

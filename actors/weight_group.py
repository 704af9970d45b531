"""The process group a weight sync broadcasts over: the learner's rank 0 (rank 0 of the group)
and every worker of every rollout engine (ranks 1..), outside Ray Train's own group.

It is built from a TCPStore that rank 0 hosts, so neither side needs a default process group:
gloo on CPU, NCCL on GPU. Weights travel as buckets: a bucket's tensors are flattened into one
tensor of the engine's dtype, broadcast once, and split again on the engines, so a sync costs one
collective per bucket and never holds more than one bucket beyond the model on either side.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence

BACKENDS = ("gloo", "nccl")
STORE_PREFIX = "taosr-weights"


@dataclass(frozen=True)
class GroupAddress:
    """Where rank 0 hosts the group's store, and who is in it."""

    host: str
    port: int
    world_size: int
    backend: str = "gloo"
    timeout_s: float = 300.0

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"weight group backend {self.backend!r}: use one of {', '.join(BACKENDS)}")
        if self.world_size < 2:
            raise ValueError("a weight group needs the learner and at least one engine worker")


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a bucket: its name (Hugging Face naming), shape and element count."""

    name: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count


def free_port(host: str = "") -> int:
    """A TCP port free on this node now (rank 0 binds the store to it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def open_group(address: GroupAddress, rank: int) -> Any:
    """Join the group as ``rank``; blocks until every member has joined (rank 0 hosts the store)."""
    import torch.distributed as dist

    timeout = timedelta(seconds=address.timeout_s)
    tcp = dist.TCPStore(
        address.host, address.port, address.world_size, is_master=rank == 0, timeout=timeout, wait_for_workers=False
    )
    store = dist.PrefixStore(f"{STORE_PREFIX}-{address.port}", tcp)
    if address.backend == "nccl":
        nccl = getattr(dist, "ProcessGroupNCCL", None)  # absent from CPU builds of torch
        if nccl is None:
            raise RuntimeError("the nccl weight group needs a CUDA build of torch; use gloo on CPU")
        options = nccl.Options()
        options._timeout = timeout
        return nccl(store, rank, address.world_size, options)
    return dist.ProcessGroupGloo(store, rank, address.world_size, timeout)


def bucket_specs(named_shapes: Sequence[tuple[str, Sequence[int]]], itemsize: int, bucket_bytes: int):
    """Split (name, shape) pairs, in order, into buckets of at most ``bucket_bytes`` (a tensor larger
    than that is a bucket of its own)."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket size must be positive; got {bucket_bytes} bytes")
    buckets: list[list[TensorSpec]] = []
    current: list[TensorSpec] = []
    size = 0
    for name, shape in named_shapes:
        spec = TensorSpec(name, tuple(int(s) for s in shape))
        nbytes = spec.numel * itemsize
        if current and size + nbytes > bucket_bytes:
            buckets.append(current)
            current, size = [], 0
        current.append(spec)
        size += nbytes
    if current:
        buckets.append(current)
    return buckets


def flatten(tensors: Sequence[Any], dtype: Any, device: Any = None) -> Any:
    """One contiguous tensor of ``dtype`` holding the tensors one after another."""
    import torch

    return torch.cat([t.reshape(-1).to(device=device or t.device, dtype=dtype) for t in tensors])


def unflatten(flat: Any, specs: Sequence[TensorSpec]) -> list[tuple[str, Any]]:
    """The (name, tensor) views of a broadcast bucket, in its specs' order."""
    if flat.numel() != sum(spec.numel for spec in specs):
        raise ValueError(f"bucket holds {flat.numel()} elements, its specs {sum(s.numel for s in specs)}")
    out, offset = [], 0
    for spec in specs:
        out.append((spec.name, flat[offset : offset + spec.numel].view(spec.shape)))
        offset += spec.numel
    return out


def broadcast(group: Any, tensor: Any) -> None:
    """Rank 0's ``tensor`` into every member's (same shape and dtype), in place."""
    import torch.distributed as dist

    options = dist.BroadcastOptions()
    options.rootRank = 0
    group.broadcast([tensor], options).wait()

"""One training process set up as a one-worker Ray Train group sees itself, so a benchmark can
drive the stages' own DeepSpeed engine and step code without Ray."""

from __future__ import annotations

import os


def start_single_rank(port: int, threads: int) -> None:
    """Torch threads, the rank-0 environment DeepSpeed reads, and a one-process gloo group."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(threads)
    for key, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
    }.items():
        os.environ.setdefault(key, value)
    dist.init_process_group("gloo", rank=0, world_size=1)

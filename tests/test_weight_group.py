"""The weight sync's buckets and its process group, by hand-checked sizes and on two real gloo
members in two processes."""

import multiprocessing

import pytest
import torch

from taosr.actors.weight_group import GroupAddress, TensorSpec, bucket_specs, flatten, free_port, unflatten


def test_buckets_fill_in_order_and_an_oversized_tensor_is_a_bucket_of_its_own():
    named = [("a", (2, 3)), ("b", (4,)), ("c", (10, 10)), ("d", (1,))]
    # bf16: a=12 B, b=8 B, c=200 B, d=2 B; 24-byte buckets
    buckets = bucket_specs(named, itemsize=2, bucket_bytes=24)
    assert [[s.name for s in b] for b in buckets] == [["a", "b"], ["c"], ["d"]]
    assert buckets[1][0].numel == 100
    assert [[s.name for s in b] for b in bucket_specs(named, 2, 10**6)] == [["a", "b", "c", "d"]]
    with pytest.raises(ValueError, match="positive"):
        bucket_specs(named, 2, 0)


def test_a_flattened_bucket_comes_back_as_the_same_named_tensors():
    tensors = [torch.arange(6.0).view(2, 3), torch.tensor([7.0, 8.0])]
    specs = [TensorSpec("w", (2, 3)), TensorSpec("b", (2,))]
    flat = flatten(tensors, torch.bfloat16)
    assert flat.dtype == torch.bfloat16 and flat.shape == (8,)
    back = unflatten(flat, specs)
    assert [name for name, _ in back] == ["w", "b"]
    assert torch.equal(back[0][1].float(), tensors[0]) and torch.equal(back[1][1].float(), tensors[1])
    with pytest.raises(ValueError, match="elements"):
        unflatten(flat[:5], specs)


def test_an_address_refuses_an_unknown_backend_or_a_group_of_one():
    with pytest.raises(ValueError, match="backend"):
        GroupAddress("127.0.0.1", 1, 2, backend="mpi")
    with pytest.raises(ValueError, match="at least one engine"):
        GroupAddress("127.0.0.1", 1, 1)


def _member(address, rank, queue):
    from taosr.actors.weight_group import broadcast, open_group

    group = open_group(address, rank)
    tensor = torch.arange(5, dtype=torch.float32) if rank == 0 else torch.zeros(5)
    broadcast(group, tensor)
    queue.put((rank, tensor.tolist()))


def test_two_processes_join_a_gloo_group_beside_no_default_group_and_rank_0s_tensor_reaches_both():
    address = GroupAddress("127.0.0.1", free_port("127.0.0.1"), 2, "gloo", timeout_s=60)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    members = [context.Process(target=_member, args=(address, rank, queue)) for rank in (0, 1)]
    for member in members:
        member.start()
    got = dict(queue.get(timeout=60) for _ in members)
    for member in members:
        member.join(timeout=30)
    assert got == {0: [0.0, 1.0, 2.0, 3.0, 4.0], 1: [0.0, 1.0, 2.0, 3.0, 4.0]}

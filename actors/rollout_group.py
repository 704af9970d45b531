"""A group of rollout actors driven by the RL learner: fan prompts out, push weights in, and
verify the push, each with a timeout so a hung engine is an error and never a hang.

An engine whose process died is restarted by Ray (``max_restarts``) with the start model's
weights. Before every generation the group checks each engine's weight version and re-sends the
weights it last pushed to any engine that came back with the start model's (a call queued
during a restart would otherwise sample silently from stale weights); a call that fails because
its engine died mid-way is retried once after that repair. A lost engine costs a retry, not the
run; ``recoveries`` counts them.

Weights travel in buckets by one of two paths (``WEIGHT_SYNCS``): ``object_store`` puts each
bucket in Ray's object store once and every engine reads them one at a time (the buckets stay
there, so a restarted engine is repaired from them); ``collective`` broadcasts each bucket over a
process group of the learner's rank 0 and every engine worker (gloo on CPU, NCCL on GPU;
``taosr.actors.weight_group``). A collective group cannot take a restarted member back, so with
it a restart raises ``EnginesRestarted`` and the learner syncs again over a fresh group.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from taosr.actors.rollout import Rollout, SamplingSpec, rollout_actor_class
from taosr.actors.weight_group import GroupAddress, TensorSpec, broadcast, flatten, free_port, open_group

WEIGHT_SYNCS = ("object_store", "collective")


class WeightSyncError(RuntimeError):
    """The engines do not hold the learner's weights (push timed out, or the probe disagrees)."""


class EnginesRestarted(WeightSyncError):
    """An engine came back from a restart with the start model's weights, and the collective
    group it belonged to is gone: the learner must sync every engine again (a fresh group)."""


class RolloutGroup:
    def __init__(self, engines: list, sync: str = "object_store", workers_per_engine: int = 1, backend: str = "gloo"):
        if not engines:
            raise ValueError("a rollout group needs at least one engine")
        if sync not in WEIGHT_SYNCS:
            raise ValueError(f"weight sync {sync!r}: use one of {', '.join(WEIGHT_SYNCS)}")
        self.engines = engines
        self.sync = sync
        self.workers_per_engine = workers_per_engine
        self.backend = backend
        self._bucket_refs: list | None = None  # object_store: the last pushed buckets
        self._weight_group: Any = None  # collective: rank 0's end of the group, opened on first push
        self._version = 0
        self.recoveries = 0  # engines found restarted and given the current weights again

    @property
    def version(self) -> int:
        """The weight version last pushed (0: the start model)."""
        return self._version

    @classmethod
    def create(
        cls,
        count: int,
        model_path: str,
        num_cpus: float = 1.0,
        num_gpus: float | None = 0.0,
        resources: dict | None = None,
        ready_timeout_s: float = 600.0,
        **engine_kwargs,
    ) -> "RolloutGroup":
        import ray

        actor = rollout_actor_class(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources)
        engines = [
            actor.remote(model_path, seed=engine_kwargs.pop("seed", 0) + i, **engine_kwargs) for i in range(count)
        ]
        ray.get([e.ready.remote() for e in engines], timeout=ready_timeout_s)
        return cls(engines)

    def generate(self, prompt_ids: Sequence[list[int]], spec: SamplingSpec, timeout_s: float) -> list[list[Rollout]]:
        """Contiguous chunks of the prompts to each engine; groups come back in prompt order."""
        if not prompt_ids:
            return []
        self._restore_restarted(timeout_s)
        chunks = _split(list(prompt_ids), len(self.engines))
        return [
            group
            for chunk_groups in self._call_all("generate", chunks, spec, timeout_s=timeout_s)
            for group in chunk_groups
        ]

    def push_weights(self, named_tensors: list, version: int, timeout_s: float) -> dict:
        """All the weights as one bucket (the learner holds them whole anyway)."""
        specs = [[TensorSpec(name, tuple(t.shape)) for name, t in named_tensors]]
        dtype = str(named_tensors[0][1].dtype).removeprefix("torch.") if named_tensors else "float32"
        return self.push_buckets(iter([named_tensors]), specs, dtype, version, timeout_s)

    def push_buckets(
        self, buckets: Iterable[list], specs: list[list[TensorSpec]], dtype_name: str, version: int, timeout_s: float
    ) -> dict:
        """Send new weights to every engine, bucket by bucket: ``buckets`` yields lists of
        (name, tensor in ``dtype_name``) matching ``specs``; only one is held here at a time.
        Returns the sync's size: buckets, tensors and bytes sent."""
        import ray

        sent = {"sync_buckets": 0, "sync_tensors": 0, "sync_bytes": 0}

        def counted(bucket: list) -> list:
            sent["sync_buckets"] += 1
            sent["sync_tensors"] += len(bucket)
            sent["sync_bytes"] += sum(t.numel() * t.element_size() for _, t in bucket)
            return bucket

        self._version = version
        try:
            if self.sync == "collective":
                versions = self._broadcast(map(counted, buckets), specs, dtype_name, version, timeout_s)
            else:
                self._bucket_refs = [ray.put(counted(bucket)) for bucket in buckets]
                versions = ray.get(
                    [e.update_weights_from_refs.remote(self._bucket_refs, version) for e in self.engines],
                    timeout=timeout_s,
                )
        except ray.exceptions.GetTimeoutError as error:
            raise WeightSyncError(f"weight push v{version} took longer than {timeout_s}s") from error
        if any(v != version for v in versions):
            raise WeightSyncError(f"engines report weight versions {versions}, expected {version}")
        return sent

    def _broadcast(self, buckets: Iterable[list], specs, dtype_name: str, version: int, timeout_s: float) -> list:
        import ray
        import torch

        if self._weight_group is None:
            self._open_weight_group(timeout_s)
        receiving = [e.receive_weight_buckets.remote(specs, dtype_name, version) for e in self.engines]
        dtype = getattr(torch, dtype_name)
        try:
            for bucket in buckets:
                broadcast(self._weight_group, flatten([t for _, t in bucket], dtype))
        except RuntimeError as error:  # gloo/NCCL timeout or a member gone
            self._weight_group = None
            raise WeightSyncError(f"weight broadcast v{version} failed: {error}") from error
        return ray.get(receiving, timeout=timeout_s)

    def _open_weight_group(self, timeout_s: float) -> None:
        """A fresh group: rank 0 here, engine i's workers from 1 + i * workers_per_engine."""
        import ray

        host = ray.util.get_node_ip_address()
        address = GroupAddress(
            host, free_port(), 1 + len(self.engines) * self.workers_per_engine, self.backend, timeout_s
        )
        joined = [
            e.join_weight_group.remote(address, 1 + i * self.workers_per_engine) for i, e in enumerate(self.engines)
        ]
        self._weight_group = open_group(address, 0)
        ray.get(joined, timeout=timeout_s)

    def close_weight_group(self, timeout_s: float = 60.0) -> None:
        """Drop the collective group on every side; the next push opens a fresh one."""
        import ray

        if self._weight_group is None:
            return
        self._weight_group = None
        ray.get([e.leave_weight_group.remote() for e in self.engines], timeout=timeout_s)

    def probe(self, prompt_ids: list[int], response_ids: list[int], timeout_s: float) -> list[list[float]]:
        """Each engine's teacher-forced log-probs of one fixed response."""
        return self._call_all(
            "sequence_token_logprobs", [prompt_ids] * len(self.engines), response_ids, timeout_s=timeout_s
        )

    def _call_all(self, method: str, first_args: list, *rest, timeout_s: float):
        """``method(first_args[i], *rest)`` on engine i, for every engine, in parallel."""
        import ray

        def launch(engine, arg):
            return getattr(engine, method).remote(arg, *rest)

        pairs = list(zip(self.engines, first_args))
        futures = [launch(engine, arg) for engine, arg in pairs]
        try:
            return ray.get(futures, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError as error:
            raise TimeoutError(f"rollout engines did not answer {method} within {timeout_s}s") from error
        except ray.exceptions.RayActorError:  # ActorUnavailableError (restarting) included
            # An engine died during the call and Ray restarted it: restore our weights, retry once.
            self._restore_restarted(timeout_s)
            return ray.get([launch(engine, arg) for engine, arg in pairs], timeout=timeout_s)

    def _restore_restarted(self, timeout_s: float) -> None:
        """Re-send the last pushed weights to every engine that no longer holds them. An engine
        in the middle of its restart answers ActorUnavailableError: asked again until it is up."""
        import ray
        from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

        if self._version == 0:
            return  # nothing pushed yet: every engine, restarted or not, holds the start model
        for attempt in Retrying(
            retry=retry_if_exception_type(ray.exceptions.ActorUnavailableError),
            stop=stop_after_delay(timeout_s),
            wait=wait_fixed(1.0),
            reraise=True,
        ):
            with attempt:
                held = ray.get([e.held_version.remote() for e in self.engines], timeout=timeout_s)
                stale = [engine for engine, version in zip(self.engines, held) if version != self._version]
                if stale and self.sync == "collective":
                    self.recoveries += len(stale)
                    self.close_weight_group(timeout_s)
                    raise EnginesRestarted(f"{len(stale)} engine(s) restarted with the start model's weights")
                if stale:
                    ray.get(
                        [e.update_weights_from_refs.remote(self._bucket_refs, self._version) for e in stale],
                        timeout=timeout_s,
                    )
                    self.recoveries += len(stale)

    def shutdown(self) -> None:
        import ray

        for engine in self.engines:
            ray.kill(engine)


def _split(items: list, parts: int) -> list[list]:
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        out.append(items[start:end])
        start = end
    return out

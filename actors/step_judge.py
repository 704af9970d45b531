"""The generative stepwise reward model (GenRM) as an engine and a Ray actor: for each step of a
response, P("Yes") that the step is correct, read at the answer position of its question
(``taosr.genrm``). One decode position per question, restricted to the two answer tokens, so
the value is the exact 2-way softmax; a response's five questions share its prefix in vLLM's
prefix cache.

SRPO's learner (rank 0) calls ``step_rewards`` once per optimizer step with every rollout whose
steps the offline verifier cannot judge. The GenRM is frozen, so a call is idempotent: Ray
restarts a dead actor and retries the call.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from taosr.actors.scorer import ChoiceScorer
from taosr.genrm import answer_token_ids, judge_prompt
from taosr.steps import NUM_STEPS

if TYPE_CHECKING:
    from taosr.config import TaosrConfig


class StepJudge(ChoiceScorer):
    def choice_token_ids(self, tokenizer) -> list[int]:
        return answer_token_ids(tokenizer)

    def ready(self) -> bool:
        return True

    def yes_probabilities(self, questions: Sequence[tuple[str, str, Sequence[str]]]) -> list[float]:
        """P("Yes") for each (query, item_text, step lines 1..k) question about step k."""
        prompts = [judge_prompt(self.tokenizer, query, item, lines) for query, item, lines in questions]
        return self.score_prompts(prompts)[:, 0].tolist()

    def step_rewards(self, requests: Sequence[dict]) -> list[list[float]]:
        """Per request {query, item_text, step_lines (the five), steps (which to judge)}: five
        values, P("Yes") for the steps asked and NaN for the others."""
        questions, where = [], []
        for index, request in enumerate(requests):
            lines = list(request["step_lines"])
            if len(lines) != NUM_STEPS:
                raise ValueError(f"request {index} has {len(lines)} step lines; a response has {NUM_STEPS}")
            for step in request["steps"]:
                questions.append((request["query"], request["item_text"], lines[:step]))
                where.append((index, step))
        out = [[math.nan] * NUM_STEPS for _ in requests]
        for (index, step), value in zip(where, self.yes_probabilities(questions) if questions else []):
            out[index][step - 1] = value
        return out


def step_judge_actor(
    model_path: str,
    num_cpus: float = 1.0,
    num_gpus: float | None = 0.0,
    resources: dict | None = None,
    ready_timeout_s: float = 600.0,
    **engine_kwargs,
):
    """A started ``StepJudge`` actor on vLLM (waits until its engine is loaded); ``resources``:
    custom ones that place it on a node type (``RayConfig.engine_options``)."""
    import ray

    actor = ray.remote(
        num_cpus=num_cpus, num_gpus=num_gpus or 0, resources=resources or {}, max_restarts=1, max_task_retries=1
    )(StepJudge)
    handle = actor.remote(model_path, engine="vllm", **engine_kwargs)
    ray.get(handle.ready.remote(), timeout=ready_timeout_s)
    return handle


def yes_probabilities(config: TaosrConfig, model_path: str, examples) -> list[float]:
    """P("Yes") of each example's question from ``model_path`` on a vLLM judge actor."""
    import ray

    judge = step_judge_actor(
        model_path,
        **config.ray.engine_options(1.0, 1.0 if config.genrm.use_gpu else 0.0),
        dtype=config.model.dtype,
        max_seq_len=config.model.max_seq_len,
        kv_cache_gib=config.genrm.kv_cache_gib,
        seed=config.seed,
        kv_block_size=config.model.kv_block_size,
        **config.ray.vllm_options(config.genrm.gpu_memory_utilization),
    )
    try:
        return ray.get(judge.yes_probabilities.remote([(e.query, e.item_text, e.step_lines) for e in examples]))
    finally:
        ray.kill(judge)

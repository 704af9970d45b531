"""A teacher LLM on a vLLM engine inside a Ray actor (the Ray Data map_batches worker that
holds it): on the cluster a large model, here any small Hugging Face folder."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

from taosr.labels import label_text
from taosr.prompts import item_from_row, teacher_messages


class VLLMTeacher:
    name = "vllm"

    def __init__(
        self,
        rules: Mapping,
        model_path: str,
        temperature: float = 0.3,
        max_new_tokens: int = 320,
        dtype: str = "bfloat16",
        tensor_parallel_size: int = 1,
        seed: int = 0,
        enforce_eager: bool = True,
        gpu_memory_utilization: float = 0.9,
    ):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM, SamplingParams

        from taosr.actors.runtime import check_in_process_engine
        from taosr.datasets.storage import local_dir

        check_in_process_engine()
        model_path = local_dir(model_path)  # an s3:// teacher is fetched on this node once
        self.rules = rules
        self.llm = LLM(
            model_path,
            dtype=dtype,
            enforce_eager=enforce_eager,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=True,
            tensor_parallel_size=tensor_parallel_size,
            seed=seed,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.params = SamplingParams(temperature=temperature, max_tokens=max_new_tokens)

    def write(self, rows: Sequence[Mapping], retrieved: Sequence[Sequence[str]]) -> list[str]:
        prompts = []
        for row, rule_ids in zip(rows, retrieved):
            messages = teacher_messages(
                row["query"], item_from_row(row), [self.rules[i].text for i in rule_ids], label_text(int(row["label"]))
            )
            prompts.append(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        outputs = self.llm.generate(prompts, self.params, use_tqdm=False)
        return [output.outputs[0].text for output in outputs]

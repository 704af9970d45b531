"""First-token level scoring: P(level | query, item) = softmax over the logits of the four level
tokens at the first generated position (docs/method.md section 7). No reasoning is decoded.

``LevelScorer`` is a callable class for Ray Data's ``map_batches`` (one engine per actor) and
is used directly by the serving replica. Two engines give identical probabilities:
- ``vllm``: one decode position with sampling restricted to the level tokens and *processed*
  log-probs, so the returned log-probs are exactly the 4-way log-softmax; prefix caching
  shares the instruction and query prefix across a query's items.
- ``hf``: a plain transformers forward pass (the reference, and a fallback).
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

from taosr.datasets.storage import local_dir
from taosr.labels import LEVELS

PROB_COLUMNS = tuple(f"p_{level}" for level in LEVELS)


class ChoiceScorer:
    """P(choice | prompt) over a fixed set of answers at the first generated position, each
    answer identified by its first token; subclasses name the tokens (``choice_token_ids``)."""

    def __init__(
        self,
        model_path: str,
        engine: str = "vllm",
        dtype: str = "bfloat16",
        max_seq_len: int = 1024,
        kv_cache_gib: int = 1,
        seed: int = 0,
        prompt_format: str = "post_cot",
        enable_prefix_caching: bool = True,
        tensor_parallel_size: int = 1,
        kv_block_size: int = 0,
        compile_engine: bool = False,
        enforce_eager: bool = True,
        gpu_memory_utilization: float = 0.9,
    ):
        from transformers import AutoTokenizer

        model_path = local_dir(model_path)  # an s3:// export is fetched to this node once
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.ids_in_order = self.choice_token_ids(self.tokenizer)
        self.engine = engine
        self.prompt_format = prompt_format
        if engine == "vllm":
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
            from taosr.actors.runtime import block_size_option, check_in_process_engine
            from vllm import LLM, SamplingParams

            check_in_process_engine()

            # The lm_head in float32: bf16 logits of magnitude 16-32 come in steps of 0.125-0.25,
            # so the four level logits tie on a large share of rows and a test split of
            # thousands of rows gets a few dozen distinct distributions (ties, then, decide the
            # level and the ranking). The other layers stay in ``dtype``.
            # compile_engine: torch.compile the forward (inductor fuses the norms and activations
            # around the matmuls); scoring runs 10-30% faster on CPU, but the engine takes ~1.5 min to start.
            # enforce_eager false (RayConfig.vllm_options on GPU): compiled, with CUDA graphs.
            self.llm = LLM(
                model_path,
                dtype=dtype,
                enforce_eager=enforce_eager and not compile_engine,
                gpu_memory_utilization=gpu_memory_utilization,
                enable_prefix_caching=enable_prefix_caching,
                max_model_len=max_seq_len,
                logprobs_mode="processed_logprobs",
                seed=seed,
                tensor_parallel_size=tensor_parallel_size,
                hf_overrides={"head_dtype": "float32"},
                # kv_block_size 0: vLLM's default. Prefix caching reuses whole blocks only: the CPU default of 128
                # tokens is longer than a query's shared prefix, so nothing is reused.
                **block_size_option(kv_block_size),
            )
            self.params = SamplingParams(
                max_tokens=1, temperature=1.0, logprobs=len(self.ids_in_order), allowed_token_ids=self.ids_in_order
            )
        elif engine == "hf":
            import torch
            from transformers import AutoModelForCausalLM

            self.torch = torch
            self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).eval()
        else:
            raise ValueError(f"unknown scoring engine {engine!r}; use vllm or hf")

    def choice_token_ids(self, tokenizer) -> list[int]:
        raise NotImplementedError

    def score_prompts(self, prompts: Sequence[str]) -> np.ndarray:
        """[N, choices] probabilities, columns in ``choice_token_ids`` order."""
        if not prompts:
            return np.zeros((0, len(self.ids_in_order)))
        if self.engine == "vllm":
            outputs = self.llm.generate(list(prompts), self.params, use_tqdm=False)
            rows = []
            for output in outputs:
                logprobs = output.outputs[0].logprobs[0]
                rows.append([math.exp(logprobs[i].logprob) if i in logprobs else 0.0 for i in self.ids_in_order])
            probs = np.asarray(rows, dtype=np.float64)
            return probs / probs.sum(axis=1, keepdims=True)
        return self._hf_scores(prompts)

    def _hf_scores(self, prompts: Sequence[str], batch_size: int = 16) -> np.ndarray:
        torch = self.torch
        out = []
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                chunk = list(prompts[start : start + batch_size])
                encoded = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
                # the choices' rows of the output layer in float32, as the vLLM engine's head
                hidden = self.model.base_model(**encoded).last_hidden_state[:, -1].float()
                logits = hidden @ self.model.get_output_embeddings().weight[self.ids_in_order].float().T
                out.append(torch.softmax(logits, dim=-1).double().numpy())
        return np.concatenate(out)


class LevelScorer(ChoiceScorer):
    """The relevance level's distribution: the four level digits, in LEVELS order (4, 3, 2, 1)."""

    def choice_token_ids(self, tokenizer) -> list[int]:
        from taosr.models import level_token_ids

        ids = level_token_ids(tokenizer)
        return [ids[level] for level in LEVELS]

    def prompts_for(self, queries: Sequence[str], items: Sequence) -> list[str]:
        from taosr.prompts import build_prompt

        return [build_prompt(self.tokenizer, q, item, self.prompt_format) for q, item in zip(queries, items)]

    def __call__(self, batch: dict) -> dict:
        """Ray Data batch (numpy format) of accepted log rows -> the same rows plus p_4..p_1, pred."""
        from taosr.prompts import item_from_row

        size = len(batch["query"])
        rows = [{key: _plain(batch[key][i]) for key in batch} for i in range(size)]
        prompts = self.prompts_for([r["query"] for r in rows], [item_from_row(r) for r in rows])
        probs = self.score_prompts(prompts)
        for column, values in zip(PROB_COLUMNS, probs.T):
            batch[column] = values
        batch["pred"] = np.asarray(LEVELS)[probs.argmax(axis=1)]
        return batch


class DecodingScorer(LevelScorer):
    """Greedy-decodes whole responses and parses them: the label for pre-CoT models, and the
    format-error and discriminative-hallucination rates for any CoT model."""

    def __init__(self, *args, max_new_tokens: int = 256, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_new_tokens = max_new_tokens

    def generate(self, prompts: Sequence[str]) -> list[str]:
        if self.engine == "vllm":
            from vllm import SamplingParams

            params = SamplingParams(max_tokens=self.max_new_tokens, temperature=0.0)
            return [o.outputs[0].text for o in self.llm.generate(list(prompts), params, use_tqdm=False)]
        self.tokenizer.padding_side = "left"
        encoded = self.tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        with self.torch.inference_mode():
            out = self.model.generate(
                **encoded,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        return self.tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)

    def __call__(self, batch: dict) -> dict:
        from taosr.formats import parse
        from taosr.metrics import NO_ANSWER
        from taosr.prompts import item_from_row

        size = len(batch["query"])
        rows = [{key: _plain(batch[key][i]) for key in batch} for i in range(size)]
        texts = self.generate(self.prompts_for([r["query"] for r in rows], [item_from_row(r) for r in rows]))
        parsed = [parse(self.prompt_format, text) for text in texts]
        batch["response"] = np.asarray(texts, dtype=object)
        batch["pred"] = np.asarray([p.label if p.label is not None else NO_ANSWER for p in parsed])
        batch["format_ok"] = np.asarray([p.format_ok for p in parsed])
        batch["hallucinated"] = np.asarray([p.hallucinated for p in parsed], dtype=object)
        return batch


class SampledDecodingScorer(DecodingScorer):
    """First-token scoring of every row, and the decoded, parsed response of the rows whose id is
    in ``decode_ids`` (None elsewhere): one engine for both, since starting an engine costs more
    on CPU than first-token scoring a whole evaluation split."""

    def __init__(self, *args, decode_ids: Sequence[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.decode_ids = {str(i) for i in decode_ids}

    def __call__(self, batch: dict) -> dict:
        from taosr.formats import parse
        from taosr.prompts import item_from_row

        batch = LevelScorer.__call__(self, batch)
        size = len(batch["id"])
        chosen = [i for i in range(size) if str(_plain(batch["id"][i])) in self.decode_ids]
        columns: dict[str, list] = {name: [None] * size for name in ("format_ok", "hallucinated", "response")}
        if chosen:
            rows = [{key: _plain(batch[key][i]) for key in batch} for i in chosen]
            texts = self.generate(self.prompts_for([r["query"] for r in rows], [item_from_row(r) for r in rows]))
            for i, text in zip(chosen, texts):
                parsed = parse(self.prompt_format, text)
                columns["format_ok"][i], columns["hallucinated"][i], columns["response"][i] = (
                    parsed.format_ok,
                    parsed.hallucinated,
                    text,
                )
        for key, values in columns.items():
            batch[key] = np.asarray(values, dtype=object)
        return batch


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return value

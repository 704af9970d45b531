"""The serving app's settings: what `serve run` and `serve deploy` pass as the application's
``args`` (the export stage writes them into serve.yaml from the profile). Every field has a help
text (`taosr config --fields` lists them under ``serve.yaml args.``), and ``from_dict`` refuses an
unknown key or a value out of its range before a replica loads an engine."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from taosr.config_sections import option
from taosr.labels import DEFAULT_TIERS

ENGINES = ("vllm", "hf")
DTYPES = ("bfloat16", "float16", "float32")


@dataclass
class ServeArgs:
    model_path: str = option("", "the exported model folder (local path or s3://); required")
    beta: float = option(0.5, "CumPT's cumulative-probability threshold for the level (0-1]")
    decision: dict = option(
        factory=dict,
        help="the rest of the decision rule the export stage chose (taosr.decision.DecisionRule): "
        '{"rule": "cumpt" | "argmax", "prior_tau": ..., "level_prior": [...]}; empty: CumPT at beta',
    )
    engine: str = option("vllm", "the scoring engine: vllm or hf (transformers, for checks without vLLM)")
    dtype: str = option("bfloat16", "the engine's weights and activations: bfloat16, float16 or float32")
    max_seq_len: int = option(1024, "longest prompt in tokens a replica accepts (>= 1)")
    kv_cache_gib: int = option(1, "KV cache per CPU engine in GiB (>= 1; on a GPU gpu_memory_utilization sizes it)")
    enable_prefix_caching: bool = option(True, "reuse the KV blocks of a query's shared prefix across its items")
    kv_block_size: int = option(
        32,
        "KV block size in tokens (0: vLLM's default). Only whole blocks are reused, and a query's shared "
        "prefix is about 40-60 tokens, so blocks smaller than vLLM's CPU default of 128 are what make "
        "prefix caching pay (docs/options.md)",
    )
    compile_engine: bool = option(
        True,
        "torch.compile the engine's forward (vLLM's default): more items/s, a slower replica start; "
        "false: eager, for tests and quick checks",
    )
    replica_niceness: int | None = option(
        0, "nice value of the ingress and engine replicas' threads (-20 to 19; null: Ray's 15 for workers)"
    )
    tensor_parallel_size: int = option(1, "GPUs of one LevelModel replica (>= 1; ray_actor_options.num_gpus)")
    enforce_eager: bool = option(True, "GPU engines: run without CUDA graphs (CPU engines always run eager)")
    gpu_memory_utilization: float = option(0.9, "GPU engines: vLLM's share of each GPU (0-1]")
    max_batch_items: int = option(
        256,
        "items one engine call scores at most (>= 1); requests are never split, a larger one goes alone",
    )
    batch_wait_timeout_s: float = option(0.002, "seconds the batcher waits for more items before a call (>= 0)")
    request_deadline_s: float = option(
        0.0,
        "seconds a request may take on the LevelModel (>= 0; 0: no limit): one that would finish later at "
        "the engine's recent rate gets 503 at once; set it to the HTTP request_timeout_s",
    )
    explain_max_new_tokens: int = option(256, "tokens /v1/explain decodes at most per item (>= 1)")
    limits: dict = option(
        factory=dict, help="request limits (taosr.serve.validation.RequestLimits fields); empty: its defaults"
    )
    tiers: dict = option(
        factory=lambda: {str(k): v for k, v in DEFAULT_TIERS.items()},
        help="the tier name of each level, as the response reports it",
    )
    api_keys_env: str = option(
        "",
        "environment variable on the ingress replicas holding comma-separated API keys; when set, "
        "/v1/relevance needs `Authorization: Bearer KEY` or `X-API-Key: KEY` (/healthz stays open); "
        "empty: no authentication, for a private network only",
    )
    max_ongoing_requests: int = option(256, "requests one ingress replica works on at once (>= 1)")
    max_queued_requests: int = option(
        256, "requests one ingress replica lets wait for a free slot (-1: no bound); beyond both, Serve answers 503"
    )
    max_scoring_requests: int = option(
        0,
        "requests one ingress replica lets wait on the model (>= 0; 0: off); past it the ingress answers 503 "
        "with a JSON body and Retry-After, before Serve's own queue fills",
    )
    max_scoring_items: int = option(
        0,
        "items one ingress replica lets wait on the model (>= 0; 0: off): the bound that follows latency; a "
        "request is admitted whenever nothing waits, so none is refused for its size alone",
    )
    retry_after_s: int = option(1, "the Retry-After header of the ingress's 503, in seconds (>= 0)")

    def problems(self) -> list[str]:
        """Each setting out of its range, in one line; empty when all are valid."""
        checks = [
            (bool(self.model_path), "model_path is required"),
            (0 < self.beta <= 1, f"beta {self.beta} must be in (0, 1]"),
            (self.engine in ENGINES, f"engine {self.engine!r} must be one of {', '.join(ENGINES)}"),
            (self.dtype in DTYPES, f"dtype {self.dtype!r} must be one of {', '.join(DTYPES)}"),
            (
                0 < self.gpu_memory_utilization <= 1,
                f"gpu_memory_utilization {self.gpu_memory_utilization} must be in (0, 1]",
            ),
            (
                self.replica_niceness is None or -20 <= self.replica_niceness <= 19,
                f"replica_niceness {self.replica_niceness} must be in -20..19 or null",
            ),
            (self.max_queued_requests >= -1, f"max_queued_requests {self.max_queued_requests} must be >= -1"),
        ]
        at_least = {
            "max_seq_len": 1,
            "kv_cache_gib": 1,
            "kv_block_size": 0,
            "tensor_parallel_size": 1,
            "max_batch_items": 1,
            "batch_wait_timeout_s": 0,
            "request_deadline_s": 0,
            "explain_max_new_tokens": 1,
            "max_ongoing_requests": 1,
            "max_scoring_requests": 0,
            "max_scoring_items": 0,
            "retry_after_s": 0,
        }
        checks += [
            (getattr(self, name) >= low, f"{name} {getattr(self, name)} must be >= {low}")
            for name, low in at_least.items()
        ]
        return [message for ok, message in checks if not ok]

    @classmethod
    def from_dict(cls, args: dict) -> "ServeArgs":
        """The settings from serve.yaml's ``args``, refused with every problem named: an unknown key
        (a typo would otherwise be ignored or fail deep in a replica) or a value out of range."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ValueError(f"serve.yaml args: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        settings = cls(**args)
        wrong = settings.problems()
        if wrong:
            raise ValueError("serve.yaml args: " + "; ".join(wrong))
        return settings

    def as_dict(self) -> dict:
        return asdict(self)

"""The config's sections: one dataclass per stage or concern, every field with a default and a
help text (``option``). ``taosr.config`` assembles them into ``TaosrConfig`` and loads, merges
and saves it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from taosr.limits import InputLimits


def option(default: Any = None, help: str = "", *, factory=None):  # noqa: A002 - mirrors argparse
    """A dataclass field carrying its help text in metadata."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


GPU_MEMORY_HELP = (
    "share of each of its GPUs that vLLM may fill with weights, activations and KV cache (0-1; {why}); "
    "ignored on CPU, where kv_cache_gib sizes the cache"
)


@dataclass
class DataConfig:
    source: str = option(
        "generate",
        "'generate' for the built-in synthetic logs, else a path or s3:// URI of JSONL, Parquet, CSV or TSV logs (a "
        "file or a folder)",
    )
    format: str = option("auto", "input format: auto (from the file suffix), jsonl, parquet, csv or tsv")
    encoding: str = option(
        "utf-8",
        "text encoding of JSONL/CSV/TSV logs (e.g. latin-1, cp1252); rows that do not decode are quarantined as "
        "bad_encoding",
    )
    max_rows: int = option(
        0,
        "use a seeded sample of about this many accepted rows, whole queries at a time (0 = all); the rest are "
        "counted as sampled_out, never silently dropped",
    )
    rows: int = option(1200, "rows to generate when source is 'generate'")
    seed: int = option(0, "seed of the generator and of the splits")
    items_per_query: int = option(6, "items generated per query (a search log shows several items per query)")
    label_mix: dict = option(
        None,
        "target share of each level in generated data; default is TaoSR1's test mix",
        factory=lambda: {"4": 0.50, "3": 0.05, "2": 0.36, "1": 0.09},
    )
    query_type_mix: dict = option(
        None,
        "share of each query type in generated data",
        factory=lambda: {
            "plain": 0.40,
            "negation": 0.15,
            "alternative": 0.15,
            "question_answer": 0.15,
            "knowledge": 0.15,
        },
    )
    split_fractions: dict = option(
        None,
        "train/val/test shares; splits are by query, so no query is in two splits",
        factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1},
    )
    columns: dict = option(
        None,
        "map from our field names to the log's column names, e.g. {query: search_term, title: product_title}",
        factory=dict,
    )
    label_aliases: dict = option(
        None,
        "extra label spellings to levels; ESCI's E/S/C/I are understood by default",
        factory=lambda: {"E": 4, "S": 3, "C": 2, "I": 1, "exact": 4, "substitute": 3, "complement": 2, "irrelevant": 1},
    )
    label_bins: dict = option(
        None,
        "graded labels to levels: each level's lowest score, e.g. {'4': 2.75, '3': 2.25, '2': 1.5, '1': 1.0} for a "
        "mean rating on 1-3; empty: labels are levels or aliases",
        factory=dict,
    )
    max_query_chars: int = option(
        InputLimits.max_query_chars,
        "longer queries are quarantined as oversized (the endpoint refuses them too: taosr.limits)",
    )
    max_title_chars: int = option(InputLimits.max_title_chars, "longer titles are quarantined as oversized")
    max_description_chars: int = option(
        InputLimits.max_description_chars, "longer descriptions (after HTML stripping) are quarantined"
    )
    max_attributes: int = option(InputLimits.max_attributes, "items with more key-value attributes are quarantined")
    max_attribute_chars: int = option(
        InputLimits.max_attribute_chars, "longer attribute keys or values are quarantined"
    )
    s3_endpoint: str = option("", "S3 endpoint override (a MinIO or moto server); empty for AWS")


@dataclass
class ModelConfig:
    name: str = option(
        "smollm2-135m",
        "'smollm2-135m' (embedded default), 'tiny' (random, for tests), a Hugging Face folder, an s3:// folder "
        "(fetched by each actor on its node) or a hub id such as org/name (where the hub is reachable: ray.device "
        "gpu)",
    )
    cache_dir: str = option("~/.cache/taosr/models", "where embedded models are materialised as Hugging Face folders")
    dtype: str = option(
        "bfloat16",
        "the engines' dtype: bfloat16, float16 or float32 (on a CPU without native bf16, ray.cpu_bfloat16 auto "
        "runs float32 instead)",
    )
    max_seq_len: int = option(1024, "longest prompt plus response in tokens")
    kv_block_size: int = option(
        32,
        "KV-cache block in tokens of the vLLM engines of rollouts, pass@N sampling, scoring, prediction and the "
        "GenRM judge (0: vLLM's default; the CoT teacher keeps vLLM's default). Prefix caching reuses whole blocks "
        "only: a block shorter than a prompt's shared part lets a group's rollouts and a query's rows share its "
        "prefill",
    )


@dataclass
class EvalConfig:
    engine: str = option("vllm", "scoring engine: vllm (batched, prefix cached) or hf (plain transformers forward)")
    split: str = option("test", "which split to evaluate")
    max_examples: int = option(0, "evaluate at most this many examples (0 = all)")
    untrained: bool = option(
        True,
        "also score the untrained base model: a row that shows what pretraining alone answers, at the cost of one "
        "more pass over the split",
    )
    batch_size: int = option(64, "prompts per scoring batch")
    num_engines: int = option(1, "scoring actors (one engine each)")
    cpus_per_engine: float = option(1.0, "Ray CPUs reserved by each scoring actor")
    gpus_per_engine: float = option(
        0.0, "GPUs per scoring actor (tensor_parallel_size of them on a GPU cluster; 0 on CPU)"
    )
    tensor_parallel_size: int = option(1, "vLLM tensor parallelism of each scoring engine")
    kv_cache_gib: int = option(1, "vLLM CPU KV cache size per engine in GiB")
    gpu_memory_utilization: float = option(0.9, GPU_MEMORY_HELP.format(why="also the exported Serve replicas' share"))
    decode_samples: int = option(
        0,
        "also decode the full reasoning for this many examples to measure format errors and hallucination (pre-CoT "
        "models are always decoded)",
    )
    max_new_tokens: int = option(256, "longest decoded response")


@dataclass
class CotConfig:
    teacher: str = option(
        "rule",
        "who writes the reasoning: rule (from the knowledge-base trace), vllm (a model on a vLLM actor) or openai "
        "(an OpenAI-compatible endpoint)",
    )
    teacher_model: str = option(
        "", "vllm: a Hugging Face folder or embedded model name; openai: the model name sent to the endpoint"
    )
    teacher_dtype: str = option("bfloat16", "dtype of a vLLM teacher")
    openai_base_url: str = option("", "base URL of an OpenAI-compatible API, e.g. http://host:8000/v1")
    api_key_env: str = option("OPENAI_API_KEY", "environment variable holding the endpoint's API key")
    concurrency: int = option(8, "openai: requests in flight per teacher actor")
    max_teacher_error_share: float = option(
        0.1, "stop the stage when the teacher fails (after its retries) on more than this share of rows"
    )
    temperature: float = option(0.3, "teacher sampling temperature")
    max_new_tokens: int = option(320, "longest rationale a teacher may write")
    rules_path: str = option("", "JSONL of {id, text} atomic rules; empty uses the built-in knowledge base")
    top_k_rules: int = option(4, "rules retrieved (BM25) per (query, item) and given to the teacher")
    min_rule_score: float = option(
        4.0,
        "BM25 score a rule must exceed to be retrieved at all; below it the teacher gets no rule rather than an "
        "unrelated one (0 or more; 0 retrieves the top_k_rules whatever their score)",
    )
    num_teachers: int = option(1, "teacher actors")
    cpus_per_engine: float = option(1.0, "Ray CPUs per teacher actor")
    gpus_per_engine: float = option(0.0, "vllm: GPUs per teacher actor (its tensor_parallel_size of them; 0 on CPU)")
    tensor_parallel_size: int = option(
        1, "vllm: tensor parallelism of the teacher's engine (a 30B teacher needs several GPUs)"
    )
    batch_size: int = option(64, "rows per teacher call")
    gpu_memory_utilization: float = option(0.9, GPU_MEMORY_HELP.format(why="vllm teacher"))


ATTENTION_KERNELS = ("sdpa", "eager")  # the kernels every transformers decoder supports on CPU and GPU
LR_SCHEDULES = ("cosine", "wsd")


@dataclass
class LearnerConfig:
    """The optimizer and the Ray Train + DeepSpeed workers: what every training stage shares."""

    lr: float = option(1e-4, "peak learning rate (small models need far more than the paper's 1e-6 at 42B)")
    warmup_ratio: float = option(
        0.05, "share of steps spent warming up (linearly), then lr_schedule's decay to min_lr_ratio * lr"
    )
    min_lr_ratio: float = option(
        0.1, "the decay ends at this share of the peak lr instead of 0, so the last steps still learn"
    )
    lr_schedule: str = option(
        "cosine",
        "after the warm-up: cosine (decay over every remaining step) or wsd (warm-up, stable, decay: the peak lr "
        "held until the last decay_ratio of the steps, then the same cosine decay over those). A decision learnt "
        "only after a plateau keeps the peak lr through it with wsd",
    )
    decay_ratio: float = option(0.2, "wsd: share of the steps in the final cosine decay")
    train_layers: int = option(
        0,
        "train only the top N decoder blocks and the final norm, the rest (embeddings and tied output head "
        "included) frozen: a step needs no backward pass below them; 0 = train every weight",
    )
    weight_decay: float = option(0.0, "AdamW weight decay")
    micro_batch_size: int = option(4, "examples per worker per forward pass")
    grad_clip: float = option(1.0, "gradient norm clip")
    zero_stage: int = option(2, "DeepSpeed ZeRO stage (0-3)")
    bf16: bool = option(
        True,
        "train in bfloat16 with float32 master weights (DeepSpeed's bf16 mode); on a CPU without native bf16, "
        "ray.cpu_bfloat16 auto turns it off",
    )
    autocast: bool = option(
        False,
        "supervised stages: float32 weights, activations' reductions and gradients with bfloat16 matmuls "
        "(torch.autocast) instead of DeepSpeed's bf16 mode; set bf16 to false with it",
    )
    num_workers: int = option(1, "Ray Train workers (one process each)")
    cpus_per_worker: int = option(2, "CPUs (and torch threads) per worker")
    use_gpu: bool = option(False, "one GPU per worker")
    gradient_checkpointing: bool = option(
        False,
        "recompute each decoder block's activations in the backward pass instead of keeping them: activation "
        "memory falls from one copy per block to about one block's, for roughly a third more compute per step; "
        "for long rows or large micro-batches on GPUs",
    )
    attn_implementation: str = option(
        "sdpa",
        "attention kernel of the trained model and its frozen reference (transformers' attn_implementation): sdpa "
        "(PyTorch's fused attention, transformers' default) or eager (plain matmuls and softmax; on CPU faster for "
        "short rows, slower for long ones)",
    )

    def __post_init__(self):
        if self.attn_implementation not in ATTENTION_KERNELS:
            raise ValueError(
                f"attn_implementation must be one of {', '.join(ATTENTION_KERNELS)}; got {self.attn_implementation!r}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}; got {self.lr_schedule!r}")
        if self.lr_schedule == "wsd" and (
            not 0.0 < self.decay_ratio <= 1.0 or self.warmup_ratio + self.decay_ratio > 1.0
        ):
            raise ValueError(
                f"decay_ratio must be in (0, 1] and leave room for the warm-up (warmup_ratio {self.warmup_ratio}); "
                f"got {self.decay_ratio}"
            )


@dataclass
class TrainerConfig(LearnerConfig):
    """The supervised stages (SFT, DPO): epochs over a fixed dataset."""

    epochs: int = option(1, "passes over the training examples")
    max_examples: int = option(0, "use at most this many training examples (0 = all)")
    max_steps: int = option(0, "stop after this many optimizer steps (0 = the epochs decide)")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    max_seq_len: int = option(512, "prompt plus response tokens; longer responses are cut at the end")
    shuffle: bool = option(
        True, "train in a seeded random order, reshuffled every epoch (rows arrive grouped by query otherwise)"
    )
    shuffle_buffer: int = option(
        100000,
        "rows each worker shuffles at once (Ray Data's local shuffle buffer); at least the shard size gives a full "
        "permutation",
    )
    length_group: int = option(
        1,
        "in each run of this many shuffled micro-batches, put rows that train a whole response apart from rows that "
        "train their level alone (a short row is not padded to a long one), and deal each group's rows out by level "
        "so every micro-batch holds the run's label mix; 1 = off",
    )
    log_every_steps: int = option(5, "print and log the metrics every this many steps")
    checkpoint_every_steps: int = option(100, "report a checkpoint to Ray Train every this many steps (and at the end)")


@dataclass
class SftConfig(TrainerConfig):
    length_group: int = option(
        16,
        "in each run of this many shuffled micro-batches, put rows that train their reasoning apart from rows that "
        "train the level alone (less padding; never sorted by length, which can follow the label), and deal each "
        "group out by level so every micro-batch holds the run's label mix; 1 = off",
    )
    format: str = option(
        "post_cot", "response format: post_cot (label, then reasoning), pre_cot (reasoning, then label) or label_only"
    )
    decision_weight: float = option(
        0.5,
        "share of the loss carried by the level token's cross-entropy (the rest: the mean over the other response "
        "tokens). In a CoT response the decision is ~1 token of ~90; 0 = a plain token mean, 1 = the decision alone",
    )
    reasoning_share: float = option(
        1.0,
        "post-CoT: share of training rows (a seeded draw, 0-1) trained on the whole response; the rest are trained "
        "on the level token alone, so a share below 1 spends the compute on the decision rather than on a format "
        "learned from a few hundred rows",
    )
    class_balance: float = option(
        0.0,
        "weigh each example's decision term by (count of its level)^-class_balance, normalised to mean 1: 0 = off, "
        "1 = inverse frequency, 0.5 = its square root",
    )
    lr: float = option(2e-4, "peak learning rate")
    micro_batch_size: int = option(8, "examples per worker per forward pass")
    epochs: int = option(2, "passes over the training examples")
    eval_every_steps: int = option(
        50,
        "every this many steps, score eval_examples validation rows by their first-token level distribution "
        "(macro-F1, QWK, the decision's cross-entropy); 0 = off. Post-CoT and label-only only",
    )
    eval_examples: int = option(256, "validation rows scored while training (a seeded sample of the val split)")
    keep_best: bool = option(
        True,
        "the saved model is the validated step with the best macro-F1 (the last step when validation is off). A "
        "resumed run tracks the best from its restart on",
    )
    patience: int = option(
        0,
        "stop when this many validation checks in a row bring no macro-F1 gain of more than min_delta over the best "
        "so far (the best step is kept); 0 = train to the step budget. Needs eval_every_steps",
    )
    min_delta: float = option(0.0, "the smallest validation macro-F1 gain (0-1 scale) that resets the patience count")
    max_minutes: float = option(
        0.0,
        "stop at the first step past this many minutes of training in this attempt (0 = no cap); the best validated "
        "step is kept",
    )

    def __post_init__(self):
        super().__post_init__()
        if self.patience < 0 or self.min_delta < 0 or self.max_minutes < 0:
            raise ValueError("patience, min_delta and max_minutes must be 0 or more")
        if self.patience and not self.eval_every_steps:
            raise ValueError("patience counts validation checks: set eval_every_steps too")


@dataclass
class SampleConfig:
    n: int = option(5, "samples per training prompt (the N of pass@N; the paper's table uses 5)")
    temperature: float = option(1.0, "sampling temperature")
    top_p: float = option(1.0, "nucleus sampling threshold (1 = off)")
    top_k: int = option(0, "top-k truncation (0 = off)")
    max_new_tokens: int = option(
        160, "longest sampled response; post-CoT responses put the label first, so a cut response still has its label"
    )
    max_prompts: int = option(0, "sample at most this many training prompts (0 = all)")
    batch_size: int = option(32, "prompts per engine call")
    num_engines: int = option(1, "rollout actors (one vLLM engine each)")
    cpus_per_engine: float = option(1.0, "Ray CPUs per rollout actor")
    gpus_per_engine: float = option(0.0, "GPUs per rollout actor (set to tensor_parallel_size on GPU clusters)")
    tensor_parallel_size: int = option(1, "vLLM tensor parallelism per engine")
    kv_cache_gib: int = option(1, "vLLM CPU KV cache per engine in GiB")
    gpu_memory_utilization: float = option(0.9, GPU_MEMORY_HELP.format(why="pass@N sampling engines"))


@dataclass
class DpoConfig(TrainerConfig):
    beta: float = option(0.1, "DPO temperature: strength of the pull towards the reference")
    label_smoothing: float = option(0.0, "conservative DPO: assumed share of flipped preferences")
    nll_weight: float = option(
        0.0,
        "weight of the chosen responses' per-token NLL added to the DPO loss (RPO; 0 = standard DPO as in the "
        "paper). Try 1.0 when DPO breaks the output format",
    )
    decision_scale: float = option(
        1.0,
        "times the level token (a post-CoT response's first) counts in the log-probabilities DPO compares, for "
        "policy and reference alike (1 or more; 1 = standard DPO, every token once; the decision is one token of "
        "the tens a pair differs by)",
    )
    lr: float = option(5e-6, "peak learning rate")
    micro_batch_size: int = option(2, "pairs per worker per forward pass (each pair is two sequences)")
    pairs_per_prompt: int = option(1, "at most this many distinct pairs per prompt")
    reference_batch_size: int = option(16, "sequences per forward pass when precomputing reference log-probs")

    def __post_init__(self):
        super().__post_init__()
        if self.decision_scale <= 0:
            raise ValueError(
                f"dpo.decision_scale={self.decision_scale}: the level token's log-probability must "
                "count a positive number of times (1 = standard DPO)"
            )


@dataclass
class FaultInjection:
    """Testing only: failures the RL loop injects into itself so that its tests can prove each
    recovery path. Every field is 0 (off) in a real run."""

    skip_sync_step: int = option(0, "skip the weight push after this step, to prove the sync check stops the run")
    kill_engine_before_step: int = option(
        0,
        "kill the first rollout actor just before this step's rollout, to prove Ray restarts it and the loop "
        "restores its weights",
    )
    crash_after_step: int = option(
        0, "the first attempt fails right after this step, to prove resume from the last checkpoint"
    )


@dataclass
class GrpoConfig(LearnerConfig):
    """Stage 3 (and the loop SRPO reuses): RL with group-relative advantages."""

    steps: int = option(12, "optimizer steps (each: roll out, score, update, sync the engines)")
    prompts_per_step: int = option(8, "groups (prompts) per optimizer step after dynamic sampling")
    group_size: int = option(4, "rollouts per prompt (G; the paper's recipe uses 16)")
    oversample: float = option(1.5, "prompts requested per missing group in each refill round")
    max_refill_rounds: int = option(4, "refill rounds per step; a step that is still short trains on what it kept")
    temperature: float = option(1.0, "rollout sampling temperature (the team's recipe: 0.99)")
    top_k: int = option(0, "rollout top-k truncation (0 = off; the team's recipe: 100)")
    top_p: float = option(1.0, "rollout nucleus threshold (1 = off)")
    max_new_tokens: int = option(160, "longest rollout")
    advantage: str = option("grpo", "advantage estimator by name (taosr.advantages registry): grpo, or srpo in stage 4")
    partial_credit: bool = option(
        False,
        "reward 1 - |pred - gold| / 3 instead of 0 for a wrong but well-formed label (off: a wrong label earns 0; "
        "on averaged ratings it can pay hedging to a middle level)",
    )
    format_gate: bool = option(
        True,
        "a response that breaks the post-CoT format earns 0 whatever its label (off: the first-token label alone "
        "decides)",
    )
    clip_eps: float = option(0.2, "importance-ratio clip")
    kl_coef: float = option(0.02, "weight of the KL penalty to the frozen start model (0 skips the reference model)")
    advantage_clip: float = option(2.0, "per-token advantage clamp")
    min_pass_rate: float = option(0.01, "dynamic sampling: drop groups whose pass rate is below this")
    max_pass_rate: float = option(0.9, "dynamic sampling: drop groups whose pass rate is above this (gamma)")
    prefilter_min: float = option(0.0, "skip prompts whose offline pass@N rate (stage 2) is below this")
    prefilter_max: float = option(1.0, "skip prompts whose offline pass@N rate is above this (1.0 keeps all)")
    label_cv: float = option(0.0, "target coefficient of variation of the prompts' label mix (0 = balanced)")
    label_cap: float = option(
        1.0,
        "most of a step's kept groups one relevance level may fill after dynamic sampling (share, rounded up; 1 = "
        "no cap, 0.25 = the four levels evenly): the filter drops levels unevenly, so the trained mix drifts from "
        "the balanced draw without it",
    )
    diverse: bool = option(
        False,
        "diversified filtering (TaoSR-SHE): take groups with more distinct step-verdict paths first, drop those "
        "below min_distinct_paths, cap each query type's share",
    )
    min_distinct_paths: int = option(
        2, "diversified filtering: drop groups whose rollouts take fewer distinct step-verdict paths"
    )
    query_type_cap: float = option(
        0.5, "diversified filtering: most of a batch's groups one query type may fill (share; at least one group)"
    )
    lr: float = option(2e-6, "peak learning rate (the paper: 1e-6 at 42B)")
    warmup_ratio: float = option(0.0, "share of steps spent warming up, then cosine decay")
    micro_batch_size: int = option(8, "sequences per worker per forward pass")
    num_engines: int = option(1, "rollout actors (one vLLM engine each)")
    cpus_per_engine: float = option(1.0, "Ray CPUs per rollout actor")
    gpus_per_engine: float = option(
        0.0, "GPUs per rollout actor: tensor_parallel_size on separate GPUs, a fraction to colocate with the learner"
    )
    tensor_parallel_size: int = option(1, "vLLM tensor parallelism per engine")
    kv_cache_gib: int = option(1, "vLLM CPU KV cache per engine in GiB")
    gpu_memory_utilization: float = option(
        0.5, GPU_MEMORY_HELP.format(why="rollout engines; 0.5 leaves room for a learner colocated on the GPU")
    )
    sync_tolerance: float = option(
        0.05, "weight-sync probe: largest allowed mean |log-prob| gap between learner and engine"
    )
    sync_timeout_s: float = option(300.0, "a weight push or probe slower than this is an error, not a hang")
    weight_sync: str = option(
        "collective",
        "how new weights reach the engines after each step: collective (each bucket broadcast over a process group "
        "of the learner's rank 0 and every engine worker: gloo on CPU, NCCL on GPU) or object_store (each bucket put "
        "in Ray's object store once and read by every engine: the fallback where the learners and the engines cannot "
        "reach each other's ports)",
    )
    sync_bucket_mb: float = option(
        256.0,
        "MiB of parameters per weight-sync bucket (in the engine's dtype; > 0): the learner holds one bucket beyond "
        "its model while it sends, and under ZeRO-3 gathers one bucket's parameters at a time",
    )
    rollout_timeout_s: float = option(900.0, "a rollout call slower than this is an error")
    log_every_steps: int = option(1, "print and log every this many steps")
    checkpoint_every_steps: int = option(
        4, "save learner state (model, optimizer, scheduler, RNG, prompt cursor) every this many steps"
    )
    stall_alarm_steps: int = option(
        3,
        "log a dynamic-sampling alarm after this many consecutive steps that kept no group (the policy answers "
        "every prompt all-right or all-wrong)",
    )
    lost_format_abort: float = option(
        0.95,
        "with format_gate on, stop the job once stall_alarm_steps steps in a row kept no group and at least this "
        "share of a step's rollouts broke the format: the start model has lost the output format and no reward can "
        "vary (above 1: never stop)",
    )
    entropy_alarm_ratio: float = option(
        0.5, "log an entropy-collapse alarm when policy entropy falls below this share of its first measured value"
    )
    eval_every_steps: int = option(
        0,
        "every this many steps (and at step 0, before the first update), score eval_examples validation rows by the "
        "policy's first-token level distribution (macro-F1, QWK, decision cross-entropy; in metrics.jsonl and "
        "TensorBoard); 0 = off",
    )
    eval_examples: int = option(256, "validation rows scored at each check (a seeded sample of the val split)")
    keep_best: bool = option(
        True,
        "with validation on, the saved model is the checked step with the best macro-F1, step 0 (the start model) "
        "included: a stage that only lowers validation hands on the model it started from",
    )
    patience: int = option(
        0,
        "stop when this many validation checks in a row bring no macro-F1 gain of more than min_delta over the best "
        "so far (0 = run every step)",
    )
    min_delta: float = option(0.0, "the smallest validation macro-F1 gain (0-1 scale) that resets the patience count")
    max_minutes: float = option(
        0.0,
        "stop at the first step past this many minutes of this attempt's loop (0 = no cap); with validation on, the "
        "best checked step is kept",
    )
    faults: FaultInjection = option(
        factory=lambda: FaultInjection(), help="testing only: failures injected to prove the loop's recovery paths"
    )

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.faults, dict):  # built from another section's asdict()
            self.faults = FaultInjection(**self.faults)
        # A misspelled estimator fails when the config loads, not after the engines, DeepSpeed
        # and the reference model have started.
        from taosr.advantages import get_estimator

        get_estimator(self.advantage)
        if self.weight_sync not in ("object_store", "collective"):
            raise ValueError(f"weight_sync={self.weight_sync!r}: use object_store or collective")
        if not self.sync_bucket_mb > 0:
            raise ValueError(f"sync_bucket_mb={self.sync_bucket_mb}: a bucket must hold some MiB (> 0)")
        if self.patience and not self.eval_every_steps:
            raise ValueError("patience counts validation checks: set eval_every_steps too")
        if not 0.25 <= self.label_cap <= 1.0:
            raise ValueError(
                f"label_cap={self.label_cap}: it must lie in [0.25, 1] (below a quarter the four "
                "relevance levels could never fill a batch)"
            )


def _default_curriculum() -> list:
    return [
        {"name": "easy", "prefilter_min": 0.6, "prefilter_max": 1.0, "steps": 4},
        {"name": "mixed", "prefilter_min": 0.2, "prefilter_max": 0.8, "steps": 4},
        {"name": "hard", "prefilter_min": 0.0, "prefilter_max": 0.4, "steps": 4},
    ]


@dataclass
class SrpoConfig(GrpoConfig):
    """Stage 4 (TaoSR-SHE): the GRPO loop with step-level advantages and a curriculum."""

    steps: int = option(0, "not used: each curriculum stage sets its own step budget (their sum is the stage's budget)")
    advantage: str = option("srpo", "advantage estimator by name (taosr.advantages registry)")
    lam: float = option(0.5, "weight of the step term in A_ik = A_i + lam * w_ik * (s_ik - mean_j s_jk); 0 is GRPO")
    critical_weight: float = option(
        2.0, "w_ik for critical steps (a step whose reward differs from its group's majority)"
    )
    verifier_coverage: float = option(
        0.3, "share of annotated prompts the offline verifier keeps (the GenRM scores the rest)"
    )
    genrm: str = option(
        "auto",
        "generative stepwise reward model for the steps the verifier cannot judge: auto (<run_dir>/genrm/model when "
        "it exists), a model folder, or none",
    )
    genrm_cpus_per_engine: float = option(1.0, "Ray CPUs of the GenRM actor")
    genrm_gpus_per_engine: float = option(0.0, "GPUs of the GenRM actor (a fraction to share one)")
    genrm_gpu_memory_utilization: float = option(
        0.3, GPU_MEMORY_HELP.format(why="the GenRM judge, which often shares a GPU with a rollout engine")
    )
    genrm_timeout_s: float = option(600.0, "a GenRM scoring call slower than this is an error")
    diverse: bool = option(True, "diversified filtering (see grpo.diverse)")
    curriculum: list = option(
        None,
        "stages run in order, each {name, prefilter_min, prefilter_max, steps}: the offline pass-rate window that "
        "selects its prompts and its step budget",
        factory=_default_curriculum,
    )
    start_from: str = option(
        "latest",
        "the policy SRPO starts from: latest (the last trained one before it, GRPO's when the run has one: SRPO "
        "refines the chain, as the report's stage-by-stage differences read it) or dpo (an arm beside GRPO from the "
        "same start; SFT's model when there is no DPO)",
    )

    def __post_init__(self):
        super().__post_init__()
        if self.start_from not in ("latest", "dpo"):
            raise ValueError(f"srpo.start_from must be latest or dpo; got {self.start_from!r}")


@dataclass
class GenrmConfig(TrainerConfig):
    """The generative stepwise reward model SRPO uses (docs/method.md section 6), trained with SFT's
    machinery on Yes/No questions about correct and corrupted annotated steps."""

    base_model: str = option("", "model the GenRM is fine-tuned from (empty: the run's model.name)")
    eval_split: str = option("val", "split whose annotated steps measure the GenRM's step accuracy")
    eval_rows: int = option(
        60, "annotated rows of eval_split asked about (every judged step, correct and corrupted; 0 = all)"
    )
    kv_cache_gib: int = option(1, "vLLM CPU KV cache of the evaluation engine in GiB")
    gpu_memory_utilization: float = option(0.9, GPU_MEMORY_HELP.format(why="the GenRM's evaluation judge"))


@dataclass
class ExportConfig:
    model_stage: str = option(
        "last",
        "which trained stage's model to export for serving: sft, dpo, grpo, srpo, or last (the latest that exists)",
    )
    beta_split: str = option("val", "split the CumPT threshold is chosen on (never the split the table reports)")
    beta_metric: str = option("macro_f1", "tier metric the chosen beta maximises")
    keep_argmax_within_noise: bool = option(
        True,
        "serve the plain argmax unless the best CumPT or prior-corrected rule beats it on beta_split beyond noise "
        "(the 95% paired-bootstrap interval of its gain excludes 0); off: serve the best rule whatever its margin",
    )
    max_examples: int = option(0, "score at most this many examples of beta_split (0 = all)")


@dataclass
class ServeCheckConfig:
    port: int = option(8000, "port of the endpoint the pipeline's serve stage starts on 127.0.0.1")
    sample_items: int = option(5, "items of one held-out query sent as the sample request")
    keep_running: bool = option(False, "leave the endpoint up when the pipeline ends (blocks until Ctrl-C)")
    exposure: str = option(
        "auto",
        "who the exported serve.yaml serves: local (127.0.0.1 on the head node, no API keys), cluster (every "
        "interface of every node, proxy_location EveryNode, API keys required) or auto (cluster when ray.address "
        "is set or ray.device is gpu)",
    )
    api_keys_env: str = option(
        "TAOSR_API_KEYS",
        "cluster exposure: environment variable holding the endpoint's comma-separated API keys on the nodes "
        "(set it where `ray start` runs; cluster.yaml reads it from a secret); a replica without it refuses to start",
    )

    def __post_init__(self):
        if self.exposure not in ("auto", "local", "cluster"):
            raise ValueError(f"serve.exposure must be auto, local or cluster; got {self.exposure!r}")

    def on_cluster(self, ray: "RayConfig") -> bool:
        """Whether the exported endpoint is exposed to other machines (and so needs API keys)."""
        if self.exposure == "auto":
            return bool(ray.address) or ray.device == "gpu"
        return self.exposure == "cluster"


@dataclass
class RayConfig:
    address: str = option(
        "", "Ray cluster address; empty starts a local cluster (or joins the one `ray job submit` runs in)"
    )
    num_cpus: int = option(
        0, "logical CPUs of a local cluster (0 = physical count); may exceed the cores so actors fit"
    )
    progress_bars: bool = option(
        True,
        "Ray Data's progress bars for the data, CoT, sampling, eval and prediction passes (TAOSR_PROGRESS_BARS=0 "
        "turns them off, as the test suite does)",
    )
    device: str = option(
        "cpu",
        "cpu or gpu: on cpu every worker gets the CPU settings (DS_ACCELERATOR=cpu, 2 OpenMP threads, vLLM's CPU KV "
        "cache, an offline hub); on gpu none of them",
    )
    learner_node_resource: str = option(
        "",
        "a custom resource every learner worker (SFT, DPO, GenRM, GRPO, SRPO) also asks for, one unit per GPU (one "
        "unit for a CPU worker), so the autoscaler starts the node type that offers it (cluster.yaml's H100 type "
        "offers learner_gpu); empty: any node with room",
    )
    parquet_footer_readers: int = option(
        1,
        "actors Ray Data starts to read Parquet footers, per read (RAY_DATA_PARQUET_FOOTER_NUM_ACTORS; each a "
        "worker process, each reading 128 files at once): 1 suits a run's own few-file artifacts, raise it for "
        "input folders of many thousands of files on S3; 0 leaves Ray's default (32 in Ray 2.60)",
    )
    engine_node_resource: str = option(
        "",
        "the same for every GPU engine and replica (CoT teacher, pass@N sampling, evaluation, rollouts, the GenRM "
        "judge, prediction, Serve replicas); cluster.yaml's L40S type offers engine_gpu",
    )
    cpu_bfloat16: str = option(
        "auto",
        "cpu: auto runs model.dtype, the learners' bf16 and autocast in bfloat16 only where the CPU computes it "
        "natively (AVX512-BF16 or AMX on x86, BF16 on Arm) and in float32 elsewhere, where emulated bf16 was "
        "7-13x slower (taosr/precision.py); keep: the profile's dtypes whatever the CPU",
    )
    cuda_graphs: bool = option(
        True,
        "gpu: vLLM engines capture CUDA graphs for decoding (vLLM's default: faster decoding for a slower start and "
        "some GPU memory); false runs them eager, as CPU engines always run",
    )

    def __post_init__(self):
        if self.device not in ("cpu", "gpu"):
            raise ValueError(f"ray.device must be cpu or gpu; got {self.device!r}")
        if self.cpu_bfloat16 not in ("auto", "keep"):
            raise ValueError(f"ray.cpu_bfloat16 must be auto or keep; got {self.cpu_bfloat16!r}")
        if self.parquet_footer_readers < 0:
            raise ValueError(
                f"ray.parquet_footer_readers must be 0 (Ray's default) or more; got {self.parquet_footer_readers}"
            )

    def vllm_options(self, gpu_memory_utilization: float) -> dict[str, Any]:
        """The engine settings that follow the device: CUDA graphs on GPU (unless ``cuda_graphs`` is
        off), eager on CPU, where vLLM has no graphs to capture; and the engine kind's GPU share."""
        return {
            "enforce_eager": self.device == "cpu" or not self.cuda_graphs,
            "gpu_memory_utilization": gpu_memory_utilization,
        }

    def engine_options(self, cpus: float, gpus: float) -> dict[str, Any]:
        """Ray's resource options for one engine, actor or replica (``ray.remote``, Ray Data's
        ``map_batches``, Serve's ``ray_actor_options``): its CPUs, its GPUs (None for none, as Ray
        Data wants) and the node resource that places a GPU engine on an engine node type."""
        return {"num_cpus": cpus, "num_gpus": gpus or None, "resources": _per_gpu(self.engine_node_resource, gpus)}

    def learner_resources(self, cpus: float, use_gpu: bool) -> dict[str, float]:
        """Ray Train's ``resources_per_worker`` for one learner worker (its GPU comes from
        ``use_gpu``): its CPUs and the node resource that places it on a learner node type."""
        return {"CPU": cpus, **_per_gpu(self.learner_node_resource, 1 if use_gpu else 0)}


def _per_gpu(resource: str, gpus: float) -> dict[str, float]:
    # One unit per GPU, so a node type offering N units takes exactly the work its N GPUs fit;
    # CPU-only work on a named node type takes one unit (the autoscaling test's CPU profile).
    if not resource:
        return {}
    return {resource: float(gpus) if gpus else 1.0}


def step_reward_section(rl: GrpoConfig) -> SrpoConfig:
    """The section's step-reward settings (verifier coverage, the GenRM's engine, lambda): only
    the srpo section has them, so an estimator that reads step rewards runs from it."""
    if not isinstance(rl, SrpoConfig):
        raise ValueError(
            f"advantage {rl.advantage!r} reads step rewards, whose settings only the srpo section has; "
            "run it as the srpo stage"
        )
    return rl

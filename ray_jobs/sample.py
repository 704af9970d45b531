"""Stage 2a: offline pass@N sampling of the SFT model over the training prompts.

    ray job submit --working-dir . -- python -m taosr.ray_jobs.sample --config configs/tiny.yaml

Ray Data streams the training rows through a pool of rollout actors (one vLLM engine each).
Every prompt gets ``sample.n`` responses; each is parsed, and it is correct when its first-token
label equals the gold label. Written under <run_dir>/sample/:
- ``samples/``: Parquet, one row per prompt: the N responses, their labels, format flags,
  correctness, the number correct, and the teacher's (oracle) response for the gold label;
- ``pass_rates/``: Parquet, (id, query_type, label, n, num_correct, pass_rate): the GRPO
  difficulty filter and the SRPO curriculum read it;
- ``pass_at_k.json`` and ``pass_at_k.md``: mean pass@k for k = 1..N, overall and per query type.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

from taosr.actors.runtime import init_ray
from taosr.actors.rollout import RolloutEngine, SamplingSpec
from taosr.config import SampleConfig, TaosrConfig, to_dict, to_yaml
from taosr.datasets.storage import join, read_parquet, write_dataset, write_json, write_text
from taosr.formats import ParsedResponse, Reasoning, ResponseFormat, parse, render
from taosr.metrics import NO_ANSWER, pass_at_k_table
from taosr.prompts import build_prompt, item_from_row
from taosr.stages.job_args import parse_job_args
from taosr.stages.registry import StageSpec

PASS_RATE_COLUMNS = ("id", "query_id", "query", "query_type", "label", "n", "num_correct", "pass_rate")
SAMPLE_INPUT_COLUMNS = (
    "id",
    "query_id",
    "query",
    "title",
    "category",
    "attributes",
    "price",
    "description",
    "label",
    "query_type",
    "reasoning",
)


class PassAtNSampler:
    """Ray Data callable class: training rows -> the same rows with N parsed samples each."""

    def __init__(
        self,
        model_path: str,
        sample: dict,
        dtype: str,
        max_seq_len: int,
        seed: int,
        kv_block_size: int = 0,
        vllm_options: dict | None = None,
    ):
        self.engine = RolloutEngine(
            model_path,
            dtype=dtype,
            max_seq_len=max_seq_len,
            seed=seed,
            kv_cache_gib=sample["kv_cache_gib"],
            tensor_parallel_size=sample["tensor_parallel_size"],
            kv_block_size=kv_block_size,
            **(vllm_options or {}),
        )
        self.spec = SamplingSpec(
            n=sample["n"],
            temperature=sample["temperature"],
            top_p=sample["top_p"],
            top_k=sample["top_k"],
            max_new_tokens=sample["max_new_tokens"],
        )

    def __call__(self, batch):
        import pyarrow as pa

        rows = batch.to_pylist()
        tokenizer = self.engine.tokenizer
        prompts = [build_prompt(tokenizer, row["query"], item_from_row(row), ResponseFormat.POST_COT) for row in rows]
        groups = self.engine.generate(prompts, self.spec)
        out = []
        for row, group in zip(rows, groups):
            parsed: list[ParsedResponse] = [parse(ResponseFormat.POST_COT, r.text) for r in group]
            labels = [p.label if p.label is not None else NO_ANSWER for p in parsed]
            correct = [label == int(row["label"]) for label in labels]
            out.append(
                {
                    **{key: row[key] for key in SAMPLE_INPUT_COLUMNS if key != "reasoning"},
                    "oracle": oracle_response(row),
                    "samples": [r.text for r in group],
                    "sample_labels": labels,
                    "sample_format_ok": [p.format_ok for p in parsed],
                    "sample_tokens": [len(r.token_ids) for r in group],
                    "correct": correct,
                    "n": len(group),
                    "num_correct": sum(correct),
                    "pass_rate": sum(correct) / len(group),
                }
            )
        return pa.Table.from_pylist(out)


def oracle_response(row: dict) -> str | None:
    """The teacher's post-CoT response for the gold label (oracle guidance), if it wrote one."""
    if not row.get("reasoning"):
        return None
    return render(ResponseFormat.POST_COT, int(row["label"]), Reasoning(**json.loads(row["reasoning"])))


def training_prompts(config: TaosrConfig):
    """Training rows with the teacher's rationale where CoT synthesis kept one."""

    kept = read_parquet(join(config.run_dir, "cot", "kept"), config.data.s3_endpoint)
    rows = kept.filter(expr="split == 'train'").select_columns(list(SAMPLE_INPUT_COLUMNS))
    return rows.limit(config.sample.max_prompts) if config.sample.max_prompts else rows


def sample_dataset(rows, model_path: str, config: TaosrConfig):
    sample: SampleConfig = config.sample
    return rows.map_batches(
        PassAtNSampler,
        fn_constructor_kwargs=dict(
            model_path=model_path,
            sample=to_dict(config)["sample"],
            dtype=config.model.dtype,
            max_seq_len=config.model.max_seq_len,
            seed=config.seed,
            kv_block_size=config.model.kv_block_size,
            vllm_options=config.ray.vllm_options(sample.gpu_memory_utilization),
        ),
        batch_size=sample.batch_size,
        batch_format="pyarrow",
        concurrency=sample.num_engines,
        **config.ray.engine_options(sample.cpus_per_engine, sample.gpus_per_engine),
    )


def pass_at_k_summary(rows: list[dict], n: int) -> dict:
    """pass@1..N overall and per query type, from each prompt's (n, num_correct)."""
    by_type: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for row in rows:
        by_type[str(row["query_type"])].append((int(row["n"]), int(row["num_correct"])))
    everything = [pair for pairs in by_type.values() for pair in pairs]

    def table(pairs):
        return {f"pass@{k}": value for k, value in pass_at_k_table(pairs, n).items()}

    return {
        "prompts": len(everything),
        "overall": table(everything),
        "by_query_type": {name: {"prompts": len(pairs), **table(pairs)} for name, pairs in sorted(by_type.items())},
        "all_wrong_prompts": sum(1 for _, c in everything if c == 0),
        "all_right_prompts": sum(1 for s, c in everything if c == s),
    }


def pass_at_k_markdown(summary: dict, n: int) -> str:
    ks = range(1, n + 1)
    lines = ["| prompts | query type | n | " + " | ".join(f"pass@{k}" for k in ks) + " |", "|---" * (n + 3) + "|"]
    groups = {"all": {"prompts": summary["prompts"], **summary["overall"]}, **summary["by_query_type"]}
    for name, table in groups.items():
        cells = " | ".join(f"{100 * table[f'pass@{k}']:.2f}" for k in ks)
        lines.append(f"| {table['prompts']} | {name} | {n} | {cells} |")
    return "\n".join(lines) + "\n"


def run(config: TaosrConfig, model_path: str) -> dict:
    out = join(config.run_dir, "sample")
    endpoint = config.data.s3_endpoint
    sampled = sample_dataset(training_prompts(config), model_path, config).materialize()
    write_dataset(sampled, join(out, "samples"), endpoint)
    rates = sampled.select_columns(list(PASS_RATE_COLUMNS))
    write_dataset(rates, join(out, "pass_rates"), endpoint)
    summary = pass_at_k_summary(rates.take_all(), config.sample.n)
    if not summary["prompts"]:
        raise ValueError(f"no training prompts to sample under {join(config.run_dir, 'cot', 'kept')}")
    summary.update(model=model_path, temperature=config.sample.temperature)
    write_json(join(out, "pass_at_k.json"), summary, endpoint)
    write_text(join(out, "pass_at_k.md"), pass_at_k_markdown(summary, config.sample.n), endpoint)
    write_text(join(out, "config.yaml"), to_yaml(config), endpoint)
    return summary


def run_stage(config: TaosrConfig) -> dict:
    return run(config, join(config.run_dir, "sft", "model"))["overall"]


STAGE = StageSpec("sample", ("sample",), ("cot", "sft"), run=run_stage)


def main(argv=None) -> int:
    config = parse_job_args(argv, __doc__)
    init_ray(config.ray, config.data.s3_endpoint)
    summary = run(config, join(config.run_dir, "sft", "model"))
    print(pass_at_k_markdown(summary, config.sample.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())

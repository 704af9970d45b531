"""Evaluation job: score a split with first-token level probabilities on a pool of scoring
actors (Ray Data over vLLM engines) and write the metrics table, overall and per query type.

    ray job submit --working-dir . -- python -m taosr.ray_jobs.eval --config configs/tiny.yaml
"""

from __future__ import annotations

import json
import sys

from taosr.actors.runtime import init_ray
from taosr.actors.scorer import PROB_COLUMNS, LevelScorer
from taosr.config import TaosrConfig, to_yaml
from taosr.datasets.storage import join, write_json, write_text
from taosr.metrics import evaluate_records, markdown_table
from taosr.models import resolve_model
from taosr.ray_jobs.job_args import parse_job_args

MODEL_INPUT_COLUMNS = ("id", "query", "title", "category", "attributes", "price", "description", "label", "query_type")
KEEP_COLUMNS = ("id", "query", "query_type", "label", "pred", *PROB_COLUMNS)


def score_split(config: TaosrConfig, model_path: str):
    """Score the configured split of the accepted data; returns a list of scored rows."""
    import ray

    accepted = ray.data.read_parquet(join(config.run_dir, "data", "accepted"))
    split = accepted.filter(expr=f"split == '{config.eval.split}'").select_columns(list(MODEL_INPUT_COLUMNS))
    if config.eval.max_examples:
        split = split.limit(config.eval.max_examples)
    scored = split.map_batches(
        LevelScorer,
        fn_constructor_kwargs=dict(model_path=model_path, engine=config.eval.engine, dtype=config.model.dtype,
                                   max_seq_len=config.model.max_seq_len, kv_cache_gib=config.eval.kv_cache_gib,
                                   seed=config.seed),
        batch_size=config.eval.batch_size,
        batch_format="numpy",
        concurrency=config.eval.num_engines,
        num_cpus=config.eval.num_cpus_per_engine,
    )
    return scored.select_columns(list(KEEP_COLUMNS)).take_all()


def evaluate_model(config: TaosrConfig, name: str, model_path: str) -> dict:
    """Score, compute metrics, and write metrics.json, metrics.md and predictions under eval/<name>/."""
    rows = score_split(config, model_path)
    if not rows:
        raise ValueError(f"split {config.eval.split!r} of {config.run_dir} has no rows to evaluate")
    records = [{"gold": int(r["label"]), "pred": int(r["pred"]), "query_type": r["query_type"]} for r in rows]
    metrics = evaluate_records(records)
    out = join(config.run_dir, "eval", name)
    endpoint = config.data.s3_endpoint
    write_json(join(out, "metrics.json"), {"model": model_path, "split": config.eval.split, **metrics}, endpoint)
    write_text(join(out, "metrics.md"), render_markdown(name, metrics), endpoint)
    write_text(join(out, "predictions.jsonl"), "\n".join(json.dumps(r, default=float) for r in rows) + "\n", endpoint)
    write_text(join(out, "config.yaml"), to_yaml(config), endpoint)
    return metrics


def render_markdown(name: str, metrics: dict) -> str:
    parts = [f"## {name}: overall\n", markdown_table({name: metrics["overall"]}),
             f"\n\n## {name}: by query type\n", markdown_table(metrics["by_query_type"])]
    return "".join(parts) + "\n"


def main(argv=None) -> int:
    config = parse_job_args(argv, __doc__)
    init_ray(config.ray)
    model_path = resolve_model(config.model.name, config.model.cache_dir)
    metrics = evaluate_model(config, "base", model_path)
    print(render_markdown("base", metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())

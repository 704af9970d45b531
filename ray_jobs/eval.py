"""Evaluation job: score a split on a pool of scoring actors (Ray Data over vLLM engines) and
write the metrics table, overall and per query type.

Post-CoT and label-only models are scored by the first-token distribution over the four level
tokens (no decoding). Pre-CoT models put the label last, so their responses are decoded and
parsed. ``eval.decode_samples`` also decodes a sample of any CoT model's responses to measure
format errors and discriminative hallucination.

    ray job submit --working-dir . -- python -m taosr.ray_jobs.eval --config configs/tiny.yaml
"""

from __future__ import annotations

import json
import os
import sys

from taosr.actors.runtime import init_ray
from taosr.actors.scorer import PROB_COLUMNS, DecodingScorer, LevelScorer, SampledDecodingScorer
from taosr.config import TaosrConfig, to_yaml
from taosr.datasets.embedded_models import resolve_model
from taosr.datasets.storage import join, read_parquet, write_json, write_text
from taosr.formats import ResponseFormat
from taosr.metrics import DECODED_COLUMNS, LEVEL_ORDER, TABLE_COLUMNS, evaluate_records, markdown_table
from taosr.stages.registry import StageSpec, policy_stages

MODEL_INPUT_COLUMNS = ("id", "query", "title", "category", "attributes", "price", "description", "label", "query_type")
SCORED_COLUMNS = ("id", "query", "query_type", "label", "pred", *PROB_COLUMNS)
DECODED_ROW_COLUMNS = ("id", "query", "query_type", "label", "pred", "format_ok", "hallucinated", "response")


def model_format(model_path: str) -> ResponseFormat:
    """The response format a model was trained in (post-CoT for models we did not train)."""
    info = os.path.join(model_path, "taosr-model.json")
    if os.path.isfile(info):
        with open(info) as handle:
            return ResponseFormat(json.load(handle).get("format", "post_cot"))
    return ResponseFormat.POST_COT


def _split_rows(config: TaosrConfig):
    accepted = read_parquet(join(config.run_dir, "data", "accepted"), config.data.s3_endpoint)
    split = accepted.filter(expr=f"split == '{config.eval.split}'").select_columns(list(MODEL_INPUT_COLUMNS))
    return split.limit(config.eval.max_examples) if config.eval.max_examples else split


def _run(rows, scorer_cls, model_path: str, fmt: ResponseFormat, config: TaosrConfig, columns, **extra):
    return scored_dataset(rows, scorer_cls, model_path, fmt, config, **extra).select_columns(list(columns)).take_all()


def scored_dataset(rows, scorer_cls, model_path: str, fmt: ResponseFormat, config: TaosrConfig, **extra):
    """``rows`` (a Ray Dataset) mapped through ``scorer_cls`` engines on ``model_path`` with the
    eval section's engine settings; lazy, so a caller can stream it or take it."""
    kwargs = dict(
        model_path=model_path,
        engine=config.eval.engine,
        dtype=config.model.dtype,
        max_seq_len=config.model.max_seq_len,
        kv_cache_gib=config.eval.kv_cache_gib,
        seed=config.seed,
        kv_block_size=config.model.kv_block_size,
        prompt_format=fmt.value,
        tensor_parallel_size=config.eval.tensor_parallel_size,
        **config.ray.vllm_options(config.eval.gpu_memory_utilization),
        **extra,
    )
    return rows.map_batches(
        scorer_cls,
        fn_constructor_kwargs=kwargs,
        batch_size=config.eval.batch_size,
        batch_format="numpy",
        concurrency=config.eval.num_engines,
        **config.ray.engine_options(config.eval.cpus_per_engine, config.eval.gpus_per_engine),
    )


def evaluate_model(config: TaosrConfig, name: str, model_path: str, out: str | None = None) -> dict:
    """Score, compute metrics, and write metrics.json, metrics.md and predictions.jsonl under
    ``out`` (default eval/<name>/)."""
    fmt = model_format(model_path)
    rows = _split_rows(config)
    decode = dict(max_new_tokens=config.eval.max_new_tokens)
    if fmt is ResponseFormat.PRE_COT:
        predictions = _run(rows, DecodingScorer, model_path, fmt, config, DECODED_ROW_COLUMNS, **decode)
    elif config.eval.decode_samples and fmt is ResponseFormat.POST_COT:
        sample = [row["id"] for row in rows.limit(config.eval.decode_samples).select_columns(["id"]).take_all()]
        predictions = _run(
            rows,
            SampledDecodingScorer,
            model_path,
            fmt,
            config,
            SCORED_COLUMNS + ("format_ok", "hallucinated", "response"),
            decode_ids=sample,
            **decode,
        )
    else:
        predictions = _run(rows, LevelScorer, model_path, fmt, config, SCORED_COLUMNS)
    if not predictions:
        raise ValueError(f"split {config.eval.split!r} of {config.run_dir} has no rows to evaluate")
    records = []
    for row in predictions:
        record = {"gold": int(row["label"]), "pred": int(row["pred"]), "query_type": row["query_type"]}
        if all(row.get(column) is not None for column in PROB_COLUMNS):  # first-token scores
            record["probs"] = level_probs(row)
        if row.get("format_ok") is not None:  # a decoded row
            record.update(format_ok=bool(row["format_ok"]), hallucinated=row["hallucinated"])
        records.append(record)
    return _write_results(config, name, out, {"model": model_path, "format": fmt.value}, records, predictions)


def level_probs(row) -> list[float]:
    """A scored row's P(level) in ``LEVEL_ORDER`` (1..4), the order ``evaluate_records`` reads;
    the scorer's columns run p_4..p_1."""
    return [float(row[f"p_{level}"]) for level in LEVEL_ORDER]


def evaluate_lexical(config: TaosrConfig, name: str = "lexical", out: str | None = None) -> dict:
    """The lexical baseline (``taosr.lexical``): fitted on the training split, scored on the
    split the models are scored on, written like a model's results."""
    import numpy as np

    from taosr.lexical import LexicalBaseline

    accepted = read_parquet(join(config.run_dir, "data", "accepted"), config.data.s3_endpoint)
    train_rows = accepted.filter(expr="split == 'train'").select_columns(list(MODEL_INPUT_COLUMNS)).take_all()
    rows = _split_rows(config).take_all()
    if not rows:
        raise ValueError(f"split {config.eval.split!r} of {config.run_dir} has no rows to evaluate")
    probs = LexicalBaseline(seed=config.seed).fit(train_rows).predict_proba(rows)
    predictions, records = [], []
    for row, p in zip(rows, probs):
        pred = LEVEL_ORDER[int(np.argmax(p))]
        predictions.append(
            {
                "id": row["id"],
                "query": row["query"],
                "query_type": row["query_type"],
                "label": int(row["label"]),
                "pred": pred,
                **{f"p_{level}": float(v) for level, v in zip(LEVEL_ORDER, p)},
            }
        )
        records.append(
            {"gold": int(row["label"]), "pred": pred, "query_type": row["query_type"], "probs": [float(v) for v in p]}
        )
    about = {
        "model": "tf-idf word 1-2 grams + query overlap, logistic regression (class-balanced)",
        "format": "lexical",
        "train_rows": len(train_rows),
    }
    return _write_results(config, name, out, about, records, predictions)


def _write_results(
    config: TaosrConfig, name: str, out: str | None, about: dict, records: list, predictions: list
) -> dict:
    """metrics.json, metrics.md, predictions.jsonl and config.yaml under ``out`` (eval/<name>/)."""
    metrics = evaluate_records(records)
    out = out or join(config.run_dir, "eval", name)
    endpoint = config.data.s3_endpoint
    write_json(join(out, "metrics.json"), {**about, "split": config.eval.split, **metrics}, endpoint)
    write_text(join(out, "metrics.md"), render_markdown(name, metrics), endpoint)
    write_text(
        join(out, "predictions.jsonl"),
        "\n".join(json.dumps(r, default=_json_value) for r in predictions) + "\n",
        endpoint,
    )
    write_text(join(out, "config.yaml"), to_yaml(config), endpoint)
    return metrics


def _json_value(value):
    return value.item() if hasattr(value, "item") else str(value)


def render_markdown(name: str, metrics: dict) -> str:
    columns = TABLE_COLUMNS + tuple(c for c in DECODED_COLUMNS if c in metrics["overall"])
    parts = [
        f"## {name}: overall\n",
        markdown_table({name: metrics["overall"]}, columns),
        f"\n\n## {name}: by query type\n",
        markdown_table(metrics["by_query_type"], columns),
    ]
    return "".join(parts) + "\n"


LEXICAL_TITLE = "lexical baseline (TF-IDF + LR)"


def evaluate_all(config: TaosrConfig, base_model: str | None = None) -> dict:
    """Every trained policy of the run, side by side with the lexical baseline (and the untrained
    base model when ``eval.untrained``) on the same held-out split. Writes eval/stages.md and
    eval/rows.json (which rows the tables show, in order, with their titles: what the report reads)."""
    from taosr.datasets.storage import exists

    rows = {"lexical": LEXICAL_TITLE}
    table = {LEXICAL_TITLE: evaluate_lexical(config)["overall"]}
    models = {}
    if config.eval.untrained:
        models["base"] = (
            f"{config.model.name} (untrained)",
            base_model or resolve_model(config.model.name, config.model.cache_dir),
        )
    for stage, title in policy_stages().items():
        path = join(config.run_dir, stage, "model")
        if exists(join(path, "config.json"), config.data.s3_endpoint):
            models[stage] = (f"{title} ({config.sft.format})" if stage == "sft" else title, path)
    for slug, (title, path) in models.items():
        table[title] = evaluate_model(config, slug, path)["overall"]
        rows[slug] = title
    rendered = markdown_table(table)
    write_text(join(config.run_dir, "eval", "stages.md"), rendered + "\n", config.data.s3_endpoint)
    write_json(
        join(config.run_dir, "eval", "rows.json"),
        [[slug, title] for slug, title in rows.items()],
        config.data.s3_endpoint,
    )
    print(f"\nOn the {config.eval.split} split (seed {config.seed}):\n\n{rendered}\n", flush=True)
    return {name: {k: row.get(k) for k in ("n", "macro_f1", "accuracy", "qwk")} for name, row in table.items()}


STAGE = StageSpec("eval", ("eval",), ("data",), reads_policies=True, run=evaluate_all)


def main(argv=None) -> int:
    """Score one model (``--model``; default: the config's base model) on the eval split."""
    from taosr.config import load_config
    from taosr.stages.job_args import job_parser

    parser = job_parser(__doc__)
    parser.add_argument("--model", default=None, help="HF folder to evaluate (default: the config's model)")
    parser.add_argument("--name", default=None, help="name of the result under eval/ (default: the folder's name)")
    args = parser.parse_intermixed_args(argv)
    config = load_config(args.config, args.overrides)
    init_ray(config.ray, config.data.s3_endpoint)
    model_path = args.model or resolve_model(config.model.name, config.model.cache_dir)
    name = args.name or os.path.basename(os.path.normpath(model_path))
    print(render_markdown(name, evaluate_model(config, name, model_path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

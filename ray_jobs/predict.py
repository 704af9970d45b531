"""Batch prediction for any logs: first-token level scores of a trained model.

    python -m taosr.ray_jobs.predict --model runs/tiny/export/model --input logs.csv --out preds/ \
        data.encoding=latin-1 data.columns.query=search_term data.columns.title=product_title

Reads the logs the data stage reads (JSONL, Parquet, CSV, TSV; local or s3://; the ``data.*``
settings for columns, encoding, label aliases and bins apply), validates every row, scores the
accepted ones with the vLLM first-token scorer on Ray Data, and writes under ``--out``:

- ``predictions.jsonl``: one line per input row, in input order (file, then line): ``id``,
  ``probs`` (P of levels 1..4, summing to 1), ``level`` (the decision rule the export stage chose
  for the model, else the argmax), ``label`` when the row has one; a row that failed validation gets
  ``error`` (its quarantine reason) and no scores, so nothing is silently dropped;
- ``metrics.json`` when the rows carry labels: macro-F1, accuracy and per-level F1 in percent,
  QWK and Spearman (expected level against the label) on their -1..1 scale;
- ``counts.json``: input, scored and quarantined rows with the reasons.

Labels are optional here: logs without them are scored all the same.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from taosr.actors.scorer import PROB_COLUMNS, LevelScorer
from taosr.datasets.storage import join, write_json, write_text
from taosr.metrics import LEVEL_ORDER, classification_metrics, expected_level, spearman
from taosr.ray_jobs.eval import MODEL_INPUT_COLUMNS, scored_dataset

PERCENT_KEYS = ("macro_f1", "accuracy", "good_f1", "f1_1", "f1_2", "f1_3", "f1_4")


def exported_rule(model_path: str):
    """The decision rule the export stage recorded in the model's record, if any."""
    from taosr.decision import DecisionRule

    record = os.path.join(model_path, "taosr-model.json")
    if not os.path.isfile(record):
        return None
    with open(record) as handle:
        return DecisionRule.from_record(json.load(handle))


def prediction_lines(scored: list[dict], quarantined: list[dict], rule=None, columns: dict | None = None) -> list[dict]:
    """One output line per input row, in input order; scored rows carry probs over levels 1..4
    and the level ``rule`` (a ``taosr.decision.DecisionRule``; None: the argmax) gives them."""
    from taosr.labels import LEVELS

    levels = {}
    if scored and rule is not None:
        matrix = np.array([[float(row[f"p_{level}"]) for level in LEVELS] for row in scored])
        levels = dict(enumerate(int(level) for level in rule.levels(matrix)))
    lines = []
    for index, row in enumerate(scored):
        probs = [float(row[f"p_{level}"]) for level in LEVEL_ORDER]
        level = levels.get(index, LEVEL_ORDER[int(np.argmax(probs))])
        line = {"id": row["id"], "probs": probs, "level": level}
        label = row.get("label")
        if label is not None and label == label:  # unlabelled rows come back from numpy as NaN
            line["label"] = int(label)
        lines.append(((row["source"], int(row["line"])), line))
    for row in quarantined:
        lines.append(
            (
                (row["source"], int(row["line"])),
                {"id": _raw_id(row["raw"], columns or {}), "error": row["reason"], "detail": row["detail"]},
            )
        )
    return [line for _, line in sorted(lines, key=lambda pair: pair[0])]


def _raw_id(raw: str | None, columns: dict):
    """The id of a quarantined row, when its raw text still shows one (under the log's column name)."""
    try:
        value = json.loads(raw or "")
    except json.JSONDecodeError:
        return None
    return value.get(columns.get("id", "id")) if isinstance(value, dict) else None


def label_metrics(lines: list[dict]) -> dict | None:
    """Metrics of the scored rows that have a label (None when none has)."""
    labelled = [line for line in lines if "label" in line and "probs" in line]
    if not labelled:
        return None
    gold = [line["label"] for line in labelled]
    metrics = classification_metrics(gold, [line["level"] for line in labelled])
    out = {key: (100 * value if key in PERCENT_KEYS and value is not None else value) for key, value in metrics.items()}
    out["spearman"] = spearman([expected_level(line["probs"]) for line in labelled], gold)
    out["scale"] = "F1 and accuracy in percent; qwk and spearman on -1..1"
    return out


def predict(config, model_path: str, input_path: str, out_dir: str) -> dict:
    from taosr.datasets.readers import read_raw_records
    from taosr.datasets.validate import validate_records
    from taosr.ray_jobs.eval import model_format

    endpoint = config.data.s3_endpoint
    result = validate_records(
        read_raw_records(input_path, config.data.format, endpoint, config.data.encoding),
        config.data,
        require_label=False,
    )
    fmt = model_format(model_path)
    accepted = result.accepted.select_columns(list(MODEL_INPUT_COLUMNS) + ["source", "line"])
    scored = scored_dataset(accepted, LevelScorer, model_path, fmt, config)
    scored = scored.select_columns(["id", "label", "source", "line", *PROB_COLUMNS]).take_all()
    quarantined = result.quarantined.take_all()
    rule = exported_rule(model_path)
    lines = prediction_lines(scored, quarantined, rule, config.data.columns)
    if len(lines) != result.counts["input"] - result.counts.get("sampled_out", 0):
        raise RuntimeError(f"{len(lines)} prediction lines for {result.counts} input rows")
    write_text(join(out_dir, "predictions.jsonl"), "".join(json.dumps(line) + "\n" for line in lines), endpoint)
    counts = {**result.counts, "scored": len(scored), "level_rule": rule.describe() if rule is not None else "argmax"}
    write_json(join(out_dir, "counts.json"), counts, endpoint)
    metrics = label_metrics(lines)
    if metrics is not None:
        write_json(join(out_dir, "metrics.json"), {"model": model_path, "input": input_path, **metrics}, endpoint)
    return {"counts": counts, "metrics": metrics}


def main(argv=None) -> int:
    from taosr.actors.runtime import init_ray
    from taosr.config import load_config
    from taosr.stages.job_args import job_parser

    parser = job_parser(__doc__)
    parser.add_argument("--model", required=True, help="a trained or exported model folder")
    parser.add_argument(
        "--input", required=True, help="logs: a file or folder (JSONL, Parquet, CSV, TSV), local or s3://"
    )
    parser.add_argument("--out", required=True, help="output folder (local or s3://)")
    args = parser.parse_intermixed_args(argv)
    config = load_config(args.config, args.overrides)
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        parser.error(f"--model {args.model!r} is not a Hugging Face model folder")
    init_ray(config.ray, config.data.s3_endpoint)
    print(json.dumps(predict(config, os.path.abspath(args.model), args.input, args.out), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

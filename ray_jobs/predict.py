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
from taosr.datasets.storage import join, write_json
from taosr.metrics import LEVEL_ORDER, classification_metrics, spearman
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


LINE_COLUMNS = ("source", "line", "json", "label", "level", "expected")  # one output line per row


def scored_lines(batch: dict, rule=None) -> dict:
    """A batch of scored rows as output lines (``LINE_COLUMNS``): probs over levels 1..4, the
    level ``rule`` (a ``taosr.decision.DecisionRule``; None: the argmax) gives them, the label
    when the row has one (0 in ``label`` otherwise) and the expected level for Spearman."""
    probs = np.stack([np.asarray(batch[f"p_{level}"], dtype=np.float64) for level in LEVEL_ORDER], axis=1)
    if rule is not None:
        # the rule reads probabilities in the scorer's column order (levels 4..1)
        levels = np.asarray(rule.levels(probs[:, ::-1]), dtype=np.int64)
    else:
        levels = np.asarray(LEVEL_ORDER)[np.argmax(probs, axis=1)]
    labels = np.zeros(len(probs), dtype=np.int64)
    texts = []
    for index, (row_id, label) in enumerate(zip(batch["id"], batch["label"])):
        line = {"id": row_id, "probs": probs[index].tolist(), "level": int(levels[index])}
        if label is not None and label == label:  # unlabelled rows come back from numpy as NaN
            line["label"] = labels[index] = int(label)
        texts.append(json.dumps(line))
    return {
        "source": np.asarray(batch["source"], dtype=object),
        "line": np.asarray(batch["line"], dtype=np.int64),
        "json": np.asarray(texts, dtype=object),
        "label": labels,
        "level": levels.astype(np.int64),
        "expected": probs @ np.asarray(LEVEL_ORDER, dtype=np.float64),
    }


def quarantined_lines(batch: dict, columns: dict | None = None) -> dict:
    """A batch of rows that failed validation as output lines: their id where the raw text still
    shows one, the quarantine reason as ``error`` and no scores."""
    texts = [
        json.dumps({"id": _raw_id(raw, columns or {}), "error": reason, "detail": detail})
        for raw, reason, detail in zip(batch["raw"], batch["reason"], batch["detail"])
    ]
    count = len(texts)
    return {
        "source": np.asarray(batch["source"], dtype=object),
        "line": np.asarray(batch["line"], dtype=np.int64),
        "json": np.asarray(texts, dtype=object),
        "label": np.zeros(count, dtype=np.int64),
        "level": np.zeros(count, dtype=np.int64),
        "expected": np.full(count, np.nan),
    }


def _raw_id(raw: str | None, columns: dict):
    """The id of a quarantined row, when its raw text still shows one (under the log's column name)."""
    try:
        value = json.loads(raw or "")
    except json.JSONDecodeError:
        return None
    return value.get(columns.get("id", "id")) if isinstance(value, dict) else None


class LabelTally:
    """What the metrics need from the labelled scored lines, kept as compact arrays while the
    lines stream past (a few bytes a row), not as the lines themselves."""

    def __init__(self):
        self.gold: list[np.ndarray] = []
        self.level: list[np.ndarray] = []
        self.expected: list[np.ndarray] = []

    def add(self, batch: dict) -> None:
        labelled = np.asarray(batch["label"]) > 0
        self.gold.append(np.asarray(batch["label"])[labelled].astype(np.int8))
        self.level.append(np.asarray(batch["level"])[labelled].astype(np.int8))
        self.expected.append(np.asarray(batch["expected"])[labelled].astype(np.float32))

    def metrics(self) -> dict | None:
        """Macro-F1, accuracy and per-level F1 in percent, QWK and Spearman (None without labels)."""
        gold = np.concatenate(self.gold) if self.gold else np.zeros(0, dtype=np.int8)
        if not len(gold):
            return None
        gold_levels, levels = gold.astype(int).tolist(), np.concatenate(self.level).astype(int).tolist()
        metrics = classification_metrics(gold_levels, levels)
        out = {k: (100 * v if k in PERCENT_KEYS and v is not None else v) for k, v in metrics.items()}
        out["spearman"] = spearman(np.concatenate(self.expected).tolist(), gold_levels)
        out["scale"] = "F1 and accuracy in percent; qwk and spearman on -1..1"
        return out


def predict(config, model_path: str, input_path: str, out_dir: str) -> dict:
    """Score ``input_path`` and write the outputs under ``out_dir``. The lines stream: Ray Data
    scores and orders them on the workers, and the driver appends one batch at a time to
    predictions.jsonl, so its memory does not grow with the logs."""
    from taosr.datasets.readers import read_raw_records
    from taosr.datasets.storage import filesystem_and_path
    from taosr.datasets.validate import validate_records
    from taosr.ray_jobs.eval import model_format

    endpoint = config.data.s3_endpoint
    result = validate_records(
        read_raw_records(input_path, config.data.format, endpoint, config.data.encoding),
        config.data,
        require_label=False,
    )
    fmt = model_format(model_path)
    rule = exported_rule(model_path)
    accepted = result.accepted.select_columns(list(MODEL_INPUT_COLUMNS) + ["source", "line"])
    scored = scored_dataset(accepted, LevelScorer, model_path, fmt, config)
    lines = scored.select_columns(["id", "label", "source", "line", *PROB_COLUMNS]).map_batches(
        scored_lines, fn_kwargs={"rule": rule}, batch_format="numpy"
    )
    failed = result.quarantined.map_batches(
        quarantined_lines, fn_kwargs={"columns": config.data.columns}, batch_format="numpy"
    )
    ordered = lines.union(failed).sort(["source", "line"])  # input order: file, then line
    tally, written, scored_count = LabelTally(), 0, 0
    filesystem, inner = filesystem_and_path(join(out_dir, "predictions.jsonl"), endpoint)
    if "/" in inner:
        filesystem.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(inner) as stream:
        for batch in ordered.iter_batches(batch_size=4096, batch_format="numpy"):
            stream.write(("\n".join(batch["json"]) + "\n").encode("utf-8"))
            written += len(batch["json"])
            scored_count += int(np.count_nonzero(batch["level"]))
            tally.add(batch)
    if written != result.counts["input"] - result.counts.get("sampled_out", 0):
        raise RuntimeError(f"{written} prediction lines for {result.counts} input rows")
    counts = {
        **result.counts,
        "scored": scored_count,
        "level_rule": rule.describe() if rule is not None else "argmax",
    }
    write_json(join(out_dir, "counts.json"), counts, endpoint)
    metrics = tally.metrics()
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

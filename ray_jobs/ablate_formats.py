"""The format ablation of docs/method.md section 3: label-only vs pre-CoT vs post-CoT SFT from the
same base model, on the same CoT examples, evaluated on the same held-out split next to the
lexical baseline. Needs the data and cot stages' outputs under run_dir; writes
ablation/<format>/ (model and its eval/), ablation/lexical/ and ablation/formats.md: the table,
each format against the configured one and against the baseline (paired bootstrap), and what
each format's SFT cost.

The configured format (``sft.format``) reuses the pipeline's own SFT when its manifest matches
the config (the same run, nothing to learn from training it twice), and a format this job
trained before with the same config is not trained again (an interrupted ablation resumes);
``--retrain`` trains every format afresh.

    ray job submit --working-dir . -- python -m taosr.ray_jobs.ablate_formats --config configs/tiny.yaml
"""

from __future__ import annotations

import copy
import json
import sys

from taosr.actors.runtime import init_ray
from taosr.config import TaosrConfig, load_config, to_dict, to_yaml
from taosr.datasets.embedded_models import resolve_model
from taosr.datasets.storage import exists, join, read_text, write_text
from taosr.formats import ResponseFormat
from taosr.metrics import DECODED_COLUMNS, TABLE_COLUMNS, markdown_table
from taosr.ray_jobs import eval as eval_stage
from taosr.ray_jobs import sft as sft_stage
from taosr.differences import difference_header, difference_row
from taosr.stages import manifest as manifests
from taosr.stages.job_args import job_parser


def pipeline_sft(config: TaosrConfig) -> dict | None:
    """The pipeline's SFT summary (with its model) when its manifest matches ``config``."""
    from taosr.stages.registry import get

    spec = get("sft")
    if manifests.decide(config.run_dir, spec, to_dict(config), config.data.s3_endpoint).action != "skip":
        return None
    return _summary(join(config.run_dir, "sft"), config, "the pipeline's sft stage")


def earlier_ablation(folder: str, config: TaosrConfig) -> dict | None:
    """An SFT this job finished before under ``folder`` with the same config, byte for byte (an
    interrupted ablation resumes without retraining the formats it has)."""
    endpoint = config.data.s3_endpoint
    paths = [join(folder, name) for name in ("summary.json", "config.yaml")]
    if not all(exists(path, endpoint) for path in paths) or read_text(paths[1], endpoint) != to_yaml(config):
        return None
    return _summary(folder, config, "an earlier run of this ablation")


def _summary(folder: str, config: TaosrConfig, source: str) -> dict:
    summary = json.loads(read_text(join(folder, "summary.json"), config.data.s3_endpoint))
    return {**summary, "model": join(folder, "model"), "source": source}


def train_format(run: TaosrConfig, base: str, configured_format: str, retrain: bool) -> dict:
    """SFT in ``run.sft.format``, or the run that already has it (see the module's docstring)."""
    out = join(run.run_dir, "ablation", run.sft.format)
    if not retrain:
        reused = (pipeline_sft(run) if run.sft.format == configured_format else None) or earlier_ablation(out, run)
        if reused is not None:
            return reused
    return {**sft_stage.train(run, base, out), "source": "trained now"}


def predictions_by_id(folder: str, endpoint: str) -> dict[str, tuple[int, int]]:
    """{id: (gold, pred)} from an eval folder's predictions.jsonl."""
    rows = [
        json.loads(line) for line in read_text(join(folder, "predictions.jsonl"), endpoint).splitlines() if line.strip()
    ]
    return {row["id"]: (int(row["label"]), int(row["pred"])) for row in rows}


def render(table: dict, trained: dict, predictions: dict, reference: str, seed: int) -> str:
    """The metrics table, what each SFT cost, and each model against ``reference`` and the baseline."""
    costs = ["| SFT format | examples | model from | training minutes |", "|---|---|---|---|"]
    for fmt, summary in trained.items():
        minutes = f"{summary['train_seconds'] / 60:.1f}" if summary.get("train_seconds") else "–"
        costs.append(f"| {fmt} | {summary['examples']} | {summary['source']} | {minutes} |")
    changes = difference_header()
    for fmt in trained:
        if fmt != reference:
            changes.append(difference_row(f"{fmt} → {reference}", predictions[fmt], predictions[reference], seed))
    for fmt in trained:
        changes.append(difference_row(f"lexical → {fmt}", predictions["lexical"], predictions[fmt], seed))
    return "\n\n".join([markdown_table(table, TABLE_COLUMNS + DECODED_COLUMNS), "\n".join(costs), "\n".join(changes)])


def main(argv=None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument(
        "--formats",
        default=",".join(f.value for f in ResponseFormat),
        help="comma-separated formats to train and evaluate",
    )
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="train every format afresh, even when the pipeline's SFT or an earlier ablation run matches the config",
    )
    args = parser.parse_intermixed_args(argv)
    config = load_config(args.config, args.overrides)
    init_ray(config.ray, config.data.s3_endpoint)
    endpoint = config.data.s3_endpoint
    base = resolve_model(config.model.name, config.model.cache_dir)
    formats = [ResponseFormat(name.strip()).value for name in args.formats.split(",") if name.strip()]
    lexical_dir = join(config.run_dir, "ablation", "lexical")
    table = {"lexical baseline (TF-IDF + LR)": eval_stage.evaluate_lexical(config, "lexical", lexical_dir)["overall"]}
    predictions = {"lexical": predictions_by_id(lexical_dir, endpoint)}
    trained = {}
    for fmt in formats:
        run = copy.deepcopy(config)
        run.sft.format = fmt
        trained[fmt] = train_format(run, base, config.sft.format, args.retrain)
        print(json.dumps({"format": fmt, **trained[fmt]}, default=str), flush=True)
        out = join(config.run_dir, "ablation", fmt, "eval")
        metrics = eval_stage.evaluate_model(run, f"ablation-{fmt}", trained[fmt]["model"], out)
        table[f"SFT {fmt} ({trained[fmt]['examples']} ex)"] = metrics["overall"]
        predictions[fmt] = predictions_by_id(out, endpoint)
    reference = config.sft.format if config.sft.format in formats else formats[-1]
    rendered = render(table, trained, predictions, reference, config.seed)
    write_text(join(config.run_dir, "ablation", "formats.md"), rendered + "\n", endpoint)
    print(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())

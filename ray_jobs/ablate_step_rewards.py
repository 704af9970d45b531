"""The step-reward ablation of docs/method.md section 6: SRPO with the hybrid step rewards against
SRPO without the offline verifier (the GenRM scores every step) and, on request, without the
GenRM (the verifier alone), each from the same start model with the same curriculum and budget,
evaluated on the same held-out split next to the pipeline's GRPO and SRPO models.

Needs a pipeline run up to srpo and eval in run_dir; writes ablation/srpo-<variant>/ (model,
logs, eval) and ablation/srpo_step_rewards.md, which the run report includes.

    ray job submit --working-dir . -- python -m taosr.ray_jobs.ablate_step_rewards --config configs/tiny.yaml
"""

from __future__ import annotations

import copy
import json
import sys

from taosr.actors.runtime import init_ray
from taosr.config import load_config
from taosr.datasets.storage import exists, join, read_text, write_text
from taosr.metrics import DECODED_COLUMNS, TABLE_COLUMNS, markdown_table
from taosr.ray_jobs import eval as eval_stage
from taosr.ray_jobs import srpo
from taosr.stages.job_args import job_parser
from taosr.report import query_type_table

VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "no-verifier": ("SRPO, GenRM only (no verifier)", {"verifier_coverage": 0.0}),
    "no-genrm": ("SRPO, verifier only (no GenRM)", {"genrm": "none"}),
}
PIPELINE_ROWS = {"grpo": "GRPO", "srpo": "SRPO (verifier + GenRM)"}


def run_variant(config, variant: str) -> dict:
    """Train and evaluate one SRPO variant; returns its eval metrics."""
    _, changes = VARIANTS[variant]
    run = copy.deepcopy(config)
    for key, value in changes.items():
        setattr(run.srpo, key, value)
    out = join(config.run_dir, "ablation", f"srpo-{variant}")
    result = srpo.train(run, srpo.start_model_for(run), out)
    print(json.dumps({"variant": variant, **result}, default=str), flush=True)
    return eval_stage.evaluate_model(run, f"srpo-{variant}", result["model"], out=join(out, "eval"))


def main(argv=None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument(
        "--variants", default="no-verifier", help=f"comma-separated variants to train: {', '.join(VARIANTS)}"
    )
    args = parser.parse_intermixed_args(argv)
    config = load_config(args.config, args.overrides)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    init_ray(config.ray, config.data.s3_endpoint)
    endpoint = config.data.s3_endpoint
    table = {}
    for slug, title in PIPELINE_ROWS.items():  # the pipeline's own evaluations of GRPO and SRPO
        path = join(config.run_dir, "eval", slug, "metrics.json")
        if exists(path, endpoint):
            table[title] = json.loads(read_text(path, endpoint))
        else:
            print(f"note: {path} not found; run the pipeline's eval stage to have {title} in the table", flush=True)
    for variant in variants:
        table[VARIANTS[variant][0]] = run_variant(config, variant)
    overall = markdown_table(
        {name: metrics["overall"] for name, metrics in table.items()}, TABLE_COLUMNS + DECODED_COLUMNS
    )
    rendered = (
        f"Same start model, curriculum and step budget; {config.eval.split} split.\n\n{overall}\n\n"
        f"Macro-F1 by query type:\n\n{query_type_table(table)}\n"
    )
    write_text(join(config.run_dir, "ablation", "srpo_step_rewards.md"), rendered, endpoint)
    print(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())

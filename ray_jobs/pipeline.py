"""The whole pipeline as one Ray job. Stages so far: data (generate or read, validate, split)
and eval of the untrained model; the training stages join as they land.

    ray job submit --working-dir . -- python -m taosr.ray_jobs.pipeline --config configs/tiny.yaml
"""

from __future__ import annotations

import json
import sys
import time

from taosr.actors.runtime import init_ray
from taosr.metrics import markdown_table
from taosr.models import resolve_model
from taosr.ray_jobs import data as data_stage
from taosr.ray_jobs import eval as eval_stage
from taosr.ray_jobs.job_args import job_parser
from taosr.config import load_config

STAGES = ("data", "eval")


def main(argv=None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to run, in order")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stages {sorted(unknown)}; known: {', '.join(STAGES)}")
    init_ray(config.ray)
    timings = {}
    if "data" in stages:
        started = time.time()
        result = data_stage.run(config)
        timings["data"] = time.time() - started
        print("data:", json.dumps(result.counts), flush=True)
    if "eval" in stages:
        started = time.time()
        model_path = resolve_model(config.model.name, config.model.cache_dir)
        metrics = eval_stage.evaluate_model(config, "base", model_path)
        timings["eval"] = time.time() - started
        print(f"\nUntrained {config.model.name} on the {config.eval.split} split:\n")
        print(markdown_table({f"{config.model.name} (untrained)": metrics["overall"]}))
        print("\nBy query type:\n")
        print(markdown_table(metrics["by_query_type"]))
    print("\ntimings (s):", json.dumps({k: round(v, 1) for k, v in timings.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

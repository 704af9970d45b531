"""The whole pipeline as one Ray job. Stages so far: data (generate or read, validate, split),
cot (rule retrieval + teacher rationales), sft (Ray Train + DeepSpeed), sample (pass@N on vLLM
rollout actors), dpo (preference pairs + DPO), and eval of every model side by side on the same
held-out split. grpo and srpo (the RL stages) run when named in --stages, both starting from the
DPO model; eval then adds their rows.

    ray job submit --working-dir . -- python -m taosr.ray_jobs.pipeline --config configs/tiny.yaml
"""

from __future__ import annotations

import json
import sys
import time

from taosr.actors.runtime import init_ray
from taosr.config import load_config
from taosr.datasets.storage import exists, join, write_json, write_text
from taosr.metrics import markdown_table
from taosr.models import resolve_model
from taosr.ray_jobs import cot as cot_stage
from taosr.ray_jobs import data as data_stage
from taosr.ray_jobs import dpo as dpo_stage
from taosr.ray_jobs import eval as eval_stage
from taosr.ray_jobs import grpo as grpo_stage
from taosr.ray_jobs import sample as sample_stage
from taosr.ray_jobs import sft as sft_stage
from taosr.ray_jobs import srpo as srpo_stage
from taosr.ray_jobs.job_args import job_parser

STAGES = ("data", "cot", "sft", "sample", "dpo", "grpo", "srpo", "eval")
DEFAULT_STAGES = ("data", "cot", "sft", "sample", "dpo", "eval")  # RL stages: opt in with --stages
TRAINED = {"sft": "SFT", "dpo": "DPO", "grpo": "GRPO", "srpo": "SRPO"}  # stage -> its row in the table


def main(argv=None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--stages", default=",".join(DEFAULT_STAGES),
                        help=f"comma-separated stages to run, in order, from {', '.join(STAGES)} (default: %(default)s)")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stages {sorted(unknown)}; known: {', '.join(STAGES)}")
    init_ray(config.ray)
    base_model = resolve_model(config.model.name, config.model.cache_dir)
    timings: dict[str, float] = {}

    def timed(stage, fn):
        started = time.time()
        result = fn()
        timings[stage] = round(time.time() - started, 1)
        shown = {k: result["overall"].get(k) for k in ("n", "macro_f1", "accuracy")} if "overall" in result else result
        print(f"{stage}: {json.dumps(shown, default=str)}", flush=True)
        return result

    if "data" in stages:
        timed("data", lambda: data_stage.run(config).counts)
    if "cot" in stages:
        timed("cot", lambda: cot_stage.run(config))
    sft_model = join(config.run_dir, "sft", "model")
    if "sft" in stages:
        timed("sft", lambda: sft_stage.train(config, base_model, join(config.run_dir, "sft")))
    if "sample" in stages:
        timed("sample", lambda: sample_stage.run(config, sft_model)["overall"])
    if "dpo" in stages:
        timed("dpo", lambda: dpo_stage.train(config, sft_model, join(config.run_dir, "dpo"))["pairs"])
    if "grpo" in stages:
        timed("grpo", lambda: grpo_stage.train(config, grpo_stage.start_model_for(config),
                                               join(config.run_dir, "grpo"))["prompts"])
    if "srpo" in stages:
        timed("srpo", lambda: srpo_stage.train(config, grpo_stage.start_model_for(config),
                                               join(config.run_dir, "srpo"))["curriculum"])
    if "eval" in stages:
        models = {"base": (f"{config.model.name} (untrained)", base_model)}
        for stage, title in TRAINED.items():
            path = join(config.run_dir, stage, "model")
            if stage in stages or exists(join(path, "config.json"), config.data.s3_endpoint):
                models[stage] = (f"{title} ({config.sft.format})" if stage == "sft" else title, path)
        table = {}
        for slug, (name, path) in models.items():
            table[name] = timed(f"eval:{slug}", lambda: eval_stage.evaluate_model(config, slug, path))["overall"]
        rendered = markdown_table(table)
        write_text(join(config.run_dir, "eval", "stages.md"), rendered + "\n", config.data.s3_endpoint)
        print(f"\nOn the {config.eval.split} split (seed {config.seed}):\n\n{rendered}\n")
    write_json(join(config.run_dir, "timings.json"), timings, config.data.s3_endpoint)
    print("timings (s):", json.dumps(timings))
    return 0


if __name__ == "__main__":
    sys.exit(main())

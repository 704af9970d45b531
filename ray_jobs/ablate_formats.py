"""The format ablation of docs/method.md section 3: label-only vs pre-CoT vs post-CoT SFT from the
same base model, on the same CoT examples, evaluated on the same held-out split. Needs the data
and cot stages' outputs under run_dir; writes ablation/<format>/ and ablation/formats.md.

    ray job submit --working-dir . -- python -m taosr.ray_jobs.ablate_formats --config configs/tiny.yaml
"""

from __future__ import annotations

import copy
import json
import sys

from taosr.actors.runtime import init_ray
from taosr.datasets.storage import join, write_text
from taosr.formats import ResponseFormat
from taosr.metrics import DECODED_COLUMNS, TABLE_COLUMNS, markdown_table
from taosr.models import resolve_model
from taosr.ray_jobs import eval as eval_stage
from taosr.ray_jobs import sft as sft_stage
from taosr.config import load_config
from taosr.ray_jobs.job_args import job_parser



def main(argv=None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--formats", default=",".join(f.value for f in ResponseFormat),
                        help="comma-separated formats to train and evaluate")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    init_ray(config.ray)
    base = resolve_model(config.model.name, config.model.cache_dir)
    table = {}
    for fmt in [ResponseFormat(name.strip()) for name in args.formats.split(",") if name.strip()]:
        run = copy.deepcopy(config)
        run.sft.format = fmt.value
        out = join(config.run_dir, "ablation", fmt.value)
        summary = sft_stage.train(run, base, out)
        print(json.dumps({"format": fmt.value, **summary}), flush=True)
        metrics = eval_stage.evaluate_model(run, f"ablation-{fmt.value}", summary["model"])
        table[f"SFT {fmt.value} ({summary['examples']} ex)"] = metrics["overall"]
    rendered = markdown_table(table, TABLE_COLUMNS + DECODED_COLUMNS)
    write_text(join(config.run_dir, "ablation", "formats.md"), rendered + "\n", config.data.s3_endpoint)
    print(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())

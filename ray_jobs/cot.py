"""CoT synthesis stage: retrieve rules and have the teacher write the five steps for each
accepted row's gold label; writes cot/kept/ and cot/dropped/ (Parquet) and cot/counts.json.

    ray job submit --working-dir . -- python -m taosr.ray_jobs.cot --config configs/tiny.yaml
"""

from __future__ import annotations

import sys

from taosr.config import TaosrConfig, to_yaml
from taosr.datasets.cot import synthesize
from taosr.datasets.storage import join, read_parquet, write_dataset, write_json, write_text
from taosr.stages.job_args import run_job
from taosr.stages.registry import StageSpec


def run(config: TaosrConfig) -> dict:
    out = join(config.run_dir, "cot")
    endpoint = config.data.s3_endpoint
    accepted = read_parquet(join(config.run_dir, "data", "accepted"), config.data.s3_endpoint)
    kept, dropped, counts = synthesize(accepted, config.cot, config.ray)
    write_dataset(kept, join(out, "kept"), endpoint)
    write_dataset(dropped, join(out, "dropped"), endpoint)
    write_json(join(out, "counts.json"), counts, endpoint)
    write_text(join(out, "config.yaml"), to_yaml(config), endpoint)
    return counts


STAGE = StageSpec("cot", ("cot",), ("data",), run=run)


def main(argv=None) -> int:
    return run_job(STAGE.run, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())

"""Data stage: get logs (generate the built-in ones, or read the user's), validate them on Ray
Data, and write accepted rows (with their split) and quarantined rows with reasons.

    ray job submit --working-dir . -- python -m taosr.ray_jobs.data --config configs/tiny.yaml
"""

from __future__ import annotations

import os
import sys

from taosr.config import TaosrConfig, to_yaml
from taosr.datasets.readers import read_raw_records
from taosr.datasets.storage import join, write_dataset, write_json, write_jsonl, write_text
from taosr.datasets.synthetic import LogGenerator
from taosr.datasets.validate import ValidationResult, validate_records
from taosr.stages.job_args import run_job
from taosr.stages.registry import StageSpec


def generate_logs(out_dir: str, rows: int, seed: int, data_config=None, s3_endpoint: str = "") -> str:
    """Write generated logs as JSONL under ``out_dir``; returns the file path."""
    mixes = {}
    if data_config is not None:
        mixes = dict(
            label_mix=data_config.label_mix,
            query_type_mix=data_config.query_type_mix,
            items_per_query=data_config.items_per_query,
        )
    path = join(out_dir, "logs.jsonl")
    write_jsonl(path, LogGenerator(seed=seed, **mixes).rows(rows), s3_endpoint)
    return path


def validate_to(input_path: str, out_dir: str, data_config) -> ValidationResult:
    """Validate logs and write ``accepted/``, ``quarantine/`` and ``counts.json`` under out_dir."""
    endpoint = data_config.s3_endpoint
    result = validate_records(
        read_raw_records(input_path, data_config.format, endpoint, data_config.encoding), data_config
    )
    write_dataset(result.accepted, join(out_dir, "accepted"), endpoint)
    write_dataset(result.quarantined, join(out_dir, "quarantine"), endpoint)
    write_json(join(out_dir, "counts.json"), result.counts, endpoint)
    return result


def run(config: TaosrConfig) -> ValidationResult:
    data_dir = join(config.run_dir, "data")
    endpoint = config.data.s3_endpoint
    if config.data.source == "generate":
        source = generate_logs(join(data_dir, "generated"), config.data.rows, config.data.seed, config.data, endpoint)
    else:
        source = config.data.source
        if not source:
            raise ValueError(
                "data.source is empty: set it to your logs (a file or folder, local or s3://), "
                "or to 'generate' for the built-in synthetic logs"
            )
        if "://" not in source and not os.path.exists(source):
            raise FileNotFoundError(f"data.source {source!r} does not exist")
    result = validate_to(source, data_dir, config.data)
    write_text(join(data_dir, "config.yaml"), to_yaml(config), endpoint)
    return result


def run_stage(config: TaosrConfig) -> dict:
    return run(config).counts


STAGE = StageSpec("data", reads_logs=True, run=run_stage)


def main(argv=None) -> int:
    return run_job(STAGE.run, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())

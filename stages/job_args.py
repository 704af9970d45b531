"""The command line every `ray job submit` entrypoint shares: a profile and key=value overrides."""

from __future__ import annotations

import argparse
import json

from taosr.config import load_config


def job_parser(description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny.yaml", help="YAML profile (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", help="config overrides such as eval.max_examples=100")
    return parser


def parse_job_args(argv, description: str | None = None):
    args = job_parser(description).parse_args(argv)
    return load_config(args.config, args.overrides)


def run_job(run, argv, description: str | None) -> int:
    """The body of a stage's ``main``: parse, join Ray, run, print the summary as JSON."""
    from taosr.actors.runtime import init_ray

    config = parse_job_args(argv, description)
    init_ray(config.ray, config.data.s3_endpoint)
    print(json.dumps(run(config), default=str))
    return 0

"""The command line every `ray job submit` entrypoint shares: a profile and key=value overrides."""

from __future__ import annotations

import argparse
import json
import logging
import os

from taosr.config import load_config


def configure_logging() -> None:
    """Progress and warnings go to stderr through ``logging`` (``TAOSR_LOG_LEVEL``, default INFO);
    result lines (a stage's summary, per-step metrics as JSON) stay on stdout."""
    logging.basicConfig(
        level=os.environ.get("TAOSR_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def job_parser(description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny.yaml", help="YAML profile (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", help="config overrides such as eval.max_examples=100")
    return parser


def parse_job_args(argv, description: str | None = None):
    args = job_parser(description).parse_intermixed_args(argv)
    return load_config(args.config, args.overrides)


def run_job(run, argv, description: str | None) -> int:
    """The body of a stage's ``main``: parse, join Ray, run, print the summary as JSON."""
    from taosr.actors.runtime import init_ray

    configure_logging()
    config = parse_job_args(argv, description)
    init_ray(config.ray, config.data.s3_endpoint)
    print(json.dumps(run(config), default=str))
    return 0

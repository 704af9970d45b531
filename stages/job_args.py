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


class _Verbose(argparse.Action):
    """--verbose: every logged training step is echoed on stdout by the worker that logs it."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        os.environ["TAOSR_VERBOSE"] = "1"  # read when a stage starts its Ray Train workers
        setattr(namespace, self.dest, True)


def job_parser(description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny.yaml", help="YAML profile (default: %(default)s)")
    parser.add_argument(
        "--verbose",
        action=_Verbose,
        help="also print every logged training step as a JSON line (metrics.jsonl and TensorBoard always have "
        "them; without it a progress bar per stage shows step, loss, validation and ETA)",
    )
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

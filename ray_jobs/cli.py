"""The `taosr` command (installed by pyproject.toml's [project.scripts]). Data subcommands run on
Ray Data (a local cluster unless RAY_ADDRESS is set); each prints one JSON object on stdout so scripts can read it."""

from __future__ import annotations

import argparse
import json
import sys


def _data_generate(args) -> dict:
    from taosr.config import DataConfig
    from taosr.ray_jobs.data import generate_logs

    config = DataConfig(seed=args.seed)
    if args.items_per_query:
        config.items_per_query = args.items_per_query
    path = generate_logs(args.out, args.rows, args.seed, config, args.s3_endpoint)
    return {"rows": args.rows, "seed": args.seed, "path": path}


def _data_validate(args) -> dict:
    from taosr.actors.runtime import init_ray
    from taosr.config import load_config, to_yaml
    from taosr.datasets.storage import join, write_text
    from taosr.ray_jobs.data import validate_to

    config = load_config(args.config, [f"data.{o}" if not o.startswith("data.") else o for o in args.set])
    config.data.format = args.format
    if args.s3_endpoint:
        config.data.s3_endpoint = args.s3_endpoint
    init_ray(config.ray, config.data.s3_endpoint)
    counts = validate_to(args.input, args.out, config.data).counts
    write_text(join(args.out, "config.yaml"), to_yaml(config), config.data.s3_endpoint)
    return counts


def _config_show(args) -> dict | None:
    from taosr.config import describe, load_config, to_yaml

    if args.help_fields:
        from taosr.serve.args import ServeArgs

        # The profile's fields, then the serving app's (export writes them into serve.yaml's args).
        for key, default, text in describe() + describe(ServeArgs, prefix="serve.yaml args."):
            print(f"{key} = {default}\n    {text}")
        return None
    print(to_yaml(load_config(args.config, args.overrides)))
    return None


def _model_export(args) -> dict:
    from taosr.models import export_model

    return {"exported": export_model(args.source, args.target, args.format)}


def _cumpt_sweep(args) -> dict:
    from taosr.cumpt_sweep import sweep_and_plot

    return sweep_and_plot(args.predictions, args.out, args.metric)


def _report(args) -> dict:
    from taosr.report import build_report

    return build_report(args.run_dir, args.out)


def _stages(args) -> dict:
    from taosr.stages.registry import stages

    return {
        "stages": [
            {
                "name": spec.name,
                "reads": list(spec.inputs),
                "config_sections": list(spec.sections),
                "trains_policy": bool(spec.policy_title),
            }
            for spec in stages()
        ]
    }


def _serve(args) -> None:
    from taosr.serve.local import serve_forever

    serve_forever(args.serve_yaml, args.address, args.host, args.port)


# Commands that are an entrypoint's own command line: `taosr run ARGS` is `python -m
# taosr.ray_jobs.pipeline ARGS`, so `taosr run --help` lists that entrypoint's options.
DELEGATED = {
    "run": (
        "taosr.ray_jobs.pipeline",
        [],
        "run the pipeline (or --stages of it) on a profile, e.g. taosr run --config configs/tiny.yaml",
    ),
    "plan": (
        "taosr.ray_jobs.pipeline",
        ["--plan"],
        "what `taosr run` would do with each stage (skip, fresh or resume, and why), running nothing",
    ),
    "predict": (
        "taosr.ray_jobs.predict",
        [],
        "score logs with a model: taosr predict --model runs/tiny/export/model --input LOGS --out DIR",
    ),
    "eval": ("taosr.ray_jobs.eval", [], "score one model on the eval split: taosr eval --model DIR --name NAME"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taosr",
        description="Thinking relevance models on Ray. `taosr COMMAND --help` shows a command's options.",
        epilog="example: taosr run --config configs/tiny.yaml seed=1",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (_, _, text) in DELEGATED.items():
        commands.add_parser(name, help=text, add_help=False)

    serve = commands.add_parser(
        "serve",
        help="serve an exported model (export/serve.yaml, or a run_dir holding one) until Ctrl-C",
        epilog="example: taosr serve runs/tiny  (then curl 127.0.0.1:8000/healthz)",
    )
    serve.add_argument("serve_yaml", help="an export/serve.yaml, or the run_dir whose export/serve.yaml to serve")
    serve.add_argument("--address", default="", help="Ray cluster to join (default: RAY_ADDRESS, else a local one)")
    serve.add_argument("--host", default="", help="HTTP host (default: the Serve config's, 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="HTTP port, 1-65535 (default: the Serve config's)")
    serve.set_defaults(handler=_serve)

    data = commands.add_parser("data", help="generate and validate query-item logs").add_subparsers(
        dest="action", required=True
    )
    generate = data.add_parser("generate", help="write seeded synthetic logs as JSONL")
    generate.add_argument("--out", required=True, help="output folder (local or s3://)")
    generate.add_argument("--rows", type=int, default=1000)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--items-per-query", type=int, default=0, help="0 keeps the default")
    generate.add_argument("--s3-endpoint", default="")
    generate.set_defaults(handler=_data_generate)

    validate = data.add_parser("validate", help="validate logs; write accepted/ and quarantine/ under --out")
    validate.add_argument("input", help="a JSONL or Parquet file or folder (local or s3://)")
    validate.add_argument("--out", required=True)
    validate.add_argument("--format", default="auto", choices=("auto", "jsonl", "parquet", "csv", "tsv"))
    validate.add_argument("--config", default=None, help="YAML profile whose data section applies")
    validate.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="data config override, e.g. --set columns.query=search_term (repeatable)",
    )
    validate.add_argument("--s3-endpoint", default="")
    validate.set_defaults(handler=_data_validate)

    model = commands.add_parser("model", help="prepare model folders").add_subparsers(dest="action", required=True)
    export = model.add_parser("export", help="copy a HF folder for serving with its prompt-template record")
    export.add_argument("source")
    export.add_argument("target")
    export.add_argument(
        "--format",
        default="post_cot",
        choices=("post_cot", "label_only"),
        help="response format, for folders that do not record one",
    )
    export.set_defaults(handler=_model_export)

    cumpt = commands.add_parser("cumpt", help="cumulative-probability tiering").add_subparsers(
        dest="action", required=True
    )
    sweep = cumpt.add_parser("sweep", help="sweep beta on an eval predictions.jsonl, pick it, plot it")
    sweep.add_argument("predictions", help="predictions.jsonl written by the eval job (validation split)")
    sweep.add_argument("--out", required=True)
    sweep.add_argument("--metric", default="macro_f1", choices=("macro_f1", "accuracy", "good_f1", "tier_accuracy"))
    sweep.set_defaults(handler=_cumpt_sweep)

    report = commands.add_parser("report", help="turn a run directory into report.md, report.html and PNG plots")
    report.add_argument("run_dir", help="a pipeline run directory (local), e.g. runs/tiny")
    report.add_argument("--out", default=None, help="output folder (default: <run_dir>/report)")
    report.set_defaults(handler=_report)

    stages = commands.add_parser("stages", help="the pipeline's stages in order, with what each reads (the registry)")
    stages.set_defaults(handler=_stages)

    config = commands.add_parser("config", help="print the resolved config, or every field's help")
    config.add_argument("--config", default=None)
    config.add_argument("--fields", dest="help_fields", action="store_true", help="list every field with its help text")
    config.add_argument("overrides", nargs="*")
    config.set_defaults(handler=_config_show)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:
        import importlib

        module, extra, _ = DELEGATED[argv[0]]
        return importlib.import_module(module).main([*argv[1:], *extra])
    args = build_parser().parse_args(argv)
    try:
        result = args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"taosr: error: {error}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

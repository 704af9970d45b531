"""The whole pipeline as one resumable Ray job, running the stages of the registry
(``taosr.stages.registry``) in order:

    data -> cot -> sft -> sample -> dpo -> grpo -> genrm -> srpo -> eval -> export -> serve

    ray job submit --working-dir . -- python -m taosr.ray_jobs.pipeline --config configs/tiny.yaml

Each stage writes under <run_dir>/<stage>/ (local or s3://) and, last, a manifest (see
``taosr.stages.manifest``). A rerun skips stages whose manifest matches, reruns a stage whose
config sections or inputs changed (and so everything downstream that read it), and resumes an
interrupted training stage from its latest Ray Train checkpoint. ``--stages`` picks stages,
``--skip`` leaves some out, ``--force`` reruns some even when up to date. The serve stage
(start the endpoint, score a sample request) runs whenever selected. A local run ends by
writing <run_dir>/report/ (``taosr report``).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Set as AbstractSet

from taosr.actors.runtime import init_ray
from taosr.config import TaosrConfig, to_dict
from taosr.datasets.storage import exists, join, remove_tree, write_json
from taosr.stages import manifest as manifests
from taosr.stages import registry
from taosr.stages.job_args import configure_logging, job_parser

log = logging.getLogger("taosr.pipeline")


def selected_stages(stages: str, skip: str) -> list[str]:
    known = registry.stage_names()

    def names(text: str) -> list[str]:
        chosen = [s.strip() for s in text.split(",") if s.strip()]
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            raise ValueError(f"unknown stages {unknown}; known: {', '.join(known)}")
        return chosen

    wanted, skipped = set(names(stages)), set(names(skip))
    return [s for s in known if s in wanted and s not in skipped]


def run_pipeline(config: TaosrConfig, stages: list[str], force: AbstractSet[str] = frozenset()) -> dict:
    """Run ``stages`` in pipeline order; returns {stage: what happened} for the timings file."""
    endpoint = config.data.s3_endpoint
    config_dict = to_dict(config)
    specs = {spec.name: spec for spec in registry.stages()}
    record = {}
    for name in stages:
        spec = specs[name]
        decision = manifests.decide(config.run_dir, spec, config_dict, endpoint, force=name in force)
        log.info("[%s] %s: %s", name, decision.action, decision.reason)
        if decision.action == "skip":
            record[name] = {"action": "skip", "seconds": 0.0}
            continue
        if decision.action == "fresh" and not spec.always_run:
            remove_tree(join(config.run_dir, name), endpoint)  # no stale checkpoint may be resumed
        manifests.mark_started(config.run_dir, name, decision, endpoint)
        started = time.time()
        if spec.run is None:
            raise ValueError(f"stage {name!r} is registered without a run function")
        summary = spec.run(config)
        seconds = time.time() - started
        manifests.write_manifest(config.run_dir, name, decision, config_dict, spec, summary, seconds, endpoint)
        log.info("[%s] done in %.0f s: %s", name, seconds, json.dumps(summary, default=str)[:600])
        record[name] = {"action": decision.action, "seconds": round(seconds, 1)}
    return record


def plan(config: TaosrConfig, stages: list[str], force: AbstractSet[str] = frozenset()) -> list[dict]:
    """What a run would do with each of ``stages`` (skip, fresh or resume, and why), without
    running anything: a stage whose manifest matches still reruns when a stage it reads reruns
    before it."""
    from taosr.datasets.storage import unreachable

    config_dict = to_dict(config)
    specs = {spec.name: spec for spec in registry.stages()}
    # One quick probe first: without a route to S3, each manifest read would wait out the retries.
    out_of_reach = next(
        (why for path in (config.run_dir, config.data.source) if (why := unreachable(path, config.data.s3_endpoint))),
        "",
    )
    rerun, rows = set(), []
    for name in stages:
        try:
            if out_of_reach:
                raise OSError("S3 out of reach from this machine; the preflight below says why")
            decision = manifests.decide(
                config.run_dir, specs[name], config_dict, config.data.s3_endpoint, name in force
            )
            action, reason = decision.action, decision.reason
        except OSError as error:  # a run_dir or logs out of reach: the preflight says why
            action, reason = "fresh", f"cannot read its manifest or inputs ({str(error)[:120]})"
        upstream = [stage for stage in specs[name].inputs if stage in rerun]
        if action == "skip" and upstream:
            action, reason = "fresh", f"{', '.join(upstream)} reruns first"
        if action != "skip":
            rerun.add(name)
        rows.append({"stage": name, "action": action, "reason": reason})
    return rows


def build_parser():
    """The pipeline's command line: the job options plus which stages to run."""
    parser = job_parser(__doc__)
    parser.add_argument(
        "--stages",
        default=",".join(registry.stage_names()),
        help="comma-separated stages to run, in pipeline order (default: all: %(default)s)",
    )
    parser.add_argument("--skip", default="", help="comma-separated stages to leave out")
    parser.add_argument("--force", default="", help="comma-separated stages to rerun even when their manifest matches")
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print what the run would do with each stage (skip, fresh or resume, and why) and exit without running",
    )
    parser.add_argument(
        "--cluster-yaml",
        default=None,
        help="check the profile's GPU engines and learners against this cluster launcher config's node types "
        "(default: the repository's cluster.yaml when the profile names ray.*_node_resource)",
    )
    parser.add_argument(
        "--seeds",
        default="",
        help="comma-separated seeds, e.g. 0,1,2: run the pipeline once per seed "
        "into <run_dir>/seed-<k>/ and write <run_dir>/seeds.md (each stage's macro-F1 and QWK per "
        "seed, mean and sd, and each seed's paired intervals against the lexical baseline and SFT)",
    )
    return parser


def main(argv=None) -> int:
    from taosr.config import load_config

    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    configure_logging()
    config = load_config(args.config, args.overrides)
    from taosr.precision import float32_note

    note = float32_note(config)
    if note:
        print(note, file=sys.stderr)
    try:
        stages = selected_stages(args.stages, args.skip)
        force = set(selected_stages(args.force, "")) if args.force else set()
    except ValueError as error:
        parser.error(str(error))
    from taosr.stages.preflight import preflight

    planned = plan(config, stages, force)
    try:
        problems = preflight(config, [row["stage"] for row in planned if row["action"] != "skip"], args.cluster_yaml)
    except Exception as error:  # a check that cannot run is not a reason to refuse the run
        log.warning("preflight could not run its checks: %s: %s", type(error).__name__, error)
        problems = []
    if args.plan:
        for row in planned:
            print(f"{row['stage']:<8} {row['action']:<7} {row['reason']}")
        print("preflight: " + ("passed" if not problems else f"{len(problems)} problem(s)"))
    for problem in problems:
        print(f"preflight: {problem.line()}", file=sys.stderr)
    if args.plan or problems:
        return 2 if problems else 0
    init_ray(config.ray, config.data.s3_endpoint)
    if not args.seeds:
        run_once(config, stages, force)
        return 0
    try:
        seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    except ValueError:
        parser.error(f"--seeds takes comma-separated whole numbers; got {args.seeds!r}")
    runs = {}
    for seed in seeds:  # the data seed stays: every seed sees the same logs and splits
        runs[seed] = join(config.run_dir, f"seed-{seed}")
        run_once(load_config(args.config, [*args.overrides, f"seed={seed}", f"run_dir={runs[seed]}"]), stages, force)
    if "://" not in config.run_dir and all(exists(join(r, "eval", "lexical", "metrics.json")) for r in runs.values()):
        from taosr.report_seeds import seed_table

        path = join(config.run_dir, "seeds.md")
        with open(path, "w") as out:
            out.write(f"# {config.run_dir}: one run per seed\n\n" + seed_table(runs))
        print("seed table:", path)
    return 0


def run_once(config: TaosrConfig, stages: list[str], force: set[str]) -> None:
    """One pipeline run: its stages, its timings file and, when eval ran, its report."""
    record = run_pipeline(config, stages, force)
    write_json(join(config.run_dir, "timings.json"), record, config.data.s3_endpoint)
    report = None
    if exists(join(config.run_dir, "eval", "lexical", "metrics.json"), config.data.s3_endpoint):  # eval ran
        report = write_report(config.run_dir, config.data.s3_endpoint)
    print(run_summary(config.run_dir, record, report, config.data.s3_endpoint), flush=True)


def run_summary(run_dir: str, record: dict, report: str | None, s3_endpoint: str = "") -> str:
    """The lines a run ends with: each stage's action and time, each scored model's macro-F1 and
    QWK on the eval split (the lexical baseline first), and where the report is."""
    from taosr.datasets.storage import read_text

    lines = ["", "stage    action   minutes"]
    lines += [f"{name:<8} {done['action']:<8} {done['seconds'] / 60:7.1f}" for name, done in record.items()]
    lines.append(f"{'total':<17} {sum(done['seconds'] for done in record.values()) / 60:7.1f}")
    rows_path = join(run_dir, "eval", "rows.json")
    if exists(rows_path, s3_endpoint):
        lines += ["", "model                            macro-F1    QWK   (eval split)"]
        for slug, title in json.loads(read_text(rows_path, s3_endpoint)):
            path = join(run_dir, "eval", slug, "metrics.json")
            if exists(path, s3_endpoint):
                overall = json.loads(read_text(path, s3_endpoint))["overall"]
                qwk = "–" if overall.get("qwk") is None else f"{overall['qwk']:.3f}"
                lines.append(f"{title[:32]:<32} {100 * overall['macro_f1']:8.2f} {qwk:>6}")
    if report:
        lines += ["", f"report: {report}"]
    return "\n".join(lines)


def write_report(run_dir: str, s3_endpoint: str = "") -> str:
    """The run report under <run_dir>/report/. For a run on S3 the report is built from a local
    copy of the run's small files (metrics, summaries, logs; no weights, no datasets) and
    uploaded next to the stages."""
    from taosr.report import build_report

    if "://" not in run_dir:
        return build_report(run_dir)["html"]
    import tempfile

    from taosr.datasets.storage import copy_small_files, copy_tree

    with tempfile.TemporaryDirectory(prefix="taosr-report-") as local:
        copy_small_files(run_dir, local, s3_endpoint, suffixes=(".json", ".jsonl", ".md", ".yaml"))
        built = build_report(local, f"{local}/report", title=run_dir)
        copy_tree(f"{local}/report", join(run_dir, "report"), s3_endpoint)
        return join(run_dir, "report", built["html"].rsplit("/", 1)[-1])


if __name__ == "__main__":
    sys.exit(main())

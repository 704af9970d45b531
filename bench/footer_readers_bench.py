"""A small pipeline (data, CoT, SFT, eval on the tiny model) with Ray 2.60's 32 Parquet
footer-reading actors per read against ``ray.parquet_footer_readers=1`` (the default), one run
after the other on the same box, each in its own local Ray cluster: wall seconds of each stage
and of the whole run.

    .venv/bin/python bench/footer_readers_bench.py --out bench/results/footer_readers.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import ROOT, git_commit

OVERRIDES = [
    "data.rows=160",
    "model.name=tiny",
    "sft.num_workers=1",
    "sft.cpus_per_worker=1",
    "sft.micro_batch_size=4",
    "sft.epochs=4",
    "sft.bf16=false",
    "sft.max_seq_len=384",
    "sft.train_layers=0",
    "eval.engine=hf",
    "eval.batch_size=32",
    "eval.untrained=true",
    "ray.num_cpus=4",
]


def run_pipeline(readers: int, folder: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "taosr.ray_jobs.pipeline",
        "--config",
        "configs/tiny.yaml",
        "--stages",
        "data,cot,sft,eval",
        f"run_dir={folder / 'run'}",
        *OVERRIDES,
        f"ray.parquet_footer_readers={readers}",
    ]
    env = {"TAOSR_PROGRESS_BARS": "0"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **env})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError((done.stdout + done.stderr)[-3000:])
    stages = json.loads(re.search(r"^stages: (.*)$", done.stdout + done.stderr, re.M).group(1))
    return {
        "footer_readers": readers or "ray default (32)",
        "wall_s": round(wall, 1),
        "stage_s": {name: info["seconds"] for name, info in stages.items()},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="write the runs as JSON here")
    args = parser.parse_args(argv)
    runs = []
    for readers in (0, 1):
        with tempfile.TemporaryDirectory(prefix="footer-bench-", dir="/tmp") as folder:
            runs.append(run_pipeline(readers, Path(folder)))
        print(json.dumps(runs[-1]), flush=True)
    print("\n| footer readers | whole run s | " + " | ".join(runs[0]["stage_s"]) + " |")
    print("|---" * (2 + len(runs[0]["stage_s"])) + "|")
    for run in runs:
        print(
            f"| {run['footer_readers']} | {run['wall_s']} | "
            + " | ".join(str(s) for s in run["stage_s"].values())
            + " |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"commit": git_commit(), "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

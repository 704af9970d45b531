"""Peak memory of the data stage and of batch prediction against the number of log rows: the
driver's peak RSS and the largest Ray worker's, at each size, side by side in one run.

For each size a child process writes that many generated rows as JSONL (streamed, not held), then
another child runs the data stage (``ray_jobs.data``: validate, split, write) and prediction
(``ray_jobs.predict`` with the tiny model on the vLLM scorer) over the file on a local Ray, while
a thread samples the RSS of the driver and of every Ray worker it started every 0.2 s. The goal
(issue 48): a peak that stays within 1.2x from the smallest size to the largest.

    .venv/bin/python bench/predict_memory_bench.py --sizes 10000,100000,1000000 \\
        --out bench/results/predict_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def write_rows(path: str, rows: int) -> None:
    from taosr.datasets.synthetic import LogGenerator

    with open(path, "w") as out:
        for index, row in enumerate(LogGenerator(seed=0).rows(rows)):
            row["id"] = f"r{index}"  # unique at any size
            out.write(json.dumps(row, default=str) + "\n")


class RssSampler:
    """The largest RSS seen of this process and of any Ray worker, in MiB."""

    def __init__(self, every_s: float = 0.2):
        import psutil

        self.me = psutil.Process()
        self.every_s = every_s
        self.driver = 0.0
        self.worker = 0.0
        self.worker_name = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            self.driver = max(self.driver, self.me.memory_info().rss / 2**20)
            # this run's Ray workers only: descendants of this process (the local cluster it started)
            for proc in self.me.children(recursive=True):
                try:
                    cmdline = " ".join(proc.cmdline())
                    rss = proc.memory_info().rss / 2**20
                except psutil.Error:  # a worker that ended between the listing and the read
                    continue
                if cmdline.startswith("ray::") and rss > self.worker:
                    self.worker, self.worker_name = rss, cmdline.split()[0]
            self._stop.wait(self.every_s)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def one_size(path: str, rows: int, work: str) -> dict:
    from taosr.actors.runtime import init_ray
    from taosr.config import load_config
    from taosr.datasets.embedded_models import resolve_model
    from taosr.ray_jobs import data as data_stage
    from taosr.ray_jobs.predict import predict

    model = resolve_model("tiny")
    overrides = [f"data.source={path}", f"run_dir={work}/run", "eval.engine=vllm", "model.dtype=float32"]
    config = load_config(None, overrides)
    init_ray(config.ray, "")
    out: dict = {"rows": rows}
    for phase, job in (
        ("data", lambda: data_stage.run(config)),
        ("predict", lambda: predict(config, model, path, f"{work}/preds")),
    ):
        started = time.perf_counter()
        with RssSampler() as sampler:
            job()
        out[phase] = {
            "seconds": round(time.perf_counter() - started, 1),
            "driver_peak_rss_mib": round(sampler.driver, 1),
            "worker_peak_rss_mib": round(sampler.worker, 1),
            "largest_worker": sampler.worker_name,
        }
    lines = sum(1 for _ in open(f"{work}/preds/predictions.jsonl"))
    if lines != rows:
        raise RuntimeError(f"{lines} prediction lines for {rows} rows")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated row counts (each 1 or more)")
    parser.add_argument("--out", default="", help="where to save the result as JSON (default: print only)")
    parser.add_argument("--side", help=argparse.SUPPRESS)  # "rows:path:work": one size, in a child process
    args = parser.parse_args()
    if args.side:
        rows, path, work = args.side.split(":", 2)
        print("RESULT " + json.dumps(one_size(path, int(rows), work)))
        return 0
    from provenance import child_result, save_benchmark

    sizes = [int(size) for size in args.sizes.split(",")]
    if any(size < 1 for size in sizes):
        parser.error("--sizes takes positive row counts")
    results = []
    for rows in sizes:
        with tempfile.TemporaryDirectory() as work:
            path = os.path.join(work, "logs.jsonl")
            write_rows(path, rows)
            command = [sys.executable, __file__, "--side", f"{rows}:{path}:{work}"]
            results.append(child_result(command, f"{rows} rows", timeout_s=6 * 3600))
            print(json.dumps(results[-1]), flush=True)
    first, last = results[0], results[-1]
    growth = {
        f"{phase}_{who}_growth": round(last[phase][key] / first[phase][key], 3)
        for phase in ("data", "predict")
        for who, key in (("driver", "driver_peak_rss_mib"), ("worker", "worker_peak_rss_mib"))
    }
    save_benchmark("predict_memory", args.out, sizes=results, **growth)
    return 0


if __name__ == "__main__":
    sys.exit(main())

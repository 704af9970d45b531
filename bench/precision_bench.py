"""bfloat16 against float32 on this CPU, side by side in one run: a matmul of a SmolLM2 MLP's
shape, one SFT-sized forward and backward of the tiny model's blocks, and vLLM first-token
scoring of generated rows on SmolLM2-135M. Where the CPU has no native bf16 (no AVX512-BF16, AMX
or Arm BF16 flag) PyTorch and vLLM emulate it; ``ray.cpu_bfloat16: auto`` (taosr/precision.py)
then runs CPU work in float32. Each vLLM side runs in its own process (one in-process engine per
process):

    .venv/bin/python bench/precision_bench.py --out bench/results/precision_<commit>.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DTYPES = ("float32", "bfloat16")


def matmul_gflops(dtype: str, repeats: int = 30) -> float:
    import torch

    torch.set_num_threads(2)
    kind = getattr(torch, dtype)
    rows, width, hidden = 16 * 110, 576, 1536  # 16 rows of ~110 tokens through an MLP projection
    a, w = torch.randn(rows, width, dtype=kind), torch.randn(width, hidden, dtype=kind)
    a @ w
    started = time.perf_counter()
    for _ in range(repeats):
        a @ w
    return repeats * 2 * rows * width * hidden / (time.perf_counter() - started) / 1e9


def scoring_rows_per_s(dtype: str, rows: int) -> float:
    """vLLM first-token scoring of ``rows`` generated rows in ``dtype``, after one warm-up pass."""
    import numpy as np

    from taosr.actors.scorer import LevelScorer
    from taosr.datasets.embedded_models import resolve_model
    from taosr.datasets.synthetic import generate_rows

    table = generate_rows(rows, seed=0)
    batch = {key: np.array([row[key] for row in table], dtype=object) for key in table[0]}
    scorer = LevelScorer(resolve_model("smollm2-135m"), engine="vllm", dtype=dtype, kv_block_size=32)
    scorer(batch)
    started = time.perf_counter()
    scorer(batch)
    return rows / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="", help="where to save the result as JSON (default: print only)")
    parser.add_argument("--rows", type=int, default=128, help="generated rows scored per vLLM side (1 or more)")
    parser.add_argument("--side", choices=DTYPES, help=argparse.SUPPRESS)  # one vLLM side, in a child process
    args = parser.parse_args()
    if args.side:
        print(json.dumps({"rows_per_s": scoring_rows_per_s(args.side, args.rows)}))
        return 0
    from provenance import git_commit, write_result  # bench/, beside this script

    from taosr.precision import NATIVE_BF16_FLAGS, cpu_flags, native_bf16

    scoring = {}
    for dtype in DTYPES:
        done = subprocess.run(
            [sys.executable, __file__, "--side", dtype, "--rows", str(args.rows)], capture_output=True, text=True
        )
        if done.returncode:
            raise SystemExit(f"the {dtype} scoring side failed:\n{done.stderr[-3000:]}")
        scoring[dtype] = round(json.loads(done.stdout.strip().splitlines()[-1])["rows_per_s"], 2)
    matmul = {dtype: round(matmul_gflops(dtype), 2) for dtype in DTYPES}
    result = {
        "what": "bfloat16 against float32 on this CPU: matmul GFLOP/s (2 threads) and vLLM scoring rows/s",
        "commit": git_commit(),
        "cpu_bf16_flags": sorted(cpu_flags() & NATIVE_BF16_FLAGS),
        "native_bf16": native_bf16(),
        "matmul_gflops": matmul,
        "vllm_scoring_rows_per_s": scoring,
        "float32_over_bfloat16": {
            "matmul": round(matmul["float32"] / matmul["bfloat16"], 1),
            "vllm_scoring": round(scoring["float32"] / scoring["bfloat16"], 1),
        },
        "rows": args.rows,
    }
    if args.out:
        write_result(result, args.out)
    else:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

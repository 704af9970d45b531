"""vLLM's CPU default KV block (128 tokens) against the 32-token block the stages use
(``model.kv_block_size``), side by side in one run, on the two calls that dominate RL and
evaluation: a GRPO step's one-token rollouts (16 prompts x 8) and first-token scoring of the
test split in batches of 64. Prefix caching reuses whole blocks only: a ~110-token prompt fills
no 128-token block, so each of a group's 8 rollouts prefills it again.

Each side runs in its own process (one in-process engine per process), on a trained model:

    .venv/bin/python bench/kv_block_bench.py runs/tiny/sft/model runs/tiny/data/accepted
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def measure(model: str, accepted: str, block: int, steps: int) -> dict:
    """One side: the seconds of each rollout step (first dropped as warm-up) and of scoring."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from taosr.actors.rollout import RolloutEngine, SamplingSpec
    from taosr.actors.scorer import LevelScorer
    from taosr.formats import ResponseFormat
    from taosr.prompts import build_prompt, item_from_row

    table = pq.read_table(accepted)
    train = table.filter(pc.equal(table["split"], "train")).to_pylist()[: 16 * (steps + 1)]
    test = table.filter(pc.equal(table["split"], "test")).to_pylist()
    engine = RolloutEngine(model, kv_block_size=block)
    prompts = [build_prompt(engine.tokenizer, r["query"], item_from_row(r), ResponseFormat.POST_COT) for r in train]
    rollouts = []
    for step in range(steps + 1):
        began = time.perf_counter()
        engine.generate(prompts[step * 16 : (step + 1) * 16], SamplingSpec(n=8, max_new_tokens=1))
        rollouts.append(time.perf_counter() - began)
    del engine
    scorer = LevelScorer(model, kv_block_size=block)
    prompts = scorer.prompts_for([r["query"] for r in test], [item_from_row(r) for r in test])
    began = time.perf_counter()
    probs = [scorer.score_prompts(prompts[i : i + 64]) for i in range(0, len(prompts), 64)]
    scoring = time.perf_counter() - began
    return {"rollout_step_s": rollouts[1:], "scoring_s": scoring, "test_rows": sum(len(p) for p in probs)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a trained model folder, e.g. runs/tiny/sft/model")
    parser.add_argument("accepted", help="a run's data/accepted folder")
    parser.add_argument("--steps", type=int, default=4, help="timed rollout steps per side")
    parser.add_argument("--side", type=int, help=argparse.SUPPRESS)  # internal: one side, JSON on stdout
    parser.add_argument("--out", default="bench/results/kv_block.json")
    args = parser.parse_args(argv)
    if args.side is not None:
        print("RESULT " + json.dumps(measure(args.model, args.accepted, args.side, args.steps)))
        return 0
    sides = {}
    for name, block in (("vllm_cpu_default_128", 0), ("block_32", 32)):
        out = subprocess.run(
            [sys.executable, __file__, args.model, args.accepted, "--steps", str(args.steps), "--side", str(block)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        sides[name] = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    from provenance import git_commit, write_result  # bench/, beside this script

    default, small = sides["vllm_cpu_default_128"], sides["block_32"]
    result = {
        "command": "bench/kv_block_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": git_commit(),
        "model": args.model,
        "rows": {
            name: {
                "rollout_step_median_s": statistics.median(side["rollout_step_s"]),
                "rollout_steps": side["rollout_step_s"],
                "scoring_s": side["scoring_s"],
                "test_rows": side["test_rows"],
            }
            for name, side in sides.items()
        },
        "rollout_speedup_median": statistics.median(default["rollout_step_s"])
        / statistics.median(small["rollout_step_s"]),
        "scoring_speedup": default["scoring_s"] / small["scoring_s"],
    }
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

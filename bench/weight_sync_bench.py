"""The RL weight sync's paths side by side, in one run: seconds per sync and the peak resident
memory of the sending process (the learner's rank 0), per model.

- ``whole``: the state dict as one list in one object-store object (the path before buckets);
- ``object_store``: one object per bucket, each engine reading them one at a time;
- ``collective``: each bucket broadcast over a gloo group of the sender and the engine's worker.

Each (model, path) runs in its own process, so its peak RSS (``ru_maxrss``) is its own: the
process loads the model as a learner would, starts one vLLM rollout engine on a local Ray, syncs
once to warm up and ``--syncs`` times timed, and checks the engine's log-probs against its own on
a probe after the last sync. ``rss_added_mib`` is the peak over the sync phase minus the peak
before it (the model loaded, one forward done).

    .venv/bin/python bench/weight_sync_bench.py --out bench/results/weight_sync.json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PATHS = ("whole", "object_store", "collective")
MODELS = ("tiny", "smollm2-135m")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def one_side(model_name: str, path: str, syncs: int, bucket_mb: float, dtype_name: str) -> dict:
    import ray
    import torch
    from transformers import AutoModelForCausalLM

    from taosr.actors.rollout import rollout_actor_class
    from taosr.actors.rollout_group import RolloutGroup
    from taosr.datasets.embedded_models import resolve_model
    from taosr.training.weight_sync import parameter_buckets, sync_plan

    torch.set_num_threads(1)
    folder = resolve_model(model_name)
    dtype = getattr(torch, dtype_name)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    probe = list(range(10, 40))
    with torch.no_grad():
        model(torch.tensor([probe]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    engine = rollout_actor_class(num_cpus=1).remote(folder, dtype=dtype_name, max_seq_len=256)
    ray.get(engine.ready.remote())
    group = RolloutGroup([engine], sync="object_store" if path == "whole" else path)
    plan = sync_plan(model, dtype, bucket_mb)
    before = peak_rss_mib()

    def sync(version: int) -> dict:
        if path == "whole":
            named = [(name, t.detach().to("cpu", dtype, copy=True)) for name, t in model.state_dict().items()]
            return group.push_weights(named, version, timeout_s=600)
        buckets = parameter_buckets(model, plan, dtype, zero3=False, keep=True)
        return group.push_buckets(buckets, plan, dtype_name, version, timeout_s=600)

    sent = sync(1)  # warm-up: the collective group forms here
    seconds = []
    for version in range(2, syncs + 2):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(1.0 + 1e-3)  # a new policy each time, as after an update
        started = time.perf_counter()
        sent = sync(version)
        seconds.append(time.perf_counter() - started)
    engine_logprobs = ray.get(engine.sequence_token_logprobs.remote(probe[:20], probe[20:]))
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([probe])).logits[0, 19:-1].float(), dim=-1)
    learner = [float(logprobs[i, token]) for i, token in enumerate(probe[20:])]
    gap = max(abs(a - b) for a, b in zip(learner, engine_logprobs))
    ray.shutdown()
    return {
        "model": model_name,
        "path": path,
        "parameters": sum(p.numel() for p in model.parameters()),
        "sync_bytes": sent.get("sync_bytes"),
        "sync_buckets": sent.get("sync_buckets"),
        "seconds_per_sync": sorted(seconds)[len(seconds) // 2],
        "seconds_each": [round(s, 3) for s in seconds],
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "rss_added_mib": round(peak_rss_mib() - before, 1),
        "probe_gap": gap,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="", help="where to save the result as JSON (default: print only)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--syncs", type=int, default=5, help="timed syncs per side, after one warm-up (1 or more)")
    parser.add_argument("--bucket-mb", type=float, default=16.0, help="MiB per bucket (> 0)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="learner and engine dtype")
    parser.add_argument("--side", help=argparse.SUPPRESS)  # "model:path": one side, in a child process
    args = parser.parse_args()
    if args.syncs < 1 or args.bucket_mb <= 0:
        parser.error("--syncs must be 1 or more and --bucket-mb above 0")
    if args.side:
        model_name, path = args.side.split(":")
        print("RESULT " + json.dumps(one_side(model_name, path, args.syncs, args.bucket_mb, args.dtype)))
        return 0
    from provenance import child_result, save_benchmark

    sides = []
    for model_name in args.models.split(","):
        for path in PATHS:
            command = [sys.executable, __file__, "--side", f"{model_name}:{path}", "--syncs", str(args.syncs)]
            command += ["--bucket-mb", str(args.bucket_mb), "--dtype", args.dtype]
            sides.append(child_result(command, f"{model_name}:{path}", timeout_s=1800))
            print(json.dumps(sides[-1]), flush=True)
    save_benchmark("weight_sync", args.out, bucket_mb=args.bucket_mb, dtype=args.dtype, sides=sides)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The training engine keeps float32 master weights: AdamW steps far below bfloat16's resolution
still add up. Updating the bf16 weights themselves would round every one of them away."""

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

# Runs in its own process: DeepSpeed wants a process group, and this one must not leak into
# the rest of the suite.
SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    import torch.distributed as dist
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": sys.argv[3], "RANK": "0", "LOCAL_RANK": "0",
                       "WORLD_SIZE": "1", "DS_ACCELERATOR": "cpu"}.items():
        os.environ.setdefault(key, value)
    dist.init_process_group("gloo", rank=0, world_size=1)
    from taosr.config_sections import LearnerConfig
    from taosr.training.trainer import build_engine

    cfg = LearnerConfig(lr=1e-4, weight_decay=0.0, warmup_ratio=0.0, min_lr_ratio=1.0, micro_batch_size=2,
                        grad_clip=1.0, zero_stage=int(sys.argv[2]), bf16=True, autocast=False)
    engine, _ = build_engine(sys.argv[1], cfg, total_steps=100)
    name, weight = next((n, p) for n, p in engine.module.named_parameters() if n.endswith("norm.weight"))
    before = weight.detach().float().clone()  # RMSNorm weights start at 1.0, where a bf16 step is 2**-7
    ids = torch.randint(5, 200, (2, 12))
    for _ in range(60):
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
    moved = (weight.detach().float() - before).abs()
    share = float((moved > 0).float().mean())
    print(json.dumps({"dtype": str(weight.dtype), "max_moved": float(moved.max()), "share_moved": share}))
""")


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_small_adamw_steps_survive_in_bf16_training(tiny_model, tmp_path, zero_stage):
    script = tmp_path / "master.py"
    script.write_text(SCRIPT)
    port = str(29600 + zero_stage)
    done = subprocess.run(
        [sys.executable, str(script), tiny_model, str(zero_stage), port], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["dtype"] == "torch.bfloat16"
    # 60 AdamW steps of 1e-4 move a weight by up to 6e-3: under one bf16 step at 1.0 (7.8e-3) each
    # time, yet the weights did move, so the steps were added to float32 copies.
    assert result["share_moved"] > 0.2 and result["max_moved"] >= 2**-7, result

"""bench/gpu_smoke.py, the check a bare GPU machine runs, runs here on the CPU with Ray, vLLM,
omegaconf, pyarrow and the rest blocked: it needs only torch, transformers and DeepSpeed, and
its own checks (the SFT loss falls, the scorer matches a plain transformers forward) pass."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

# tqdm and PyYAML stay: transformers itself needs them.
BLOCKED = ("ray", "vllm", "omegaconf", "pyarrow", "boto3", "tensorboard", "sklearn", "scipy", "bm25s")


def test_the_gpu_smoke_script_needs_only_torch_transformers_and_deepspeed(tiny_model, tmp_path):
    out = tmp_path / "smoke.json"
    code = (
        "import runpy, sys\n"
        f"for name in {BLOCKED!r}:\n    sys.modules[name] = None  # importing any of them fails\n"
        f"sys.argv = ['gpu_smoke.py', '--model', {tiny_model!r}, '--steps', '4', '--out', {str(out)!r}]\n"
        "runpy.run_path('bench/gpu_smoke.py', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["checks"] == {"sft_loss_falls": True, "scorer_matches_transformers": True}
    assert result["device"].startswith("cpu") and len(result["sft_losses"]) == 4

"""bfloat16 only where the CPU computes it (taosr/precision.py): the flags read from
/proc/cpuinfo, and what a CPU profile becomes on a machine without them."""

from taosr import precision
from taosr.config import load_config

AVX2_EPYC = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_native_bf16_is_read_from_the_cpu_flags():
    assert precision.cpu_flags(AVX2_EPYC) == {"fpu", "sse2", "avx", "avx2", "fma"}
    assert not precision.native_bf16(AVX2_EPYC)
    assert precision.native_bf16(SAPPHIRE_RAPIDS) and precision.native_bf16(GRAVITON3)
    assert precision.cpu_flags("") == set()


def test_a_cpu_profile_runs_in_float32_without_native_bf16(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda cpuinfo=None: False)
    tiny = load_config("configs/tiny.yaml")  # model.dtype bfloat16, SFT autocast, DPO and GRPO bf16
    assert tiny.model.dtype == "float32"
    assert not any(getattr(tiny, s).bf16 or getattr(tiny, s).autocast for s in precision.LEARNER_SECTIONS)
    assert "float32" in precision.float32_note(tiny)
    kept = load_config("configs/tiny.yaml", ["ray.cpu_bfloat16=keep"])
    assert kept.model.dtype == "bfloat16" and kept.sft.autocast and kept.dpo.bf16
    assert precision.float32_note(kept) == ""
    gpu = load_config("configs/production.yaml")  # GPUs compute bf16: nothing changes
    assert gpu.model.dtype == "bfloat16" and gpu.sft.bf16


def test_a_cpu_with_native_bf16_keeps_the_profile(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda cpuinfo=None: True)
    tiny = load_config("configs/tiny.yaml")
    assert tiny.model.dtype == "bfloat16" and tiny.sft.autocast and tiny.grpo.bf16

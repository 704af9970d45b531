"""bfloat16 only where the CPU computes it: on a CPU without bf16 instructions PyTorch and vLLM
emulate it, and on the 2-core AVX2 box a bf16 matmul ran at 1.2 GFLOP/s against float32's 110,
vLLM scored 3.2 rows/s in bf16 against 23.6 in float32, and an SFT step took 205 s under bf16
autocast against 15 s in float32 (docs/cpu.md). With ``ray.cpu_bfloat16: auto`` a CPU run on such
a machine trains and serves in float32 instead: the same recipe, a different dtype, and the
resolved config (saved beside every output) says which."""

from __future__ import annotations

import platform
from pathlib import Path

# /proc/cpuinfo flags of native bf16 arithmetic: x86 (AVX512-BF16, AMX) and Arm (BF16).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
LEARNER_SECTIONS = ("sft", "dpo", "genrm", "grpo", "srpo")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The feature flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def native_bf16(cpuinfo: str | None = None) -> bool:
    apple_silicon = platform.system() == "Darwin" and platform.machine() == "arm64"  # no /proc/cpuinfo there
    return bool(cpu_flags(cpuinfo) & NATIVE_BF16_FLAGS) or apple_silicon


def emulates_bf16(config) -> bool:
    """Whether this run's CPU work would emulate bf16, and ``ray.cpu_bfloat16: auto`` says float32."""
    return config.ray.device == "cpu" and config.ray.cpu_bfloat16 == "auto" and not native_bf16()


def float32_instead(config) -> list[str]:
    """On a CPU run without native bf16 (and ``ray.cpu_bfloat16: auto``), switch the engines'
    dtype and every learner's bf16 and autocast to float32, in place; the settings changed."""
    if not emulates_bf16(config):
        return []
    changed = []
    if config.model.dtype == "bfloat16":
        config.model.dtype = "float32"
        changed.append("model.dtype")
    for name in LEARNER_SECTIONS:
        section = getattr(config, name)
        for flag in ("bf16", "autocast"):
            if getattr(section, flag):
                setattr(section, flag, False)
                changed.append(f"{name}.{flag}")
    return changed


def float32_note(config) -> str:
    """One line for the run's log when ``float32_instead`` applied (empty otherwise)."""
    if not emulates_bf16(config):
        return ""
    return (
        "taosr: this CPU has no native bfloat16 (no AVX512-BF16, AMX or BF16 flag): training and engines run in "
        "float32, 7-13x faster here than emulated bf16 (ray.cpu_bfloat16=keep to keep the profile's dtypes)"
    )

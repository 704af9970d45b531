"""Starting or joining Ray with the environment that CPU runs of vLLM and DeepSpeed need."""

from __future__ import annotations

import json
import os

# Set for this process and shipped to every worker (docs/cpu.md: the traps of a CPU box).
CPU_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # in-process engine: starts in seconds, not tens
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "OMP_NUM_THREADS": "2",
    "DS_ACCELERATOR": "cpu",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def check_single_vllm_build() -> None:
    """vllm (CUDA) and vllm-cpu install into the same `vllm` package; both at once is broken."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("vllm", "vllm-cpu"):
        try:
            found.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    if len(found) > 1:
        raise RuntimeError(
            f"both vLLM builds are installed ({', '.join(found)}); keep the extra you need: "
            "'.[cpu]' on CPU machines, '.[gpu]' on GPU machines"
        )


def check_in_process_engine() -> None:
    """vLLM-CPU 0.32's in-process engine (VLLM_ENABLE_V1_MULTIPROCESSING=0) inspects every loaded
    module when it starts and breaks on llvmlite's objects, which numba (bm25s's dependency)
    loads. Fail at once with the cause instead of deep inside vLLM."""
    import sys

    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") != "0" or "llvmlite" not in sys.modules:
        return
    raise RuntimeError(
        "an in-process vLLM engine cannot start in a process that has imported llvmlite (numba, e.g. "
        "through bm25s's BM25 retriever): start the engine in its own Ray actor or process (as every taosr "
        "stage does), build the retriever elsewhere, or set VLLM_ENABLE_V1_MULTIPROCESSING=1"
    )


def job_env_vars() -> dict:
    """The env_vars of the runtime env a submitted job runs under (``ray job submit
    --runtime-env``), read from the variable Ray sets for the driver; {} outside a job."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "")
    if not raw:
        return {}
    try:
        runtime_env = (json.loads(raw) or {}).get("runtime_env") or {}
    except json.JSONDecodeError as error:
        raise RuntimeError(
            f"RAY_JOB_CONFIG_JSON_ENV_VAR is not JSON ({error}); was this driver started by Ray?"
        ) from error
    return dict(runtime_env.get("env_vars") or {})


def block_size_option(kv_block_size: int) -> dict:
    """vLLM's ``block_size`` keyword for an engine, or nothing for vLLM's default (0)."""
    return {"block_size": kv_block_size} if kv_block_size else {}


def worker_env(device: str, s3_endpoint: str = "", parquet_footer_readers: int = 0) -> dict:
    """The env vars this run ships to every worker: the CPU traps' settings on ``device: cpu``,
    only the telemetry switch on ``gpu`` (a GPU node keeps its own threads, accelerator, hub
    access and vLLM memory settings), ``data.s3_endpoint`` as AWS_ENDPOINT_URL_S3, so an
    actor that fetches an s3:// model folder reaches the endpoint the driver uses, and
    ``ray.parquet_footer_readers`` (0: Ray's default) where Ray Data's Parquet listing reads it,
    in the driver and in the listing task. Keys the
    submitted job's runtime env already sets are left out: the job's value wins, and Ray refuses
    to merge two runtime envs that set the same key."""
    if device not in ("cpu", "gpu"):
        raise ValueError(f"ray.device must be cpu or gpu; got {device!r}")
    env = dict(CPU_ENV) if device == "cpu" else {"RAY_USAGE_STATS_ENABLED": "0"}
    if s3_endpoint:
        env["AWS_ENDPOINT_URL_S3"] = s3_endpoint
    if parquet_footer_readers:
        env["RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"] = str(parquet_footer_readers)
    from_job = job_env_vars()
    return {key: value for key, value in env.items() if key not in from_job}


def init_ray(ray_config=None, s3_endpoint: str = ""):
    """Join the cluster named in the config (or the one `ray job submit` runs in), else start a
    local one, with ``worker_env`` for every worker. Returns the ray module."""
    import ray

    check_single_vllm_build()
    if ray_config is None:
        from taosr.config import RayConfig

        ray_config = RayConfig()
    env = worker_env(ray_config.device, s3_endpoint, ray_config.parquet_footer_readers)
    for key, value in env.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        return ray
    address = ray_config.address or os.environ.get("RAY_ADDRESS") or None
    num_cpus = ray_config.num_cpus or None
    kwargs: dict = {"runtime_env": {"env_vars": env}} if env else {}
    kwargs["log_to_driver"] = True
    if address:
        ray.init(address=address, **kwargs)
    else:
        # The dashboard serves the State API that Ray Train's clean-up thread polls (without it,
        # it logs a warning every second); bound to loopback only.
        ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", **kwargs)
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = ray_config.progress_bars and os.environ.get("TAOSR_PROGRESS_BARS", "1") != "0"
    # Rows in the same order on every run: a seed then fixes what each training step sees, and a
    # resumed trainer skips exactly the batches it had consumed.
    context.execution_options.preserve_order = True
    return ray

"""Shared fixtures: one local Ray cluster per test run (ray.init costs seconds), the tiny model,
and a real S3 endpoint (moto's server) on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
MODEL_CACHE = os.environ.get("TAOSR_TEST_MODEL_CACHE", str(Path.home() / ".cache" / "taosr" / "models"))

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TAOSR_PROGRESS_BARS", "0")  # no progress bars in the suite's output


@pytest.fixture(scope="session")
def ray_cluster():
    from taosr.actors.runtime import init_ray
    from taosr.config import RayConfig

    ray = init_ray(RayConfig(num_cpus=4))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from taosr.datasets.embedded_models import resolve_model

    return resolve_model("tiny", MODEL_CACHE)


def resumable_checkpoint(stage_dir: Path) -> bool:
    """Ray Train has registered a checkpoint of the stage (its snapshot names it) and it is not
    the final one: a kill now leaves something to resume."""
    snapshot = Path(stage_dir) / "ray_train" / "checkpoint_manager_snapshot.json"
    if not snapshot.exists():
        return False
    states = [
        os.path.join(root, "train_state.json")
        for root, _, files in os.walk(snapshot.parent)
        if "train_state.json" in files
    ]
    return bool(states) and not any('"final": true' in open(path).read() for path in states)


def wait_for_free_cpus(ray, wanted: float, timeout: float) -> None:
    """Actors of a killed job or an earlier test release their CPUs asynchronously; a stage
    started before that would queue behind them and time out somewhere less clear than here."""
    deadline = time.time() + timeout
    while ray.available_resources().get("CPU", 0) < wanted:
        if time.time() > deadline:
            raise TimeoutError(f"{wanted} CPUs still not free after {timeout} s: {ray.available_resources()}")
        time.sleep(1)


def stage_job(stage: str, config, ray_address: str, folder: Path) -> subprocess.Popen:
    """``python -m taosr.ray_jobs.<stage>`` with ``config`` saved as its profile, joined to the
    test's Ray cluster, in a process group of its own (so a test can SIGKILL the whole job)."""
    from taosr.config import to_yaml

    profile = Path(folder) / f"{stage}-profile.yaml"
    profile.write_text(to_yaml(config))
    command = [sys.executable, "-m", f"taosr.ray_jobs.{stage}", "--config", str(profile), f"ray.address={ray_address}"]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, cwd=ROOT
    )


def kill_once_resumable(process: subprocess.Popen, stage_dir: Path, timeout: float) -> None:
    """SIGKILL the job's whole process group as soon as the stage has a resumable checkpoint."""
    import signal

    deadline = time.time() + timeout
    while not resumable_checkpoint(stage_dir) and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert process.poll() is None, "the job ended before the stage wrote a checkpoint; nothing was interrupted"
    assert resumable_checkpoint(stage_dir), f"no checkpoint within {timeout} s"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def kill_and_rerun(stage: str, config, ray, folder: Path, cpus: float) -> str:
    """Start the stage's job, SIGKILL it once it has a resumable checkpoint, wait for its CPUs,
    run the same job again to the end; returns the second run's output."""
    address = ray.get_runtime_context().gcs_address
    kill_once_resumable(stage_job(stage, config, address, folder), Path(config.run_dir) / stage, timeout=300)
    assert not (Path(config.run_dir) / stage / "model").exists()
    wait_for_free_cpus(ray, cpus, 120)
    rerun = stage_job(stage, config, address, folder)
    output, _ = rerun.communicate(timeout=400)
    assert rerun.returncode == 0, output[-4000:]
    return output


def assert_supervised_stage_resumed(stage: str, output: str, run_dir: Path, every: int) -> dict:
    """A Ray Train stage's rerun resumed from a checkpoint (a positive multiple of ``every``),
    logged every step once and wrote its model; returns its summary."""
    import json

    summary = json.loads(next(line for line in reversed(output.splitlines()) if line.startswith('{"model"')))
    assert summary["resumed_after_step"] > 0 and summary["resumed_after_step"] % every == 0, output[-3000:]
    steps = [json.loads(line)["step"] for line in (Path(run_dir) / stage / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, summary["total_steps"] + 1))  # each step once: none repeated, none skipped
    assert (Path(run_dir) / stage / "model" / "config.json").exists()
    return summary


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server process on 127.0.0.1; yields its URL with credentials in the env."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ[key] = value
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    else:
        server.kill()
        pytest.fail("moto S3 server did not start")
    yield url
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(scope="session")
def stage1_run(ray_cluster, tiny_model, tmp_path_factory):
    """Stage 1 once per test session on the tiny model: data, CoT, two-worker SFT. Returns
    (config, CoT counts, SFT summary, run_dir); stage 2 tests start from its model."""
    from taosr.config import load_config
    from taosr.ray_jobs import cot as cot_stage
    from taosr.ray_jobs import data as data_stage
    from taosr.ray_jobs import sft as sft_stage

    run_dir = tmp_path_factory.mktemp("stage1")
    config = load_config(
        None,
        [
            f"run_dir={run_dir}",
            "data.rows=160",
            "model.name=tiny",
            "sft.num_workers=2",
            "sft.cpus_per_worker=1",
            "sft.micro_batch_size=4",
            "sft.lr=3e-3",
            "sft.epochs=2",
            "sft.bf16=false",
            "sft.zero_stage=2",
            "sft.checkpoint_every_steps=10",
            "sft.max_seq_len=384",
        ],
    )
    data_stage.run(config)
    counts = cot_stage.run(config)
    summary = sft_stage.train(config, tiny_model, str(run_dir / "sft"))
    return config, counts, summary, run_dir

"""The cluster path as the README gives it: a real head node (`ray start --head` on 127.0.0.1),
the pipeline's first stages submitted with `ray job submit --runtime-env runtime_env.yaml`,
waited on through the job submission API, their outputs checked, the cluster stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import MODEL_CACHE, ROOT, _free_port

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture
def head_node(tmp_path_factory):
    """A head node in its own process group (`ray start --block`): stopping it stops only the
    processes it started, never the suite's own local cluster."""
    port, dashboard = _free_port(), _free_port()
    temp_dir = tmp_path_factory.mktemp("rayhead")
    # A loopback-only head without Ray's token authentication, so that this test does not depend
    # on which token file the machine holds; the CLI and the job client below use the same mode.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    # Every port of its own: the suite's local cluster may hold Ray's default agent and metrics
    # ports, and a head whose job agent cannot bind never accepts a job.
    ports = [
        f"--{name}={_free_port()}"
        for name in (
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "metrics-export-port",
            "runtime-env-agent-port",
            "ray-client-server-port",
            "node-manager-port",
            "object-manager-port",
        )
    ]
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=4",
            "--node-ip-address=127.0.0.1",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--temp-dir={temp_dir}",
            *ports,
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    address = f"http://127.0.0.1:{dashboard}"
    from ray.job_submission import JobSubmissionClient

    deadline = time.time() + 90
    client = None
    while client is None:
        try:
            client = JobSubmissionClient(address)
        except Exception:
            if time.time() > deadline or head.poll() is not None:
                os.killpg(head.pid, signal.SIGKILL)
                raise RuntimeError(f"the head node's job API did not come up at {address}")
            time.sleep(2)
    yield address, client, env
    os.killpg(head.pid, signal.SIGINT)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)


def test_the_pipeline_runs_as_a_submitted_job_with_the_repositorys_runtime_env(head_node, tiny_model, tmp_path):
    from ray.job_submission import JobStatus

    import pyarrow.parquet as pq

    address, client, env = head_node
    run_dir = tmp_path / "run"
    submission_id = f"taosr-test-{os.getpid()}"
    # This environment's interpreter: the suite may run without the virtual environment on PATH.
    entrypoint = [
        sys.executable,
        "-m",
        "taosr.ray_jobs.pipeline",
        "--config",
        "configs/tiny.yaml",
        "--stages",
        "data,cot",
        f"run_dir={run_dir}",
        "data.rows=120",
        "model.name=tiny",
        f"model.cache_dir={MODEL_CACHE}",
    ]
    deadline = time.time() + 180
    while True:  # the head answers before its job agent is up: "No available agent to submit job"
        submitted = subprocess.run(
            [
                RAY,
                "job",
                "submit",
                "--address",
                address,
                "--runtime-env",
                "runtime_env.yaml",
                "--submission-id",
                submission_id,
                "--no-wait",
                "--",
                *entrypoint,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if submitted.returncode == 0 or "No available agent" not in submitted.stderr + submitted.stdout:
            break
        assert time.time() < deadline, "the head's job agent never came up"
        time.sleep(3)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr

    deadline = time.time() + 420
    status = client.get_job_status(submission_id)
    while not status.is_terminal() and time.time() < deadline:
        time.sleep(3)
        status = client.get_job_status(submission_id)
    logs = client.get_job_logs(submission_id)
    assert status == JobStatus.SUCCEEDED, f"job ended {status}:\n{logs[-4000:]}"
    # The job ran the repository's code as the runtime env shipped it (an uploaded working_dir).
    assert client.get_job_info(submission_id).runtime_env["working_dir"].startswith("gcs://")
    accepted = pq.read_table(run_dir / "data" / "accepted")
    assert accepted.num_rows == 120
    assert pq.read_table(run_dir / "cot" / "kept").num_rows > 0
    assert "[data] fresh" in logs and "[cot] fresh" in logs

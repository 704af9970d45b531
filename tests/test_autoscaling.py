"""The autoscaled cluster on this box, with Ray's own autoscaler: a head node started by `ray start`
with an autoscaling config whose worker types are cluster.yaml's (the same names and custom
resources, `min_workers: 0`, CPU counts scaled to the box, GPUs as the custom resources only) and
Ray's fake multi-node provider, which starts and stops worker raylets on this machine the way the
AWS provider starts and stops instances.

The sequence is the README's cluster quickstart: the production-shaped smoke profile
(configs/cluster-smoke.yaml) submitted through the job API with runtime_env.yaml, then
`serve deploy` of the export's serve.yaml, then requests with and without an API key. Read from
Ray's state API: worker nodes started from zero for the work that asked for them, each kind of
work (learners, engines, Serve replicas) ran on the node type meant for it, and the idle workers
went away after the idle timeout."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import MODEL_CACHE, ROOT, _free_port

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
SERVE = str(Path(sys.executable).with_name("serve"))
# Longer than any node idles mid-job (a learner node through export and serving, about 1.5
# min here): the fake nodes share this machine's disk, and removing one deleted the job's
# unpacked working_dir under the processes of the others (seen with 0.25 min: getcwd failed).
IDLE_TIMEOUT_MINUTES = 2.0
HEAD_CPUS, WORKER_CPUS = 4, 2  # logical CPUs; the box has 2 cores
STAGES = "data,cot,sft,grpo,export"
API_KEY = "autoscaling-test-key"


def autoscaling_config(cluster_yaml: Path, gcs_address: str) -> dict:
    """cluster.yaml's node types for the fake multi-node provider: each worker type keeps its
    name, its custom resources and `min_workers`, with WORKER_CPUS CPUs, no GPUs and at most one
    node (the box runs one of each)."""
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_TYPE

    cluster = yaml.safe_load(cluster_yaml.read_text())
    # The provider tags the head `ray ...` started with its own type name: under another name the
    # autoscaler would see no head of cluster.yaml's type and keep launching one.
    head = FAKE_HEAD_NODE_TYPE
    types = {head: {"resources": {"CPU": HEAD_CPUS}, "node_config": {}, "min_workers": 0, "max_workers": 0}}
    for name, spec in cluster["available_node_types"].items():
        if name != cluster["head_node_type"]:
            types[name] = {
                "resources": {"CPU": WORKER_CPUS, **spec["resources"]},
                "node_config": {},
                "min_workers": spec["min_workers"],
                "max_workers": 1,
            }
    empty = (
        "initialization_commands setup_commands head_setup_commands worker_setup_commands "
        "head_start_ray_commands worker_start_ray_commands cluster_synced_files rsync_exclude rsync_filter"
    )
    return {
        "cluster_name": "taosr-autoscaling-test",
        "max_workers": len(types) - 1,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES,
        # No node updaters: the fake nodes are raylets started in-process, with nothing to set up
        # over SSH (an updater would try, and mark every launch failed). Node ids stand for IPs:
        # every fake node has this machine's IP, and the autoscaler tells idle nodes apart by IP.
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "use_node_id_as_ip": True,
        },
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": types,
        "head_node_type": head,
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
        **{key: [] for key in empty.split()},
    }


@pytest.fixture
def autoscaling_head(tmp_path_factory):
    """The head node in its own process group, so that stopping it stops the worker raylets its
    autoscaler started and nothing else (never the suite's own cluster)."""
    from ray._private.services import get_node_ip_address

    folder = tmp_path_factory.mktemp("autoscaling")
    # Short: Ray's sockets live under it, and a Unix socket path holds at most 107 bytes.
    ray_temp = tempfile.mkdtemp(prefix="taosr-ras-", dir="/tmp")
    port, dashboard = _free_port(), _free_port()
    config = folder / "autoscaling.json"
    config.write_text(json.dumps(autoscaling_config(ROOT / "cluster.yaml", f"{get_node_ip_address()}:{port}")))
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",  # no dependence on the token file the machine holds
        "RAY_FAKE_CLUSTER": "1",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        # Inherited by every raylet, so by every Serve replica: cluster.yaml sets it from a secret.
        "TAOSR_API_KEYS": API_KEY,
    }
    env.pop("RAY_ADDRESS", None)
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
            f"--num-cpus={HEAD_CPUS}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--temp-dir={ray_temp}",
            f"--autoscaling-config={config}",
            *ports,
        ],
        env=env,
        start_new_session=True,
        stdout=open(folder / "head.log", "w"),
        stderr=subprocess.STDOUT,
    )
    address = f"http://127.0.0.1:{dashboard}"
    from ray.job_submission import JobSubmissionClient

    deadline, client = time.time() + 120, None
    while client is None:
        try:
            client = JobSubmissionClient(address)
        except Exception:
            if time.time() > deadline or head.poll() is not None:
                os.killpg(head.pid, signal.SIGKILL)
                raise RuntimeError(
                    f"the head's job API did not come up at {address}:\n{(folder / 'head.log').read_text()}"
                )
            time.sleep(2)
    yield address, client, env
    # SIGTERM ends `ray start --block` with its raylets; SIGINT waited out its minute here.
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(head.pid, signal.SIGKILL)  # the worker raylets, if the head left any
    except ProcessLookupError:
        pass
    if not os.environ.get("TAOSR_KEEP_RAY_LOGS"):  # set it to read the cluster's logs after a failure
        shutil.rmtree(ray_temp, ignore_errors=True)


def node_types_by_id(address: str) -> dict[str, dict]:
    """{node id: {type, alive, started, ended}} from the state API: a worker's type is the
    cluster.yaml type whose custom resource it offers; the head offers none."""
    from ray.util.state import list_nodes

    offered = {
        resource: name
        for name, spec in yaml.safe_load((ROOT / "cluster.yaml").read_text())["available_node_types"].items()
        for resource in spec["resources"]
    }
    nodes = {}
    for node in list_nodes(address=address, detail=True, limit=1000, raise_on_missing_output=False):
        kinds = [offered[r] for r in node.resources_total if r in offered]
        nodes[node.node_id] = {
            "type": kinds[0] if kinds else "head",
            "alive": node.state == "ALIVE",
            "started": (node.start_time_ms or 0) / 1000,
            "ended": (node.end_time_ms or 0) / 1000,
        }
    return nodes


def work_by_kind(address: str) -> dict[str, set[str]]:
    """{kind of work: node ids it ran on}, from every actor the state API has seen."""
    from ray.util.state import list_actors

    # Ray Data's actors show their callable in repr_name ("MapWorker(MapBatches(CotWriter))"):
    # the CoT teacher and the scorers are engines; its CPU-only tokenizers are not (left out).
    kinds = {
        "learners": ("RayTrainWorker",),
        "engines": ("RolloutEngine", "CotWriter", "PassAtNSampler", "Scorer"),
        "replicas": ("LevelModel",),
    }
    ran: dict[str, set[str]] = {kind: set() for kind in kinds}
    for actor in list_actors(address=address, detail=True, limit=10000, raise_on_missing_output=False):
        shown = f"{actor.class_name} {actor.repr_name or ''}"
        for kind, names in kinds.items():
            if any(name in shown for name in names) and actor.node_id:
                ran[kind].add(actor.node_id)
    return ran


def submit(address: str, env: dict, submission_id: str, entrypoint: list[str]) -> None:
    deadline = time.time() + 180
    while True:  # the head answers before its job agent is up: "No available agent to submit job"
        submitted = subprocess.run(
            [RAY, "job", "submit", "--address", address, "--runtime-env", "runtime_env.yaml"]
            + ["--submission-id", submission_id, "--no-wait", "--", *entrypoint],
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


@pytest.mark.timeout(1500)
def test_the_autoscaler_starts_each_node_type_for_its_work_and_removes_it_when_idle(
    autoscaling_head, tiny_model, tmp_path
):
    import httpx
    import pyarrow.parquet as pq
    from ray.job_submission import JobStatus

    address, client, env = autoscaling_head
    started = time.time()
    deadline, before = time.time() + 60, {}
    while not any(n["alive"] for n in before.values()) and time.time() < deadline:  # the head registers
        time.sleep(1)
        before = node_types_by_id(address)
    assert [n["type"] for n in before.values() if n["alive"]] == ["head"], before  # workers start from zero

    run_dir, serve_port = tmp_path / "run", _free_port()
    submission_id = f"taosr-autoscaling-{os.getpid()}"
    entrypoint = [sys.executable, "-m", "taosr.ray_jobs.pipeline", "--config", "configs/cluster-smoke.yaml"]
    entrypoint += [
        "--stages",
        STAGES,
        f"run_dir={run_dir}",
        f"model.cache_dir={MODEL_CACHE}",
        f"serve.port={serve_port}",
    ]
    submit(address, env, submission_id, entrypoint)
    deadline = time.time() + 900
    status = client.get_job_status(submission_id)
    while not status.is_terminal() and time.time() < deadline:
        time.sleep(3)
        status = client.get_job_status(submission_id)
    logs = client.get_job_logs(submission_id)
    assert status == JobStatus.SUCCEEDED, f"job ended {status}:\n{logs[-5000:]}"
    # The job ran the code the runtime env shipped (an uploaded working_dir), not an installed copy.
    assert client.get_job_info(submission_id).runtime_env["working_dir"].startswith("gcs://")
    assert all(f"[{stage}] fresh" in logs for stage in STAGES.split(",")), logs[-3000:]
    job_done = time.time()

    # The export's serve.yaml, deployed as the README says; eager, since compiling the engine
    # would add a minute and a half and check nothing more here.
    served = yaml.safe_load((run_dir / "export" / "serve.yaml").read_text())
    assert served["proxy_location"] == "EveryNode" and served["http_options"]["host"] == "0.0.0.0"
    served["applications"][0]["args"].update(compile_engine=False)
    deployed = tmp_path / "serve.yaml"
    deployed.write_text(yaml.safe_dump(served))
    deploy = subprocess.run(
        [SERVE, "deploy", "--address", address, str(deployed)], env=env, capture_output=True, text=True, timeout=120
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    url = f"http://127.0.0.1:{serve_port}"
    row = pq.read_table(run_dir / "data" / "accepted").slice(0, 1).to_pylist()[0]
    request = {"query": row["query"], "items": [{"id": str(row["id"]), "title": row["title"]}]}
    try:
        deadline, answered = time.time() + 420, None
        while time.time() < deadline:
            try:
                answered = httpx.post(f"{url}/v1/relevance", json=request, headers={"X-API-Key": API_KEY}, timeout=60)
                if answered.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(3)
        assert answered is not None and answered.status_code == 200, answered and answered.text
        assert [result["id"] for result in answered.json()["results"]] == [str(row["id"])]
        refused = httpx.post(f"{url}/v1/relevance", json=request, timeout=60)
        assert refused.status_code == 401, refused.text
        wrong = httpx.post(f"{url}/v1/relevance", json=request, headers={"X-API-Key": "not-the-key"}, timeout=60)
        assert wrong.status_code == 401, wrong.text
        ran = work_by_kind(address)
    finally:
        subprocess.run([SERVE, "shutdown", "--address", address, "-y"], env=env, capture_output=True, timeout=120)
    served_at = time.time()

    nodes = node_types_by_id(address)
    for kind, meant_for in (("learners", "gpu_h100_x8"), ("engines", "gpu_l40s_x4"), ("replicas", "gpu_l40s_x4")):
        assert ran[kind], f"no {kind} seen by the state API"
        assert {nodes[node]["type"] for node in ran[kind]} == {meant_for}, (kind, ran[kind], nodes)
    workers = {node: n for node, n in nodes.items() if n["type"] != "head"}
    assert {n["type"] for n in workers.values()} == {"gpu_h100_x8", "gpu_l40s_x4"}
    assert all(n["started"] >= started for n in workers.values())  # started for this work, from zero

    # Idle workers go away after the idle timeout (plus the autoscaler's update interval).
    deadline = time.time() + IDLE_TIMEOUT_MINUTES * 60 + 120
    while any(n["alive"] for n in workers.values()) and time.time() < deadline:
        time.sleep(5)
        workers = {node: n for node, n in node_types_by_id(address).items() if n["type"] != "head"}
    assert not any(n["alive"] for n in workers.values()), workers

    timeline = [
        {
            "node_type": n["type"],
            "started_s": round(n["started"] - started, 1),
            "removed_s": round(n["ended"] - started, 1),
            "ran": sorted(kind for kind, where in ran.items() if node in where),
        }
        for node, n in sorted(workers.items(), key=lambda item: item[1]["started"])
    ]
    print(
        json.dumps(
            {
                "job_s": round(job_done - started, 1),
                "served_s": round(served_at - started, 1),
                "idle_timeout_s": IDLE_TIMEOUT_MINUTES * 60,
                "nodes": timeline,
            },
            indent=2,
        )
    )

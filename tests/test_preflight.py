"""The preflight's checks, each failing on a bad profile and passing on a good one (no Ray)."""

import json
from pathlib import Path

import pytest

from taosr.config import load_config
from taosr.stages import preflight as pf

ALL = ["data", "cot", "sft", "sample", "dpo", "grpo", "genrm", "srpo", "eval", "export", "serve"]


def production(tmp_path, *overrides):
    return load_config("configs/production.yaml", [f"run_dir={tmp_path}/run", *overrides])


def test_the_production_profile_fits_cluster_yaml():
    config = load_config("configs/production.yaml", [])
    assert pf.check_resources(config, ALL, str(pf.CLUSTER_YAML)) == []


def test_an_engine_larger_than_every_node_type_or_a_resource_nobody_offers_is_refused(tmp_path):
    too_big = pf.check_resources(production(tmp_path, "eval.gpus_per_engine=8"), ALL, str(pf.CLUSTER_YAML))
    assert [p.check for p in too_big] == ["resources"]
    assert "one eval engine asks for 8 engine_gpu and the largest node type offers 4" in too_big[0].cause
    unknown = pf.check_resources(production(tmp_path, "ray.learner_node_resource=a100"), ["sft"], str(pf.CLUSTER_YAML))
    assert len(unknown) == 1 and "no node type" in unknown[0].cause and "a100" in unknown[0].cause
    crowded = pf.check_resources(production(tmp_path, "sft.num_workers=24"), ["sft"], str(pf.CLUSTER_YAML))
    assert len(crowded) == 1 and "24 learners" in crowded[0].cause and "16 at most" in crowded[0].cause


def test_logs_without_step_annotations_stop_a_run_that_trains_the_genrm(tmp_path):
    logs = tmp_path / "logs.csv"
    logs.write_text("query,title,label\nshoes,running shoe,4\n")
    config = load_config("configs/user-logs.yaml", [f"data.source={logs}"])
    problems = pf.check_logs(config, ALL)
    assert len(problems) == 1 and "no 'step_annotations' column" in problems[0].cause
    assert "--skip genrm" in problems[0].fix
    assert pf.check_logs(config, [s for s in ALL if s != "genrm"]) == []  # left out: nothing to check
    annotated = tmp_path / "annotated.jsonl"
    annotated.write_text(json.dumps({"query": "q", "title": "t", "label": 4, "steps": {"decision": 4}}) + "\n")
    mapped = load_config("configs/user-logs.yaml", [f"data.source={annotated}", "data.columns.step_annotations=steps"])
    assert pf.check_logs(mapped, ALL) == []


def test_a_context_shorter_than_max_seq_len_is_refused(tiny_model, tmp_path):
    good = load_config("configs/tiny.yaml", [f"model.name={tiny_model}"])
    assert pf.check_model(good) == []
    context = json.loads((Path(tiny_model) / "config.json").read_text())["max_position_embeddings"]
    short = load_config("configs/tiny.yaml", [f"model.name={tiny_model}", f"model.max_seq_len={context + 1}"])
    problems = pf.check_model(short)
    assert len(problems) == 1 and f"{context} tokens" in problems[0].cause


def test_an_endpoint_exposed_to_the_cluster_needs_api_keys():
    local = load_config("configs/tiny.yaml")
    assert pf.check_endpoint(local, ALL) == []  # 127.0.0.1 on the head
    production = load_config("configs/production.yaml")
    assert pf.check_endpoint(production, ALL) == []  # every interface, with keys
    open_cluster = load_config("configs/production.yaml", ["serve.api_keys_env=''"])
    problems = pf.check_endpoint(open_cluster, ALL)
    assert len(problems) == 1 and "0.0.0.0" in problems[0].cause and "serve.api_keys_env" in problems[0].fix
    assert pf.check_endpoint(open_cluster, ["sft"]) == []  # nothing is exported


@pytest.mark.parametrize(
    "host,loopback",
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.5", False),
        ("head.internal", False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert pf.is_loopback(host) is loopback


def test_a_store_out_of_reach_is_one_line_each_and_the_plan_does_not_wait_out_the_retries(tmp_path, monkeypatch):
    """No route to S3 (here: an endpoint on a closed port) is found by one quick probe; without it
    each manifest read of the plan waited out the SDK's retries (about 33 s each with no DNS)."""
    from taosr.datasets import storage
    from taosr.ray_jobs.pipeline import plan

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens there
    config = load_config(
        "configs/production.yaml",
        ["run_dir=s3://bucket/run", "data.source=s3://bucket/logs/", f"data.s3_endpoint={closed}"],
    )
    assert "curlCode" in storage.unreachable("s3://bucket/run", closed)
    assert storage.unreachable(str(tmp_path), closed) == ""  # local paths are never probed
    problems = pf.check_storage(config)
    assert [p.check for p in problems] == ["storage", "storage"]
    assert "cannot reach the store of run_dir s3://bucket/run" in problems[0].cause
    assert "cannot reach the store of the logs s3://bucket/logs/" in problems[1].cause
    assert pf.check_logs(config, ALL) == []  # the storage line says it; no second wait on the logs

    def no_manifest_reads(*args, **kwargs):
        raise AssertionError("the plan read a manifest from a store it knew was out of reach")

    monkeypatch.setattr("taosr.stages.manifest.decide", no_manifest_reads)
    rows = plan(config, ALL)
    assert {row["action"] for row in rows} == {"fresh"}
    assert all("S3 out of reach" in row["reason"] for row in rows)


def test_a_collective_sync_between_gpu_learners_and_cpu_engines_is_refused(tmp_path):
    config = production(tmp_path)
    assert config.grpo.weight_sync == config.srpo.weight_sync == "collective"
    assert pf.check_weight_sync(config, ALL) == []
    mixed = pf.check_weight_sync(production(tmp_path, "grpo.gpus_per_engine=0"), ALL)
    assert [p.check for p in mixed] == ["weight sync"]
    assert "GPU learners (NCCL) and CPU engines" in mixed[0].cause and "grpo.weight_sync" in mixed[0].fix
    fallback = production(tmp_path, "grpo.gpus_per_engine=0", "grpo.weight_sync=object_store")
    assert pf.check_weight_sync(fallback, ALL) == []
    assert pf.check_weight_sync(production(tmp_path, "grpo.gpus_per_engine=0"), ["sft"]) == []

"""The cloud cluster files: cluster.yaml passes Ray's own launcher schema, the production
profile loads into the typed config, and the job runtime_env ships code but no data."""

from pathlib import Path

import yaml

from taosr.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def test_cluster_yaml_passes_ray_schema_validation():
    import jsonschema
    import pytest
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # what `ray up` runs: raises on a schema violation
    broken = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    broken["available_node_types"]["head"]["instance"] = "m6i.4xlarge"  # a misspelt key
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    gpu_types = [name for name in types if name != config["head_node_type"]]
    assert gpu_types and all(types[name]["min_workers"] == 0 for name in gpu_types)
    for name, node in types.items():  # S3 from every node: the run folder, the logs, the models
        assert node["node_config"]["IamInstanceProfile"]["Name"] in ("taosr-node", "taosr-head"), name
    assert types[config["head_node_type"]]["node_config"]["IamInstanceProfile"]["Name"] == "taosr-head"


def test_the_instance_profiles_policies_cover_the_production_profiles_bucket():
    import json

    config = load_config(ROOT / "configs" / "production.yaml")
    buckets = {path.split("/")[2] for path in (config.run_dir, config.data.source, config.model.name)}
    assert len(buckets) == 1, "one bucket to set"
    [bucket] = buckets
    node = json.loads((ROOT / "deploy" / "iam" / "taosr-node-policy.json").read_text())
    granted = {action: statement["Resource"] for statement in node["Statement"] for action in statement["Action"]}
    assert granted["s3:ListBucket"] == f"arn:aws:s3:::{bucket}"
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert granted[action] == f"arn:aws:s3:::{bucket}/*", action
    assert "taosr/api-keys" in granted["secretsmanager:GetSecretValue"]
    head = json.loads((ROOT / "deploy" / "iam" / "taosr-head-policy.json").read_text())
    head_actions = {a for statement in head["Statement"] for a in np_list(statement["Action"])}
    assert {"ec2:RunInstances", "ec2:TerminateInstances", "iam:PassRole"} <= head_actions
    cluster = (ROOT / "cluster.yaml").read_text()
    assert cluster.count("SecretId='taosr/api-keys'") == 2  # head and workers start Ray with the keys


def np_list(value) -> list:
    return value if isinstance(value, list) else [value]


def test_gpu_engine_settings_come_from_the_profile():
    """CUDA graphs on GPU engines, eager on CPU ones; vLLM's GPU share per engine kind; gradient
    checkpointing as a learner option, all read from the profile by the code that starts them."""
    import pytest

    from taosr.training.trainer import build_engine  # noqa: F401 - the consumer of gradient_checkpointing

    production = load_config(ROOT / "configs" / "production.yaml")
    tiny = load_config(ROOT / "configs" / "tiny.yaml")
    assert production.ray.vllm_options(0.85) == {"enforce_eager": False, "gpu_memory_utilization": 0.85}
    assert tiny.ray.vllm_options(0.5)["enforce_eager"] is True
    eager_gpu = load_config(ROOT / "configs" / "production.yaml", ["ray.cuda_graphs=false"])
    assert eager_gpu.ray.vllm_options(0.9)["enforce_eager"] is True
    shares = {
        "rollouts": production.grpo.gpu_memory_utilization,
        "judge": production.srpo.genrm_gpu_memory_utilization,
        "eval": production.eval.gpu_memory_utilization,
        "teacher": production.cot.gpu_memory_utilization,
    }
    assert all(0 < share <= 1 for share in shares.values()) and len(set(shares.values())) > 1
    assert production.sft.gradient_checkpointing and not tiny.sft.gradient_checkpointing
    with pytest.raises(ValueError, match="grpo.gpu_memory_utilization"):
        load_config(ROOT / "configs" / "tiny.yaml", ["grpo.gpu_memory_utilization=1.5"])


def test_production_profile_loads_and_places_work_on_gpus():
    config = load_config(ROOT / "configs" / "production.yaml")
    assert config.sft.use_gpu and config.dpo.use_gpu and config.grpo.use_gpu
    assert config.grpo.gpus_per_engine >= 1 and config.sample.gpus_per_engine >= 1
    sequences = config.grpo.prompts_per_step * config.grpo.group_size
    assert sequences % (config.grpo.num_workers * config.grpo.micro_batch_size) == 0


class RecordingRows:
    """An empty stand-in for a Ray Dataset that records what ``map_batches`` asks Ray for."""

    def __init__(self):
        self.requests = []
        self.constructors = []

    def map_batches(self, fn, **kwargs):
        self.requests.append({key: kwargs.get(key) for key in ("num_cpus", "num_gpus", "resources")})
        self.constructors.append((kwargs.get("fn_constructor_args") or (), kwargs.get("fn_constructor_kwargs") or {}))
        return self

    def materialize(self):
        return self

    filter = select_columns = lambda self, *args, **kwargs: self

    def take_all(self):
        return []

    def count(self):
        return 0


# GPUs of the instance types cluster.yaml names (AWS's published counts).
INSTANCE_GPUS = {"g6e.12xlarge": 4, "p5.48xlarge": 8}


def offered_by_node_types():
    """{custom resource: (node type, units)}; each type offers one unit per GPU it has."""
    types = yaml.safe_load((ROOT / "cluster.yaml").read_text())["available_node_types"]
    offered = {}
    for name, node in types.items():
        for resource, units in (node.get("resources") or {}).items():
            assert units == INSTANCE_GPUS[node["node_config"]["InstanceType"]], (name, resource)
            offered[resource] = (name, units)
    return offered


def test_production_profile_asks_for_the_node_type_of_each_kind_of_work():
    """The requests the GPU profile makes, read from the functions that make them (no GPU
    needed): learners ask for learner_gpu, every engine and replica for engine_gpu, one unit per
    GPU, and cluster.yaml has a node type offering each with enough GPUs for one worker."""
    from taosr.datasets.cot import synthesize
    from taosr.ray_jobs.eval import _run
    from taosr.serve.deployment import serve_config
    from taosr.ray_jobs.sample import sample_dataset
    from taosr.training.trainer import scaling_config
    from taosr.actors.rollout import rollout_actor_class
    from taosr.decision import DecisionRule
    from taosr.formats import ResponseFormat

    config = load_config(ROOT / "configs" / "production.yaml")
    offered = offered_by_node_types()
    learner, engine = config.ray.learner_node_resource, config.ray.engine_node_resource
    assert offered[learner][0] == "gpu_h100_x8" and offered[engine][0] == "gpu_l40s_x4"

    for stage in ("sft", "dpo", "genrm", "grpo", "srpo"):
        scaling = scaling_config(getattr(config, stage), config.ray)
        assert scaling.use_gpu and scaling.resources_per_worker == {
            "CPU": getattr(config, stage).cpus_per_worker,
            learner: 1.0,
        }, stage

    rows = RecordingRows()
    sample_dataset(rows, "/models/m", config)
    _run(rows, object, "/models/m", ResponseFormat.POST_COT, config, columns=())
    synthesize(rows, config.cot, config.ray)
    for request, gpus in zip(
        rows.requests, (config.sample.gpus_per_engine, config.eval.gpus_per_engine, config.cot.gpus_per_engine)
    ):
        assert request["num_gpus"] == gpus >= 1 and request["resources"] == {engine: float(gpus)}
        assert gpus <= offered[engine][1]
    # Each engine kind gets the GPU settings of its own section: CUDA graphs and its memory share.
    (_, sampler), (_, scorer), ((_, teacher), _) = rows.constructors
    assert sampler["vllm_options"] == {"enforce_eager": False, "gpu_memory_utilization": 0.9}
    assert (scorer["enforce_eager"], scorer["gpu_memory_utilization"]) == (False, config.eval.gpu_memory_utilization)
    assert teacher == {"enforce_eager": False, "gpu_memory_utilization": config.cot.gpu_memory_utilization}

    rollout = rollout_actor_class(**config.ray.engine_options(config.grpo.cpus_per_engine, config.grpo.gpus_per_engine))
    assert rollout._default_options["resources"] == {engine: float(config.grpo.gpus_per_engine)}
    served = serve_config("/models/m", DecisionRule("cumpt", beta=0.4), config)
    replica = next(d for d in served["applications"][0]["deployments"] if d["name"] == "LevelModel")
    assert replica["ray_actor_options"]["resources"] == {engine: float(config.eval.gpus_per_engine)}

    cpu = load_config(ROOT / "configs" / "tiny.yaml")  # a CPU profile asks for no node type
    assert cpu.ray.engine_options(1, 0) == {"num_cpus": 1, "num_gpus": None, "resources": {}}
    assert scaling_config(cpu.sft, cpu.ray).resources_per_worker == {"CPU": cpu.sft.cpus_per_worker}


def test_runtime_env_ships_code_without_data_checkpoints_or_environments():
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load((ROOT / "runtime_env.yaml").read_text())
    RuntimeEnv(**env)  # Ray's own validation of the fields
    assert env["working_dir"] == "."
    for excluded in (".venv/", "runs/", ".git/", "*.safetensors"):
        assert excluded in env["excludes"]

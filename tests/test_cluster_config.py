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
    assert any('".[gpu]"' in command for command in config["setup_commands"])


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

    def map_batches(self, fn, **kwargs):
        self.requests.append({key: kwargs.get(key) for key in ("num_cpus", "num_gpus", "resources")})
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
    from taosr.ray_jobs.export import serve_config
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

    rollout = rollout_actor_class(**config.ray.engine_options(config.grpo.cpus_per_engine, config.grpo.gpus_per_engine))
    assert rollout._default_options["resources"] == {engine: float(config.grpo.gpus_per_engine)}
    served = serve_config(
        "/models/m",
        DecisionRule("cumpt", beta=0.4),
        8000,
        config.eval.gpus_per_engine,
        1,
        config.ray.engine_options(1, config.eval.gpus_per_engine)["resources"],
    )
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

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


def test_runtime_env_ships_code_without_data_checkpoints_or_environments():
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load((ROOT / "runtime_env.yaml").read_text())
    RuntimeEnv(**env)  # Ray's own validation of the fields
    assert env["working_dir"] == "."
    for excluded in (".venv/", "runs/", ".git/", "*.safetensors"):
        assert excluded in env["excludes"]

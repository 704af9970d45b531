from pathlib import Path

import pytest
from omegaconf.errors import ConfigKeyError, ValidationError

from taosr.config import TaosrConfig, config_hash, describe, load_config, save_config

ROOT = Path(__file__).resolve().parent.parent


def test_profile_then_overrides():
    config = load_config(ROOT / "configs" / "tiny.yaml", ["eval.max_examples=7", "data.label_mix.3=0.2"])
    assert isinstance(config, TaosrConfig)
    assert config.model.name == "smollm2-135m"
    assert config.eval.max_examples == 7
    assert config.data.label_mix["3"] == 0.2


def test_wrong_type_and_unknown_key_are_rejected():
    with pytest.raises(ValidationError):
        load_config(None, ["eval.batch_size=many"])
    with pytest.raises(ConfigKeyError):
        load_config(None, ["eval.no_such_field=1"])
    with pytest.raises(ValueError, match="key.sub=value"):
        load_config(None, ["eval.batch_size"])
    with pytest.raises(FileNotFoundError):
        load_config("configs/missing.yaml")


def test_every_field_has_help_text():
    rows = describe()
    assert len(rows) > 20
    assert all(help_text for _, _, help_text in rows), [key for key, _, help_text in rows if not help_text]


def test_saved_config_reloads_to_the_same_hash(tmp_path):
    config = load_config(None, ["seed=3"])
    path = save_config(config, tmp_path)
    assert config_hash(load_config(path)) == config_hash(config)
    assert config_hash(load_config(None, ["seed=4"])) != config_hash(config)


@pytest.mark.parametrize("profile", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_profile_loads_and_gives_srpo_the_grpo_budget(profile):
    """Where GRPO decodes more than the label, SRPO is compared with GRPO on the same budget:
    its curriculum's steps add up to GRPO's. The embedded default and the user-logs profile are
    the exceptions by design: their GRPO trains the decision on one-token rollouts (ten times
    cheaper a step); the default's SRPO is the two-step smoke of the step-level reward, and logs
    without step annotations run no SRPO."""
    config = load_config(ROOT / "configs" / profile)
    srpo_steps = sum(stage["steps"] for stage in config.srpo.curriculum)
    if config.grpo.max_new_tokens == 1:
        assert (profile, srpo_steps) in (
            ("tiny.yaml", 2),
            ("long.yaml", 6),
            ("user-logs.yaml", 12),
            ("homedepot.yaml", 12),
        )
    else:
        assert srpo_steps == config.grpo.steps


def test_a_profile_extends_another_and_changes_only_what_it_names(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 3\ndata:\n  rows: 100\n  seed: 5\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ndata:\n  rows: 200\n")
    config = load_config(tmp_path / "child.yaml", ["data.seed=6"])
    assert (config.seed, config.data.rows, config.data.seed) == (3, 200, 6)
    long, tiny = load_config(ROOT / "configs" / "long.yaml"), load_config(ROOT / "configs" / "tiny.yaml")
    assert long.sft == tiny.sft and long.data.rows == 2 * tiny.data.rows and long.run_dir == "runs/long"
    (tmp_path / "base.yaml").write_text("extends: child.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_config(tmp_path / "child.yaml")
    (tmp_path / "child.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(FileNotFoundError, match="extended by"):
        load_config(tmp_path / "child.yaml")


def test_an_unknown_advantage_estimator_fails_when_the_config_loads():
    from taosr.config import load_config

    with pytest.raises(ValueError, match="unknown advantage estimator 'srp'; known: \\['grpo', 'srpo'\\]"):
        load_config("configs/tiny.yaml", ["srpo.advantage=srp"])
    with pytest.raises(ValueError, match="ray.device must be cpu or gpu"):
        load_config("configs/tiny.yaml", ["ray.device=tpu"])


def test_model_names_a_cluster_can_use(monkeypatch, tmp_path):
    from taosr.models import resolve_model

    assert resolve_model("s3://bucket/runs/prod/sft/model") == "s3://bucket/runs/prod/sft/model"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the CPU profiles: a hub id fails at once, with what would work
    with pytest.raises(FileNotFoundError, match="hub id like org/name"):
        resolve_model("Qwen/Qwen3-0.6B", str(tmp_path))


def test_worker_env_follows_the_device_and_leaves_a_submitted_jobs_keys_to_it(monkeypatch):
    import json

    from taosr.actors.runtime import CPU_ENV, worker_env

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert worker_env("cpu") == CPU_ENV
    assert worker_env("gpu") == {"RAY_USAGE_STATS_ENABLED": "0"}  # no CPU threads, accelerator or offline hub
    job = {
        "runtime_env": {
            "working_dir": "gcs://pkg.zip",
            "env_vars": {"RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false"},
        }
    }
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    env = worker_env("cpu")
    assert "RAY_USAGE_STATS_ENABLED" not in env and "TOKENIZERS_PARALLELISM" not in env
    assert env["DS_ACCELERATOR"] == "cpu" and env["HF_HUB_OFFLINE"] == "1"
    assert worker_env("gpu") == {}


def test_the_parquet_footer_reader_count_reaches_the_workers_on_either_device(monkeypatch):
    from taosr.actors.runtime import worker_env
    from taosr.config import RayConfig

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert RayConfig().parquet_footer_readers == 1
    for device in ("cpu", "gpu"):
        assert worker_env(device, "", 3)["RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"] == "3"
        assert "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS" not in worker_env(device, "", 0)  # Ray's own default
    with pytest.raises(ValueError, match="parquet_footer_readers must be 0"):
        RayConfig(parquet_footer_readers=-1)


def test_the_configured_s3_endpoint_reaches_every_worker_unless_the_job_names_one(monkeypatch):
    import json

    from taosr.actors.runtime import worker_env

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert worker_env("gpu", "http://minio:9000") == {
        "RAY_USAGE_STATS_ENABLED": "0",
        "AWS_ENDPOINT_URL_S3": "http://minio:9000",
    }
    assert "AWS_ENDPOINT_URL_S3" not in worker_env("cpu", "")
    job = {"runtime_env": {"env_vars": {"AWS_ENDPOINT_URL_S3": "http://other:9000"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert "AWS_ENDPOINT_URL_S3" not in worker_env("gpu", "http://minio:9000")  # the job's value wins


def test_renamed_resource_fields_are_accepted_with_a_warning_for_one_release(tmp_path):
    profile = tmp_path / "old.yaml"
    profile.write_text("eval:\n  num_gpus_per_engine: 1\ncot:\n  num_cpus_per_teacher: 3\n")
    with pytest.warns(FutureWarning, match="eval.num_gpus_per_engine is deprecated; use eval.gpus_per_engine"):
        config = load_config(profile, ["srpo.genrm_cpus=2"])
    assert config.eval.gpus_per_engine == 1 and config.cot.cpus_per_engine == 3
    assert config.srpo.genrm_cpus_per_engine == 2
    with pytest.raises(ValueError, match="sample.num_cpus_per_engine and sample.cpus_per_engine are the same field"):
        load_config(None, ["sample.num_cpus_per_engine=2", "sample.cpus_per_engine=3"])


def test_srpo_start_policy_is_validated_when_the_config_loads():
    assert load_config(None).srpo.start_from == "latest"
    with pytest.raises(ValueError, match="srpo.start_from must be latest or dpo"):
        load_config(None, ["srpo.start_from=grpo"])
    with pytest.raises(ValueError, match="unknown advantage estimator"):  # the parent's checks still run
        load_config(None, ["srpo.advantage=srp"])


def test_attention_kernel_is_validated_in_every_training_section():
    assert load_config(None).grpo.attn_implementation == "sdpa"
    assert load_config(None, ["sft.attn_implementation=eager"]).sft.attn_implementation == "eager"
    for section in ("sft", "dpo", "grpo", "srpo", "genrm"):
        with pytest.raises(ValueError, match="attn_implementation must be one of sdpa, eager; got 'flash'"):
            load_config(None, [f"{section}.attn_implementation=flash"])


def test_a_whole_map_on_the_command_line_replaces_the_profiles_map():
    """`data.label_bins={}` removes the example profile's bins, `data.columns={...}` replaces its
    mapping; a dotted key still sets one entry and keeps the rest."""
    profile = ROOT / "configs" / "homedepot.yaml"
    base = load_config(profile)
    assert base.data.label_bins == {"4": 2.75, "3": 2.25, "2": 1.5, "1": 1.0}
    cleared = load_config(profile, ["data.label_bins={}", "data.columns={query: q, title: t}"])
    assert cleared.data.label_bins == {} and cleared.data.columns == {"query": "q", "title": "t"}
    one = load_config(profile, ["data.columns.query=q"])
    assert one.data.columns == {**base.data.columns, "query": "q"} and one.data.label_bins == base.data.label_bins


def test_the_user_logs_profile_holds_no_example_sets_mapping():
    config = load_config(ROOT / "configs" / "user-logs.yaml")
    assert config.data.columns == {} and config.data.label_bins == {} and config.data.encoding == "utf-8"
    example = load_config(ROOT / "configs" / "homedepot.yaml")
    assert example.sft == config.sft and example.grpo == config.grpo  # the recipe is the user-logs one


def test_overrides_may_come_before_or_after_the_options():
    from taosr.stages.job_args import job_parser

    parser = job_parser(None)
    parser.add_argument("--name", default=None)
    args = parser.parse_intermixed_args(["seed=2", "--name", "sft", "eval.split=val", "--config", "configs/tiny.yaml"])
    assert args.name == "sft" and args.overrides == ["seed=2", "eval.split=val"] and args.config == "configs/tiny.yaml"


def test_verbose_asks_the_workers_to_echo_their_metrics(monkeypatch):
    import os

    from taosr.stages.job_args import job_parser

    monkeypatch.setenv("TAOSR_VERBOSE", "0")  # restored after the test
    assert job_parser(None).parse_intermixed_args(["seed=1"]).verbose is False and os.environ["TAOSR_VERBOSE"] == "0"
    assert job_parser(None).parse_intermixed_args(["--verbose", "seed=1"]).verbose is True
    assert os.environ["TAOSR_VERBOSE"] == "1"

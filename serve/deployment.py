"""The Serve config a run exports (export/serve.yaml): serve/config.yaml with the run's model, its
decision rule, and the layout and exposure of the profile's cluster."""

from __future__ import annotations

from pathlib import Path

import yaml

from taosr.config import TaosrConfig
from taosr.datasets.storage import absolute
from taosr.decision import DecisionRule
from taosr.serve.args import ServeArgs

SERVE_CONFIG = Path(__file__).resolve().parent / "config.yaml"


def serve_config(model_path: str, rule: DecisionRule, config: TaosrConfig) -> dict:
    """The repo's Serve config with this model and decision rule, for the profile's cluster.

    Each model replica gets the eval engines' layout: on a GPU profile its GPUs, the node
    resource that places it on an engine node type (``RayConfig.engine_options``) and the engine
    settings of the device (``RayConfig.vllm_options``). Exposed on a cluster
    (``serve.exposure``), the proxy listens on every interface of every node and the ingress
    requires the API keys in ``serve.api_keys_env``."""
    served = yaml.safe_load(SERVE_CONFIG.read_text())
    served["http_options"]["port"] = config.serve.port
    application = served["applications"][0]
    args = application["args"]
    args["model_path"], args["beta"] = absolute(model_path), float(rule.beta)
    args["decision"] = {key: value for key, value in rule.to_record().items() if key != "beta"}
    args.update(config.ray.vllm_options(config.eval.gpu_memory_utilization), dtype=config.model.dtype)
    gpus = config.eval.gpus_per_engine
    model = next(d for d in application["deployments"] if d["name"] == "LevelModel")
    placement = config.ray.engine_options(model["ray_actor_options"]["num_cpus"], gpus)
    if placement["resources"]:
        model["ray_actor_options"]["resources"] = placement["resources"]
    if gpus:
        model["ray_actor_options"]["num_gpus"] = float(gpus)
        args["tensor_parallel_size"] = int(config.eval.tensor_parallel_size)
    if config.serve.on_cluster(config.ray):
        served["proxy_location"] = "EveryNode"
        served["http_options"]["host"] = "0.0.0.0"
        args["api_keys_env"] = config.serve.api_keys_env
    ServeArgs.from_dict(args)  # the app would refuse them at start: refuse them while writing serve.yaml
    return served

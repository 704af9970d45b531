"""Checks a run can make before any stage spends anything: each failure is one line with its
cause and its fix, so a run that would stop late (after SFT, DPO and GRPO have had their GPU
hours) stops at once. The pipeline runs them before its first stage; ``taosr plan`` prints them.

- logs: the GenRM learns from step annotations: logs without a step_annotations column cannot
  train it;
- model: the base model's level digits must each be one token at the answer position, and its
  context must hold ``model.max_seq_len``;
- resources: every GPU engine and learner worker must fit one node type of the cluster.yaml the
  profile places work on (its ``ray.*_node_resource``), and each stage's learners the node types'
  total;
- storage: an s3:// run_dir must be writable and s3:// logs readable;
- endpoint: an endpoint on a non-loopback host must require API keys;
- weight sync: a collective sync broadcasts from the learner's device, so GPU learners (NCCL)
  need GPU engines and CPU learners (gloo) CPU engines.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from taosr.config import TaosrConfig

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = ROOT / "cluster.yaml"
LOOPBACK_HOSTS = ("localhost",)


@dataclass(frozen=True)
class Problem:
    check: str
    cause: str
    fix: str

    def line(self) -> str:
        return f"{self.check}: {self.cause}. Fix: {self.fix}"


def preflight(config: TaosrConfig, stages: list[str], cluster_yaml: str | None = None) -> list[Problem]:
    """The problems that would stop ``stages`` of this run, in the order the checks run."""
    problems = check_logs(config, stages) + check_model(config) + check_storage(config) + check_endpoint(config, stages)
    problems += check_weight_sync(config, stages)
    cluster = cluster_yaml or (str(CLUSTER_YAML) if uses_node_types(config) else None)
    if cluster:
        problems += check_resources(config, stages, cluster)
    return problems


def check_logs(config: TaosrConfig, stages: list[str]) -> list[Problem]:
    if "genrm" not in stages or config.data.source == "generate":
        return []
    from taosr.datasets.storage import unreachable

    if unreachable(config.data.source, config.data.s3_endpoint):
        return []  # check_storage says so, in one line
    from taosr.datasets.readers import log_columns

    wanted = config.data.columns.get("step_annotations", "step_annotations")
    try:
        columns = log_columns(config.data.source, config.data.format, config.data.s3_endpoint, config.data.encoding)
    except (OSError, ValueError) as error:
        return [
            Problem("logs", f"cannot read {config.data.source!r}: {error}", "point data.source at a log file or folder")
        ]
    if wanted in columns:
        return []
    return [
        Problem(
            "logs",
            f"the genrm stage learns from step annotations, and the logs have no {wanted!r} column "
            f"(columns: {', '.join(sorted(columns)[:12])})",
            "leave the GenRM out (--skip genrm and srpo.genrm=none; SRPO then rewards its steps by the outcome "
            "alone), or map the annotation column with data.columns.step_annotations=NAME",
        )
    ]


def check_model(config: TaosrConfig) -> list[Problem]:
    """The base model's tokenizer and context, where the model is on this machine (an s3:// or hub
    model is checked by the stage that loads it)."""
    name = config.model.name
    if name.startswith("s3://"):
        return []
    from taosr.datasets.embedded_models import resolve_model
    from taosr.models import EMBEDDED_MODELS, LevelTokenError, check_level_tokens

    folder = Path(name).expanduser()
    if name not in (*EMBEDDED_MODELS, "tiny") and not (folder / "config.json").is_file():
        return []  # a hub id: resolved (downloaded) on the cluster
    try:
        path = Path(resolve_model(name, config.model.cache_dir))
        from transformers import AutoTokenizer

        check_level_tokens(AutoTokenizer.from_pretrained(path))
    except LevelTokenError as error:
        return [Problem("model", f"{name}: {error}", "use a base model whose tokenizer has single-token digits 1-4")]
    except (OSError, ValueError) as error:
        return [Problem("model", f"{name} cannot be loaded: {error}", "set model.name to a readable model folder")]
    context = json.loads((path / "config.json").read_text()).get("max_position_embeddings")
    if context and context < config.model.max_seq_len:
        return [
            Problem(
                "model",
                f"model.max_seq_len {config.model.max_seq_len} is longer than {name}'s context ({context} tokens)",
                f"set model.max_seq_len to {context} or less",
            )
        ]
    return []


def check_storage(config: TaosrConfig) -> list[Problem]:
    from taosr.datasets.storage import exists, filesystem_and_path, join, unreachable, write_text

    problems = []
    for what, path in (("run_dir", config.run_dir), ("the logs", config.data.source)):
        why = unreachable(path, config.data.s3_endpoint)
        if why:
            problems.append(
                Problem(
                    "storage",
                    f"cannot reach the store of {what} {path} from this machine: {why[:200]}",
                    "run from a machine with a route to S3 (the cluster's head), or set data.s3_endpoint",
                )
            )
    if problems:
        return problems
    if config.run_dir.startswith("s3://"):
        marker = join(config.run_dir, f".taosr-preflight-{uuid.uuid4().hex[:8]}")
        try:
            write_text(marker, "preflight", config.data.s3_endpoint)
            filesystem, path = filesystem_and_path(marker, config.data.s3_endpoint)
            filesystem.delete_file(path)  # a file: remove_tree deletes folders
        except OSError as error:
            problems.append(
                Problem(
                    "storage",
                    f"cannot write run_dir {config.run_dir}: {error}",
                    "give the nodes' instance profile write access to that prefix (docs/cluster.md), or set "
                    "data.s3_endpoint",
                )
            )
    source = config.data.source
    if source.startswith("s3://"):
        try:
            readable = exists(source, config.data.s3_endpoint)
        except OSError as error:
            readable, source = False, f"{source} ({error})"
        if not readable:
            problems.append(
                Problem("storage", f"cannot read the logs at {source}", "check data.source and read access")
            )
    return problems


def check_endpoint(config: TaosrConfig, stages: list[str]) -> list[Problem]:
    """The serve.yaml the export stage will write: reachable from other machines, it must
    require API keys."""
    from taosr.decision import DecisionRule
    from taosr.serve.deployment import serve_config

    if "export" not in stages:
        return []
    deployment = serve_config("model", DecisionRule("argmax"), config)
    host = (deployment.get("http_options") or {}).get("host", "127.0.0.1")
    keys = deployment["applications"][0]["args"].get("api_keys_env")
    if is_loopback(host) or keys:
        return []
    return [
        Problem(
            "endpoint",
            f"the exported serve.yaml would serve on {host} to other machines without API keys",
            "set serve.api_keys_env to an environment variable that holds the keys on the nodes, or serve.exposure "
            "to local",
        )
    ]


def check_weight_sync(config: TaosrConfig, stages: list[str]) -> list[Problem]:
    """A collective sync's backend follows the learners (NCCL on GPU, gloo on CPU): the engines
    must sit on the same kind of device, or the group cannot form."""
    problems = []
    for stage in ("grpo", "srpo"):
        rl = getattr(config, stage)
        if stage not in stages or rl.weight_sync != "collective":
            continue
        engines_on_gpu = rl.gpus_per_engine > 0
        if rl.use_gpu != engines_on_gpu:
            learners = "GPU learners (NCCL)" if rl.use_gpu else "CPU learners (gloo)"
            engines = "GPU engines" if engines_on_gpu else "CPU engines"
            problems.append(
                Problem(
                    "weight sync",
                    f"{stage}.weight_sync=collective with {learners} and {engines}: the group's backend needs both "
                    "on one kind of device",
                    f"put {stage}'s learners and engines on the same kind of device, or set {stage}.weight_sync "
                    "to object_store",
                )
            )
    return problems


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a DNS name other than localhost: assume it is reachable


def uses_node_types(config: TaosrConfig) -> bool:
    return bool(config.ray.learner_node_resource or config.ray.engine_node_resource)


def node_types(cluster_yaml: str) -> dict[str, dict]:
    """{node type: {"resources": {...}, "max_workers": n}} of a cluster launcher config."""
    cluster = yaml.safe_load(Path(cluster_yaml).read_text())
    return {
        name: {"resources": spec.get("resources") or {}, "max_workers": int(spec.get("max_workers", 0))}
        for name, spec in (cluster.get("available_node_types") or {}).items()
    }


# The sections whose engines (per actor: gpus_per_engine units of the engine resource) and
# learners (num_workers workers of one unit each) a stage starts.
ENGINE_SECTIONS = {"cot": "cot", "sample": "sample", "eval": "eval", "grpo": "grpo", "srpo": "srpo"}
LEARNER_SECTIONS = {"sft": "sft", "dpo": "dpo", "genrm": "genrm", "grpo": "grpo", "srpo": "srpo"}


def check_resources(config: TaosrConfig, stages: list[str], cluster_yaml: str) -> list[Problem]:
    types = node_types(cluster_yaml)
    problems = []
    engine, learner = config.ray.engine_node_resource, config.ray.learner_node_resource
    for stage in stages:
        # What each actor asks Ray for, from the functions that start them.
        if engine and stage in ENGINE_SECTIONS:
            section = getattr(config, ENGINE_SECTIONS[stage])
            asked = config.ray.engine_options(section.cpus_per_engine, section.gpus_per_engine)["resources"]
            problems += _fits(stage, "engine", engine, asked.get(engine, 0.0), 1, types, cluster_yaml)
        if learner and stage in LEARNER_SECTIONS:
            section = getattr(config, LEARNER_SECTIONS[stage])
            asked = config.ray.learner_resources(section.cpus_per_worker, section.use_gpu)
            problems += _fits(
                stage, "learner", learner, asked.get(learner, 0.0), section.num_workers, types, cluster_yaml
            )
    return problems


def _fits(stage, kind, resource, per_actor, actors, types, cluster_yaml) -> list[Problem]:
    if not per_actor:
        return []
    offering = {name: t for name, t in types.items() if t["resources"].get(resource)}
    if not offering:
        return [
            Problem(
                "resources",
                f"{stage}'s {kind}s ask for {resource}, which no node type of {cluster_yaml} offers",
                f"add {resource} to a node type's resources, or set ray.{kind}_node_resource to one it offers",
            )
        ]
    largest = max(t["resources"][resource] for t in offering.values())
    if per_actor > largest:
        return [
            Problem(
                "resources",
                f"one {stage} {kind} asks for {per_actor:g} {resource} and the largest node type offers {largest:g}",
                f"lower the stage's GPUs per {kind} to {largest:g} or less, or add a larger node type",
            )
        ]
    total = sum(t["resources"][resource] * max(t["max_workers"], 1) for t in offering.values())
    if per_actor * actors > total:
        return [
            Problem(
                "resources",
                f"{stage} starts {actors} {kind}s of {per_actor:g} {resource} and the cluster holds {total:g} at most",
                f"lower {stage}.num_workers, or raise the node types' max_workers",
            )
        ]
    return []

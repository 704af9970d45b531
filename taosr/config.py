"""Typed configuration: one dataclass per concern, every field with a default and a help text.

A run's config is the dataclass defaults, merged with a YAML profile from ``configs/`` and then
with ``key.sub=value`` overrides from the command line (OmegaConf does the merging and type
checking). The resolved config is saved next to every output so a result can be traced back.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Sequence, cast

from omegaconf import DictConfig, OmegaConf

from taosr.config_sections import (  # noqa: F401 - the sections are part of this module's API
    option,
    DataConfig,
    ModelConfig,
    EvalConfig,
    CotConfig,
    LearnerConfig,
    TrainerConfig,
    SftConfig,
    SampleConfig,
    DpoConfig,
    GrpoConfig,
    SrpoConfig,
    step_reward_section,
    GenrmConfig,
    ExportConfig,
    ServeCheckConfig,
    RayConfig,
)


@dataclass
class TaosrConfig:
    run_dir: str = option("runs/tiny", "where every stage writes its artifacts (local path or s3://)")
    seed: int = option(0, "global seed")
    data: DataConfig = option(factory=DataConfig)
    model: ModelConfig = option(factory=ModelConfig)
    cot: CotConfig = option(factory=CotConfig)
    sft: SftConfig = option(factory=SftConfig)
    sample: SampleConfig = option(factory=SampleConfig)
    dpo: DpoConfig = option(factory=DpoConfig)
    grpo: GrpoConfig = option(factory=GrpoConfig)
    srpo: SrpoConfig = option(factory=SrpoConfig)
    genrm: GenrmConfig = option(factory=GenrmConfig)
    eval: EvalConfig = option(factory=EvalConfig)
    export: ExportConfig = option(factory=ExportConfig)
    serve: ServeCheckConfig = option(factory=ServeCheckConfig)
    ray: RayConfig = option(factory=RayConfig)

    def __post_init__(self):
        for section in fields(self):
            part = getattr(self, section.name)
            for name in ("gpu_memory_utilization", "genrm_gpu_memory_utilization"):
                share = getattr(part, name, None)
                if share is not None and not 0.0 < share <= 1.0:
                    raise ValueError(f"{section.name}.{name} is a share of a GPU's memory in (0, 1]; got {share}")


# Old names of renamed fields (one scheme for engine resources: ``cpus_per_engine`` and
# ``gpus_per_engine`` in every section that starts engines). Accepted with a warning for one
# release, then refused like any unknown key.
RENAMED_KEYS = {
    "eval": {"num_cpus_per_engine": "cpus_per_engine", "num_gpus_per_engine": "gpus_per_engine"},
    "sample": {"num_cpus_per_engine": "cpus_per_engine", "num_gpus_per_engine": "gpus_per_engine"},
    "cot": {"num_cpus_per_teacher": "cpus_per_engine", "num_gpus_per_teacher": "gpus_per_engine"},
    "srpo": {"genrm_cpus": "genrm_cpus_per_engine", "genrm_gpus": "genrm_gpus_per_engine"},
}


def _rename_deprecated(node, source: str):
    """``node`` (a profile or the overrides, as loaded) with old field names moved to the new."""
    import warnings

    for section, names in RENAMED_KEYS.items():
        part: Any = node.get(section) if hasattr(node, "get") else None
        if not hasattr(part, "keys"):
            continue
        for old, new in names.items():
            if old not in part:
                continue
            if new in part:
                raise ValueError(
                    f"{source}: {section}.{old} and {section}.{new} are the same field; keep {section}.{new}"
                )
            warnings.warn(
                f"{source}: {section}.{old} is deprecated; use {section}.{new} (the old name goes in the next release)",
                FutureWarning,
                stacklevel=3,
            )
            part[new] = part.pop(old)
    return node


def load_config(profile: str | Path | None = None, overrides: Sequence[str] = (), schema=TaosrConfig):
    """Defaults, then the YAML profile, then ``key.sub=value`` overrides; returns the dataclass.

    A profile may start from another with ``extends: other.yaml`` (a path relative to the
    profile), and changes only what differs. Unknown keys and wrongly typed values raise with
    the offending key named; renamed keys (``RENAMED_KEYS``) are accepted with a FutureWarning.
    """
    merged = OmegaConf.structured(schema)
    for layer in _profile_chain(Path(profile)) if profile else ():
        merged = OmegaConf.merge(merged, layer)
    bad = [item for item in overrides if "=" not in item]
    if bad:
        raise ValueError(f"overrides must look like key.sub=value; got {bad}")
    if overrides:
        merged = OmegaConf.merge(merged, _rename_deprecated(OmegaConf.from_dotlist(list(overrides)), "overrides"))
        for key, value in _whole_maps(overrides):
            OmegaConf.update(merged, key, value, merge=False)  # type-checked against the field again
    config = OmegaConf.to_object(merged)
    if isinstance(config, TaosrConfig):
        from taosr.precision import float32_instead

        float32_instead(config)  # bf16 only where the CPU computes it (ray.cpu_bfloat16)
    return config


def _whole_maps(overrides: Sequence[str]) -> list[tuple[str, object]]:
    """The overrides that give a whole map (``data.label_bins={}``, ``data.columns={query: q}``):
    those replace the profile's map instead of merging into it, so a key of the profile's map
    can be removed from the command line. A dotted key (``data.columns.query=q``) still sets
    one entry."""
    whole = []
    for item in overrides:
        key, value = item.split("=", 1)
        if value.strip().startswith("{"):
            whole.append((key, OmegaConf.select(OmegaConf.from_dotlist([item]), key)))
    return whole


def _profile_chain(path: Path, seen: tuple[Path, ...] = ()) -> list:
    """The profile and the ones it extends, base first, each loaded with old names renamed."""
    if not path.is_file():
        raise FileNotFoundError(f"config profile not found: {path}" + (f" (extended by {seen[-1]})" if seen else ""))
    if path.resolve() in seen:
        raise ValueError(f"config profiles extend each other in a cycle: {' -> '.join(map(str, (*seen, path)))}")
    node = OmegaConf.load(path)
    base = node.pop("extends", None) if isinstance(node, DictConfig) else None
    chain = _profile_chain(path.parent / str(base), (*seen, path.resolve())) if base else []
    return [*chain, _rename_deprecated(node, str(path))]


def to_dict(config) -> dict:
    return cast(dict, OmegaConf.to_container(OmegaConf.structured(config), resolve=True))


def to_yaml(config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def config_hash(config) -> str:
    """A stable hash of the resolved config (the pipeline's manifests key on it)."""
    return hashlib.sha256(json.dumps(to_dict(config), sort_keys=True).encode()).hexdigest()[:16]


def save_config(config, directory: str | Path) -> Path:
    """Write the resolved config as ``config.yaml`` into a local directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    path.write_text(to_yaml(config))
    return path


def describe(schema=TaosrConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every field, nested keys dotted: the `taosr config help` listing."""
    rows = []
    instance = schema()
    for f in fields(schema):
        value = getattr(instance, f.name)
        key = f"{prefix}{f.name}"
        if is_dataclass(value):
            rows.extend(describe(type(value), prefix=f"{key}."))
        else:
            rows.append((key, json.dumps(value), f.metadata.get("help", "")))
    return rows

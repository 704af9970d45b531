"""The stage registry: the one list of stages the pipeline runs, the eval stage scores, the export
stage picks from, and the CLI names.

Each stage module under ``ray_jobs/`` declares ``STAGE = StageSpec(...)``: its name, the config
sections and upstream stages it reads, and a uniform ``run(config) -> summary``. ``STAGE_MODULES``
lists those modules in pipeline order. A stage from outside this package (a plug-in, or a test's
toy stage) is added with ``register``; it runs right after the last stage it reads.
See docs/architecture.md, "Adding a stage".
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from functools import cache
from typing import Callable

# Pipeline order. Module names under taosr.ray_jobs, each defining STAGE.
STAGE_MODULES = ("data", "cot", "sft", "sample", "dpo", "grpo", "genrm", "srpo", "eval", "export", "serve_check")


@dataclass(frozen=True)
class StageSpec:
    name: str
    sections: tuple[str, ...] = ()  # config sections it reads besides the shared ones (seed, model, data)
    inputs: tuple[str, ...] = ()  # stages whose outputs it reads (those without a manifest are ignored)
    always_run: bool = False  # a side effect (serving check), never skipped
    reads_logs: bool = False  # reads data.source: new or changed log files make it run again
    run: Callable[..., dict] | None = None  # run(config) -> the short summary its manifest keeps
    policy_title: str = ""  # set for a stage that trains a policy: its row in the stage tables
    reads_policies: bool = False  # reads every trained policy (eval, export): they become its inputs


_registered: list[StageSpec] = []


def register(spec: StageSpec) -> None:
    """Add a stage defined outside ``taosr.ray_jobs``; it runs right after the last stage it reads."""
    if spec.run is None:
        raise ValueError(f"stage {spec.name!r} has no run(config) function")
    known = {s.name for s in stages()}
    if spec.name in known:
        raise ValueError(f"a stage named {spec.name!r} is already registered")
    unknown = sorted(set(spec.inputs) - known)
    if unknown:
        raise ValueError(f"stage {spec.name!r} reads unknown stages {unknown}; known: {', '.join(sorted(known))}")
    _registered.append(spec)


def unregister(name: str) -> None:
    _registered[:] = [spec for spec in _registered if spec.name != name]


@cache
def _builtin() -> tuple[StageSpec, ...]:
    specs = []
    for module in STAGE_MODULES:
        spec = getattr(importlib.import_module(f"taosr.ray_jobs.{module}"), "STAGE", None)
        if not isinstance(spec, StageSpec):
            raise TypeError(f"taosr.ray_jobs.{module} lists as a stage but defines no STAGE = StageSpec(...)")
        specs.append(spec)
    return tuple(specs)


def stages() -> tuple[StageSpec, ...]:
    """Every stage in pipeline order, with the trained policies added to the inputs of the
    stages that read them all."""
    ordered = list(_builtin())
    for spec in _registered:
        last_input = max((i for i, s in enumerate(ordered) if s.name in spec.inputs), default=len(ordered) - 1)
        ordered.insert(last_input + 1, spec)
    policies = tuple(spec.name for spec in ordered if spec.policy_title)
    return tuple(
        replace(spec, inputs=tuple(dict.fromkeys((*spec.inputs, *policies)))) if spec.reads_policies else spec
        for spec in ordered
    )


def stage_names() -> tuple[str, ...]:
    return tuple(spec.name for spec in stages())


def get(name: str) -> StageSpec:
    for spec in stages():
        if spec.name == name:
            return spec
    raise ValueError(f"unknown stage {name!r}; known: {', '.join(stage_names())}")


def policy_stages() -> dict[str, str]:
    """{stage: its row title} for the stages that train a policy, in pipeline order."""
    return {spec.name: spec.policy_title for spec in stages() if spec.policy_title}


def policy_stages_before(name: str) -> tuple[str, ...]:
    """The policy-training stages that run before ``name``, in pipeline order."""
    names = stage_names()
    return tuple(stage for stage in policy_stages() if names.index(stage) < names.index(name))

"""The RL loop of stages 3 (GRPO) and 4 (SRPO) on Ray (docs/architecture.md, "The RL loop on Ray").

A Ray Train ``TorchTrainer`` runs ``rl_train_loop`` on every learner rank with DeepSpeed ZeRO.
Each step:
  1. rollout (rank 0): label-balanced prompts go to the rollout actors, G samples each, with
     behaviour log-probs; difficulty-based dynamic sampling drops groups with no reward
     variance or outside the pass-rate window and refills from further prompts;
  2. reward: outcome rewards and the advantage estimator named in the config (the registry in
     ``taosr.advantages``); the batch is broadcast and sharded across ranks;
  3. train: reference log-probs from the frozen start model, the clipped-ratio loss with KL,
     one optimizer step over the whole batch (token-level aggregation across ranks);
  4. sync: the new weights go to every engine, and a fixed probe's log-probs from learner and
     engine must agree within ``sync_tolerance``, or the run stops.
Checkpoints hold the DeepSpeed state (model, optimizer, scheduler), the RNG states and the
prompt sampler's cursor; a restarted run (same run_dir) resumes from the latest one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from taosr.actors.rollout import SamplingSpec
from taosr.actors.rollout_group import EnginesRestarted, RolloutGroup, WeightSyncError
from taosr.advantages import AdvantageInputs, estimator_needs, get_estimator
from taosr.config import GrpoConfig, step_reward_section
from taosr.datasets.storage import local_dir
from taosr.dynamic_sampling import DynamicBatch, distinct_paths, lost_format_error
from taosr.formats import ResponseFormat, parse
from taosr.label_balance import BalancedSampler, label_cv
from taosr.metrics import rate
from taosr.training.loop_inputs import RlInputs
from taosr.training.checkpoints import crash_once, load_state, report_final, save_state
from taosr.training.policy_update import train_on
from taosr.stopping import Stopping
from taosr.training.trainer import BestWeights, MetricsLog, build_engine, rank_zero_says
from taosr.training.validation import first_token_validator, validates_here
from taosr.training.weight_sync import sync_engines, verify_sync
from taosr.rewards import outcome_reward
from taosr.steps import segment
from taosr.verifier import OfflineVerifier, hybrid


def micro_steps_per_step(rl: GrpoConfig, world: int) -> int:
    sequences = rl.prompts_per_step * rl.group_size
    if sequences % (world * rl.micro_batch_size):
        raise ValueError(
            f"prompts_per_step x group_size = {sequences} must divide evenly into "
            f"{world} learners x micro_batch_size {rl.micro_batch_size}"
        )
    return sequences // (world * rl.micro_batch_size)


# --------------------------------------------------------------------------- rollout (rank 0)


def prompts_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12]


def collect_batch(rl: GrpoConfig, prompts: list[dict], sampler: BalancedSampler, group: RolloutGroup) -> dict:
    """Roll out, score and filter until ``prompts_per_step`` groups with signal are in."""
    spec = SamplingSpec(
        n=rl.group_size, temperature=rl.temperature, top_p=rl.top_p, top_k=rl.top_k, max_new_tokens=rl.max_new_tokens
    )
    batch = DynamicBatch(
        rl.prompts_per_step,
        rl.min_pass_rate,
        rl.max_pass_rate,
        diverse=rl.diverse,
        min_paths=rl.min_distinct_paths,
        type_cap=rl.query_type_cap,
        label_cap=rl.label_cap,
    )
    scored_all, started, generated_tokens = [], time.time(), 0
    drawn_ids: list[str] = []
    reward_seconds = 0.0
    while not batch.full and batch.rounds < rl.max_refill_rounds:
        count = math.ceil(batch.missing * rl.oversample)
        chosen = [prompts[i] for i in sampler.take(count)]
        drawn_ids.extend(str(p["id"]) for p in chosen)
        rollouts = group.generate([p["prompt_ids"] for p in chosen], spec, timeout_s=rl.rollout_timeout_s)
        generated_tokens += sum(len(r.token_ids) for prompt_rollouts in rollouts for r in prompt_rollouts)
        scoring_started = time.time()
        groups: list[dict[str, Any]] = []
        rewards, correct = [], []
        for prompt, prompt_rollouts in zip(chosen, rollouts):
            scored = [
                outcome_reward(r.text, prompt["label"], rl.partial_credit, rl.format_gate) for r in prompt_rollouts
            ]
            scored_all.extend(scored)
            groups.append({"prompt": prompt, "rollouts": prompt_rollouts, "scored": scored})
            rewards.append([s.reward for s in scored])
            correct.append([s.correct for s in scored])
        batch.add_round(
            groups,
            rewards,
            correct,
            paths=[distinct_paths([r.text for r in g["rollouts"]]) for g in groups] if rl.diverse else None,
            query_types=[g["prompt"]["query_type"] for g in groups],
            labels=[g["prompt"]["label"] for g in groups],
        )
        reward_seconds += time.time() - scoring_started
    stats = batch.stats()
    stats.update(
        prompt_cursor=sum(sampler.drawn.values()),
        prompts_requested=len(drawn_ids),
        generated_tokens=generated_tokens,
        # which prompts this step drew, in order: a resumed run must draw exactly what an
        # uninterrupted one would (tests compare it with a fresh sampler's stream)
        prompts_digest=prompts_digest(drawn_ids),
        reward_mean=float(np.mean([s.reward for s in scored_all])),
        accuracy=float(np.mean([s.correct for s in scored_all])),
        format_error_rate=float(np.mean([not s.format_ok for s in scored_all])),
        hallucination_rate=rate(s.hallucinated for s in scored_all)["rate"],
        batch_label_cv=label_cv([g["prompt"]["label"] for g in batch.groups]),
        response_length=float(np.mean([len(r.token_ids) for g in batch.groups for r in g["rollouts"]]))
        if batch.groups
        else 0.0,
    )
    return {
        "groups": batch.groups,
        "stats": stats,
        "rollout_s": time.time() - started - reward_seconds,
        "reward_s": reward_seconds,
    }


def step_reward_inputs(rl: GrpoConfig, groups: list[dict], context: dict) -> tuple[dict, dict]:
    """Step spans and hybrid step rewards for the ``srpo`` estimator: the offline verifier where
    it has an annotation, the generative stepwise reward model (one batched call per step, for
    every step of a parseable response the verifier cannot judge) elsewhere, when one is given."""
    import ray
    import torch

    rl_steps = step_reward_section(rl)
    tokenizer, verifier, judge = context["tokenizer"], context["verifier"], context.get("genrm")
    spans, verified, requests = [], [], {}
    for group in groups:
        for rollout in group["rollouts"]:
            spans.append(segment(tokenizer, rollout.text, rollout.token_ids))
            reasoning = parse(ResponseFormat.POST_COT, rollout.text).reasoning
            judged = verifier.step_rewards(group["prompt"]["annotation_key"], reasoning)
            verified.append(judged)
            unjudged = [step + 1 for step, value in enumerate(judged) if math.isnan(value)]
            if judge is not None and reasoning is not None and unjudged:
                requests[len(verified) - 1] = {
                    "query": group["prompt"]["query"],
                    "item_text": group["prompt"]["item_text"],
                    "step_lines": reasoning.step_lines(),
                    "steps": unjudged,
                }
    started, generative = time.time(), {}
    if requests:  # only where a judge was given
        assert judge is not None
        scored = ray.get(judge.step_rewards.remote(list(requests.values())), timeout=rl_steps.genrm_timeout_s)
        generative = dict(zip(requests, scored))
    sources = {"verifier": 0, "genrm": 0, "none": 0}
    step_rewards: list[list[float]] = []
    genrm_values: list[float] = []
    for index, judged in enumerate(verified):
        combined, where = hybrid(judged, generative.get(index))
        for source in where:
            sources[source] += 1
        genrm_values.extend(v for v, s in zip(combined, where) if s == "genrm")
        step_rewards.append(combined)
    ends = np.cumsum([len(g["rollouts"]) for g in groups]).tolist()
    per_group = [step_rewards[end - len(g["rollouts"]) : end] for g, end in zip(groups, ends)]
    total = max(sum(sources.values()), 1)
    extras = {
        "step_rewards": torch.tensor(per_group),
        "step_spans": spans,
        "lam": rl_steps.lam,
        "critical_weight": rl_steps.critical_weight,
    }
    metrics: dict[str, float | None] = {f"step_reward_from_{k}": v / total for k, v in sources.items()}
    metrics.update(
        genrm_s=time.time() - started,
        genrm_questions=sum(len(r["steps"]) for r in requests.values()),
        genrm_yes_mean=float(np.mean(genrm_values)) if genrm_values else None,
    )
    return extras, metrics


# What gathers each input an estimator declares in its registration (``register(needs=...)``
# in taosr.advantages): the estimators stay free of Ray, the loop knows how to fetch.
INPUT_PROVIDERS = {"step_rewards": step_reward_inputs}


def advantage_rows(rl: GrpoConfig, groups: list[dict], context: dict) -> tuple[list[dict], dict]:
    """Per-rollout training rows with per-token advantages from the configured estimator."""
    import torch

    rollouts = [r for g in groups for r in g["rollouts"]]
    width = max(len(r.token_ids) for r in rollouts)
    mask = torch.zeros(len(rollouts), width)
    for i, r in enumerate(rollouts):
        mask[i, : len(r.token_ids)] = 1.0
    rewards = torch.tensor([[s.reward for s in g["scored"]] for g in groups])
    extras, input_metrics = {}, {}
    for need in estimator_needs(rl.advantage):
        more, more_metrics = INPUT_PROVIDERS[need](rl, groups, context)
        extras.update(more)
        input_metrics.update(more_metrics)
    advantages, metrics = get_estimator(rl.advantage)(AdvantageInputs(rewards, mask, extras=extras))
    metrics.update(input_metrics)
    rows = []
    for i, (group_index, r) in enumerate((gi, r) for gi, g in enumerate(groups) for r in g["rollouts"]):
        rows.append(
            {
                "prompt_ids": groups[group_index]["prompt"]["prompt_ids"],
                "response_ids": r.token_ids,
                "old_logprobs": r.logprobs,
                "advantages": advantages[i, : len(r.token_ids)].tolist(),
                "weight": 1.0,
            }
        )
    return rows, metrics


def pad_to(rows: list[dict], count: int) -> list[dict]:
    """Fill a short batch with zero-weight copies so every rank runs the same micro-steps."""
    filler = [{**rows[i % len(rows)], "weight": 0.0} for i in range(count - len(rows))]
    return rows + filler


# --------------------------------------------------------------------------- the loop


@dataclass
class Learner:
    """What every rank trains with: the DeepSpeed engine, its scheduler, the frozen reference
    (None without a KL term), the tokenizer and the micro-steps per optimizer step."""

    engine: Any
    scheduler: Any
    reference: Any
    tokenizer: Any
    gas: int


def seed_everything(seed: int, threads: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


def start_learner(inputs: RlInputs, rl: GrpoConfig, world: int) -> Learner:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gas = micro_steps_per_step(rl, world)
    tokenizer = AutoTokenizer.from_pretrained(local_dir(inputs.model_path))
    engine, scheduler = build_engine(inputs.model_path, rl, rl.steps, grad_accum=gas)
    reference = None
    if rl.kl_coef > 0:
        dtype = torch.bfloat16 if rl.bf16 else torch.float32
        reference = AutoModelForCausalLM.from_pretrained(
            local_dir(inputs.model_path), dtype=dtype, attn_implementation=rl.attn_implementation
        ).eval()
        reference.requires_grad_(False)
    return Learner(engine, scheduler, reference, tokenizer, gas)


@dataclass
class RolloutSide:
    """Rank 0's half of the loop: the prompts, the label-balanced sampler, the rollout actors and
    what the rewards need (the tokenizer, the offline verifier, the GenRM actor)."""

    rl: GrpoConfig
    prompts: list[dict]
    sampler: BalancedSampler
    group: RolloutGroup
    context: dict
    killed_engine: bool = False  # the kill_engine_before_step fault fires once

    @classmethod
    def start(cls, inputs: RlInputs, rl: GrpoConfig, tokenizer, resumed: dict) -> "RolloutSide":
        import ray

        prompts = ray.get(inputs.prompts_ref)
        sampler = BalancedSampler([p["label"] for p in prompts], rl.label_cv, inputs.seed)
        if resumed:
            sampler.load_state_dict(resumed["sampler"])
        context = {
            "tokenizer": tokenizer,
            "genrm": inputs.genrm,
            "verifier": OfflineVerifier(ray.get(inputs.annotations_ref)),
        }
        group = RolloutGroup(
            inputs.engines,
            sync=rl.weight_sync,
            workers_per_engine=rl.tensor_parallel_size,
            backend="nccl" if rl.use_gpu else "gloo",
        )
        return cls(rl, prompts, sampler, group, context)

    def next_batch(self, step: int) -> dict:
        """Roll out, score and filter one step's groups; their training rows and statistics, or
        ``{"resync": why}`` when a restarted engine needs the weights over a fresh group first
        (the prompts drawn for the interrupted round are spent)."""
        import ray

        if step == self.rl.faults.kill_engine_before_step and not self.killed_engine:
            ray.kill(self.group.engines[0], no_restart=False)  # testing only: Ray restarts it
            self.killed_engine = True
        try:
            collected = collect_batch(self.rl, self.prompts, self.sampler, self.group)
        except EnginesRestarted as restarted:
            return {"resync": str(restarted)}
        rows, advantage_metrics = (
            advantage_rows(self.rl, collected["groups"], self.context) if collected["groups"] else ([], {})
        )
        return {
            "rows": rows,
            "stats": {**collected["stats"], **advantage_metrics, "engine_recoveries": self.group.recoveries},
            "rollout_s": collected["rollout_s"],
            "reward_s": collected["reward_s"],
        }


def learn(learner: Learner, rl: GrpoConfig, rows: list[dict], rank: int, world: int) -> dict:
    """One optimizer step on this rank's share of the batch; metrics reduced over the ranks."""
    import torch
    import torch.distributed as dist

    if not rows:
        return {}
    rows = pad_to(rows, rl.prompts_per_step * rl.group_size)
    global_tokens = float(sum(len(r["response_ids"]) * r["weight"] for r in rows))
    per_rank = rl.prompts_per_step * rl.group_size // world
    mine = rows[rank * per_rank : (rank + 1) * per_rank]
    trained = train_on(learner.engine, learner.reference, rl, mine, global_tokens, world, learner.gas)
    reduced = torch.tensor([trained[k] for k in sorted(trained)], dtype=torch.float64)
    dist.all_reduce(reduced)
    trained = {k: float(v) for k, v in zip(sorted(trained), reduced)}
    trained["loss"] /= world * learner.gas
    trained["trained_tokens"] = global_tokens
    return trained


class Alarms:
    """What the loop watches between steps: steps that kept no group (stop when the start model
    has lost the format, else warn), and policy entropy collapsing against its first value."""

    def __init__(self, rl: GrpoConfig, stage: str, rank: int):
        self.rl, self.stage, self.rank = rl, stage, rank
        self.stalled = 0
        self.first_entropy: float | None = None

    def _say(self, message: dict) -> None:
        if self.rank == 0:
            logging.getLogger(f"taosr.{self.stage}").warning(json.dumps(message))

    def check(self, step: int, metrics: dict) -> dict:
        """The alarm fields for this step's metrics; raises when the run cannot make progress
        (every rank saw the same broadcast statistics, so all stop together)."""
        self.stalled = self.stalled + 1 if metrics["skipped_update"] else 0
        alarms = {"stall_alarm": self.stalled >= self.rl.stall_alarm_steps}
        lost_format = lost_format_error(self.stage, step, self.stalled, metrics.get("format_error_rate", 0.0), self.rl)
        if lost_format:
            raise RuntimeError(lost_format)
        if alarms["stall_alarm"]:
            self._say(
                {
                    "step": step,
                    "alarm": f"dynamic sampling kept no group for {self.stalled} steps",
                    "hint": "every group is all-right or all-wrong: widen the pass-rate window "
                    "or the prompt pre-filter, or raise group_size or temperature",
                }
            )
        if metrics.get("entropy"):
            first = self.first_entropy = self.first_entropy or metrics["entropy"]
            alarms["entropy_alarm"] = metrics["entropy"] < self.rl.entropy_alarm_ratio * first
            if alarms["entropy_alarm"]:
                self._say(
                    {
                        "step": step,
                        "alarm": "policy entropy collapsing",
                        "entropy": metrics["entropy"],
                        "first_entropy": self.first_entropy,
                    }
                )
        return alarms


class PolicyChecks:
    """Validation while the policy trains (rank 0 scores; every rank learns whether to stop): the
    first-token metrics of ``taosr.training.validation`` at step 0 and every ``eval_every_steps``,
    the best step's weights kept (``keep_best``; step 0 is the start model) and the stage stopped
    after ``patience`` checks without a gain (``taosr.stopping``)."""

    def __init__(self, rl: GrpoConfig, validation: dict | None, rank: int):
        self.rl, self.rank = rl, rank
        self.validate = first_token_validator(validation) if validation and rl.eval_every_steps else None
        self.validates_here = validates_here(rank, rl.zero_stage)
        # Under ZeRO-3 rank 0 does not hold whole weights to copy; the last step is saved there.
        self.best = BestWeights(enabled=rank == 0 and self.validate is not None and rl.keep_best and rl.zero_stage != 3)
        self.stopping = Stopping(
            patience=rl.patience if self.validate else 0, min_delta=rl.min_delta, max_seconds=60 * rl.max_minutes
        )
        self.started = time.time()

    def due(self, step: int) -> bool:
        return self.validate is not None and (step % self.rl.eval_every_steps == 0 or step == self.rl.steps)

    def check(self, step: int, module, device, world: int) -> tuple[dict, bool]:
        """This step's validation metrics (rank 0; empty elsewhere) and whether to stop (every rank)."""
        import torch

        metrics: dict[str, Any] = {}
        stop = False
        if self.validates_here and self.validate is not None:
            with torch.no_grad():
                checked = self.validate(module)
        if self.rank == 0 and self.validate is not None:
            metrics = {f"val_{k}": v for k, v in checked.items() if isinstance(v, (int, float))}
            metrics["val_predicted_levels"] = checked.get("predicted_levels")
            self.best.offer(step, checked.get("macro_f1"), module)
            stop = self.stopping.validated(step, checked.get("macro_f1"))
            metrics["val_best_step"] = self.best.step
        if world > 1:
            stop = rank_zero_says(stop, device)
        return metrics, stop

    def out_of_time(self, device, world: int) -> bool:
        """Whether the loop has run past ``max_minutes`` (rank 0's clock, told to every rank)."""
        if not self.stopping.max_seconds:
            return False
        late = self.rank == 0 and self.stopping.out_of_time(time.time() - self.started)
        return rank_zero_says(late, device) if world > 1 else late

    def finish(self, step: int, module, stopped: bool) -> dict:
        """The summary's stopping fields, with the best step's weights put back into ``module``."""
        final = {"stop_reason": self.stopping.finished(step, self.rl.steps), "stopped_early": int(stopped)}
        if self.best.restore(module):
            final.update({"saved_step": self.best.step, **{f"saved_val_{k}": v for k, v in self.best.metrics.items()}})
        return final


def shared_batch(
    rollouts: RolloutSide | None,
    learner: Learner,
    rl: GrpoConfig,
    inputs: RlInputs,
    step: int,
    probe: dict,
    syncs_here: bool,
    attempts: int = 3,
) -> dict:
    """Rank 0's batch for this step, broadcast to every rank. When an engine restarted under the
    collective sync, every rank that syncs sends the current weights again first (a fresh group)."""
    import torch.distributed as dist

    for _ in range(attempts):
        payload: list = [rollouts.next_batch(step) if rollouts is not None else None]
        dist.broadcast_object_list(payload, src=0)
        if "resync" not in payload[0]:
            return payload[0]
        if syncs_here:
            version = rollouts.group.version if rollouts is not None else step - 1
            sync_engines(learner.engine.module, rollouts.group if rollouts else None, rl, inputs, version, probe)
    raise WeightSyncError(f"step {step}: engines kept restarting ({payload[0]['resync']}) after {attempts} syncs")


def rl_train_loop(loop_config: dict) -> None:
    """Runs on every learner rank: set up (or resume), then for each step roll out on rank 0,
    broadcast, learn on every rank, sync the engines, watch for alarms, log and checkpoint."""
    import ray.train
    import torch.distributed as dist

    inputs: RlInputs = loop_config["inputs"]
    rl, stage = inputs.rl, inputs.stage
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    seed_everything(inputs.seed + rank, int(rl.cpus_per_worker))
    learner = start_learner(inputs, rl, world)
    resumed = load_state(learner.engine)
    if resumed.get("final"):
        report_final(learner.engine, learner.tokenizer, inputs, rank, resumed["metrics"])  # finished before the stop
        return
    start_step = resumed.get("step", 0)
    rollouts = RolloutSide.start(inputs, rl, learner.tokenizer, resumed) if rank == 0 else None
    log = MetricsLog(
        stage,
        inputs.log_dir,
        enabled=rank == 0,
        resume_after_step=start_step,
        s3_endpoint=inputs.s3_endpoint,
        echo=inputs.echo_metrics,
    )
    probe = inputs.probe
    group = rollouts.group if rollouts is not None else None
    # Who takes part in a sync: rank 0 sends; under ZeRO-3 every rank gathers each bucket with it.
    syncs_here = rank == 0 or rl.zero_stage == 3
    gap: float | None = None
    if syncs_here:  # engines must hold the learner's weights before the first rollout
        if start_step:
            gap = sync_engines(learner.engine.module, group, rl, inputs, start_step, probe).get("sync_gap")
        else:
            gap = verify_sync(learner.engine.module, group, probe, rl)
        if rank == 0:
            print(json.dumps({stage: {"start_step": start_step, "sync_gap": gap}}), flush=True)

    alarms, metrics = Alarms(rl, stage, rank), {}
    checks, device, stopped = PolicyChecks(rl, inputs.validation, rank), learner.engine.device, False
    if checks.validate is not None and not start_step:  # the start model: what the stage must beat
        start_metrics, _ = checks.check(0, learner.engine.module, device, world)
        log.log(0, {"step": 0, **start_metrics})
    step = start_step
    step_clock = time.time()  # step_s: wall time between consecutive steps' ends, as a user waits it
    for step in range(start_step + 1, rl.steps + 1):
        batch = shared_batch(rollouts, learner, rl, inputs, step, probe, syncs_here)
        train_started = time.time()
        trained = learn(learner, rl, batch["rows"], rank, world)
        train_s = time.time() - train_started
        sync_started = time.time()
        synced = (
            sync_engines(learner.engine.module, group, rl, inputs, step, probe) if syncs_here and batch["rows"] else {}
        )
        gap = synced.get("sync_gap")
        dist.barrier()
        now = time.time()
        step_s, step_clock = now - step_clock, now
        metrics = {
            "step": step,
            "step_s": step_s,
            **batch["stats"],
            **trained,
            "lr": learner.scheduler.get_last_lr()[0],
            "sync_gap": gap,
            **{k: v for k, v in synced.items() if k != "sync_gap"},
            "rollout_s": batch["rollout_s"],
            "reward_s": batch["reward_s"],
            "train_s": train_s,
            "sync_s": time.time() - sync_started,
            "skipped_update": not batch["rows"],
        }
        metrics.update(alarms.check(step, metrics))
        if checks.due(step):
            validated, stopped = checks.check(step, learner.engine.module, device, world)
            metrics.update(validated)
        stopped = checks.out_of_time(device, world) or stopped
        if step % rl.log_every_steps == 0 or step == rl.steps or checks.due(step) or stopped:
            log.log(step, metrics)
        if stopped:
            break
        if step % rl.checkpoint_every_steps == 0 and step < rl.steps:
            save_state(
                learner.engine,
                rank,
                {"step": step, "sampler": rollouts.sampler.state_dict() if rollouts else None},
                metrics,
            )
            log.sync()
        if step == rl.faults.crash_after_step:
            crash_once(inputs.log_dir, step)
    final = {k: v for k, v in metrics.items() if k != "val_predicted_levels"}
    final.update(step=step, **checks.finish(step, learner.engine.module, stopped))
    report_final(learner.engine, learner.tokenizer, inputs, rank, final)
    log.close()

"""What the supervised Ray Train + DeepSpeed stages share (SFT and DPO): the DeepSpeed engine,
the step loop over a streamed dataset shard, metric logging, and turning the final checkpoint
into a Hugging Face folder (the checkpoints themselves: ``checkpoints``).

A stage supplies only its loss: ``loss_fn(engine, batch_rows) -> (loss, metrics, tokens)``.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Callable

from taosr.datasets.storage import absolute, copy_tree, exists, join, local_dir
from taosr.training.checkpoints import load_state, report_final, save_state
from taosr.training.progress import StageProgress
from taosr.training.validation import validates_here
from taosr.sft_examples import IGNORE_INDEX
from taosr.stopping import Stopping

if TYPE_CHECKING:  # the GPU smoke script imports this module without omegaconf or Ray
    from taosr.config import LearnerConfig, RayConfig, TrainerConfig
    from taosr.training.loop_inputs import LoopInputs, SupervisedInputs

PHASES = ("data", "forward", "backward", "update")  # a micro-step's timed parts, summed per optimizer step
PHASE_KEYS = tuple(f"{phase}_s" for phase in PHASES)


def deepspeed_config(cfg: LearnerConfig, grad_accum: int) -> dict:
    if cfg.autocast and cfg.bf16:
        raise ValueError("autocast keeps float32 weights: set bf16 to false with it")
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": cfg.bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def total_optimizer_steps(cfg: TrainerConfig, num_examples: int, world: int) -> tuple[int, int]:
    """(micro-steps per epoch per rank, optimizer steps in the run)."""
    micro_steps_per_epoch = num_examples // (world * cfg.micro_batch_size)
    total = max(1, cfg.epochs * micro_steps_per_epoch // cfg.grad_accum)
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    return micro_steps_per_epoch, total


def lr_scheduler(optimizer, cfg: LearnerConfig, total_steps: int):
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak, over every remaining step
    (``lr_schedule: cosine``, the warm-up from 0) or over the last ``decay_ratio`` of the steps
    after a stable peak (``wsd``, transformers' warm-up from ``min_lr_ratio`` of the peak)."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup, get_wsd_schedule

    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    if cfg.lr_schedule == "cosine":
        return get_cosine_with_min_lr_schedule_with_warmup(optimizer, warmup, total_steps, min_lr_rate=cfg.min_lr_ratio)
    decay = min(max(1, round(cfg.decay_ratio * total_steps)), total_steps - warmup)
    return get_wsd_schedule(
        optimizer, warmup, decay, num_stable_steps=total_steps - warmup - decay, min_lr_ratio=cfg.min_lr_ratio
    )


def build_engine(model_path: str, cfg: LearnerConfig, total_steps: int, grad_accum: int = 1):
    """fp32 master weights in a DeepSpeed engine with client AdamW and the configured lr schedule;
    ``grad_accum`` micro-batches make one optimizer step."""
    import deepspeed
    import torch
    from transformers import AutoModelForCausalLM

    # float32 here, bf16 in the engine: DeepSpeed's bf16 mode keeps these float32 copies as the
    # optimizer's master weights. Updating bf16 weights directly would round most small AdamW
    # steps away (a bf16 weight has 8 bits of mantissa).
    model = AutoModelForCausalLM.from_pretrained(
        local_dir(model_path), dtype=torch.float32, attn_implementation=cfg.attn_implementation
    )
    model.config.use_cache = False
    trainable = train_top_layers(model, cfg.train_layers)
    if cfg.gradient_checkpointing:
        # Non-reentrant: the frozen blocks below train_layers pass no grad-requiring input to the
        # first trained block, which the reentrant variant would silently not backpropagate through.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    scheduler = lr_scheduler(optimizer, cfg, total_steps)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(cfg, grad_accum),
        dist_init_required=False,
    )
    return engine, scheduler


def autocast(cfg: LearnerConfig):
    """bfloat16 matmuls over float32 weights and gradients (``autocast``), or nothing: DeepSpeed's
    own bf16 mode (``bf16``) or plain float32."""
    import torch

    device = "cuda" if cfg.use_gpu else "cpu"
    return torch.autocast(device, dtype=torch.bfloat16, enabled=cfg.autocast)


def train_top_layers(model, count: int) -> list:
    """The parameters to train: all of them (``count`` 0), or only the top ``count`` decoder
    blocks and the final norm, the rest frozen. Frozen blocks below the trained ones need no
    backward pass, so a step costs far less, and the optimizer holds fewer states."""
    if count <= 0:
        return list(model.parameters())
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if layers is None or count > len(layers):
        raise ValueError(
            f"train_layers={count}: the model has {len(layers) if layers is not None else 'no'} decoder layers"
        )
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    kept = [*layers[len(layers) - count :], getattr(decoder, "norm", None)]
    trainable = [p for module in kept if module is not None for p in module.parameters()]
    for parameter in trainable:
        parameter.requires_grad_(True)
    return trainable


class MetricsLog:
    """Rank 0 only: one JSON line per logged step to metrics.jsonl (the driver's progress bar
    follows it) and TensorBoard; with ``echo`` (``--verbose``) to stdout as well.

    An s3:// folder is mirrored: the worker writes a local copy (seeded from what an earlier
    attempt left on S3) and ``sync`` uploads it, at every checkpoint and at the end."""

    def __init__(
        self,
        stage: str,
        folder: str | None,
        enabled: bool,
        resume_after_step: int = 0,
        s3_endpoint: str = "",
        echo: bool = True,
    ):
        self.stage, self.enabled, self.writer, self.file, self.echo = stage, enabled, None, None, echo
        self.remote, self.s3_endpoint = None, s3_endpoint
        if enabled and folder:
            from torch.utils.tensorboard import SummaryWriter

            if folder.startswith("s3://"):
                self.remote, folder = folder, tempfile.mkdtemp(prefix=f"taosr-{stage}-logs-")
                if exists(join(self.remote, "metrics.jsonl"), s3_endpoint):
                    copy_tree(self.remote, folder, s3_endpoint)
            self.folder = folder
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, "metrics.jsonl")
            _keep_lines_up_to(path, resume_after_step)
            self.writer = SummaryWriter(os.path.join(folder, "tensorboard"), purge_step=resume_after_step + 1)
            self.file = open(path, "a")

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        rounded = {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}
        if self.echo:
            print(json.dumps({self.stage: rounded}), flush=True)
        if self.file:
            self.file.write(json.dumps(rounded) + "\n")
            self.file.flush()
        if self.writer:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(f"{self.stage}/{key}", value, step)

    def sync(self) -> None:
        """Upload the local mirror of an s3:// log folder (nothing for a local one)."""
        if self.remote:
            if self.writer:
                self.writer.flush()
            copy_tree(self.folder, self.remote, self.s3_endpoint)

    def close(self) -> None:
        if self.writer:
            self.writer.close()
        if self.file:
            self.file.close()
        self.sync()


def _keep_lines_up_to(path: str, step: int) -> None:
    """A run resumed after ``step`` redoes the steps after it: drop their old lines (all, when
    starting afresh), so each step is logged once."""
    if not os.path.exists(path):
        return
    with open(path) as handle:
        kept = [line for line in handle if line.strip() and json.loads(line).get("step", 0) <= step]
    with open(path, "w") as handle:
        handle.writelines(kept)


@dataclass(frozen=True)
class CheckPolicy:
    """When a supervised stage validates while it trains, keeps its best step and stops early: the
    fields of its section that carry these names (SFT's); a section without them never validates."""

    eval_every_steps: int = 0
    keep_best: bool = False
    patience: int = 0
    min_delta: float = 0.0
    max_minutes: float = 0.0

    @classmethod
    def of(cls, section) -> "CheckPolicy":
        return cls(**{f.name: getattr(section, f.name) for f in fields(cls) if hasattr(section, f.name)})


def run_training(inputs: SupervisedInputs, stage: str, loss_fn: Callable, validate: Callable | None = None) -> None:
    """The body of a Ray Train ``train_func``: every rank runs the same number of micro-steps
    (uneven shards would otherwise hang the collectives), logs on rank 0, and saves a resumable
    checkpoint every ``checkpoint_every_steps``. A run restarted on the same storage (a failed
    worker, or the pipeline killed and rerun) continues after the last checkpointed step: the
    micro-batches already consumed in that epoch are skipped, so no step is repeated: each
    epoch's order is a seeded shuffle of the shard (``shuffle``), the same on every attempt.

    ``validate(module) -> metrics`` (rank 0, every ``eval_every_steps``) scores the model while
    it trains; with ``keep_best`` the saved model is the step whose ``macro_f1`` was best. The
    stage stops before its step budget when ``patience`` checks in a row bring no gain over the
    best, or past ``max_minutes`` of training (``taosr.stopping``); ``stop_reason`` says which."""
    import ray.train
    import torch
    from transformers import AutoTokenizer

    cfg, checks = inputs.trainer, CheckPolicy.of(inputs.trainer)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(inputs.seed + rank)
    torch.set_num_threads(int(cfg.cpus_per_worker))
    tokenizer = AutoTokenizer.from_pretrained(local_dir(inputs.model_path))
    micro_steps_per_epoch, total_steps = total_optimizer_steps(cfg, inputs.num_examples, world)
    engine, scheduler = build_engine(inputs.model_path, cfg, total_steps, cfg.grad_accum)
    resumed = load_state(engine)
    if resumed.get("final"):
        report_final(engine, tokenizer, inputs, rank, resumed["metrics"])  # finished before the stop
        return
    step, start_epoch, skip = resumed.get("step", 0), resumed.get("epoch", 0), resumed.get("next_micro_step", 0)
    log = MetricsLog(
        stage,
        inputs.log_dir,
        enabled=rank == 0,
        resume_after_step=step,
        s3_endpoint=inputs.s3_endpoint,
        echo=inputs.echo_metrics,
    )
    if step and rank == 0:
        print(
            json.dumps({stage: {"resumed_after_step": step, "epoch": start_epoch, "next_micro_step": skip}}), flush=True
        )
    shard = ray.train.get_dataset_shard("train")
    per_step = world * cfg.micro_batch_size * cfg.grad_accum
    tokens, started = 0, time.time()
    phase_totals = dict.fromkeys(PHASE_KEYS, 0.0)  # this attempt's seconds in each part of a step
    window: list[dict] = []  # the micro-steps of the current optimizer step
    metrics: dict = resumed.get("metrics", {})
    # Under ZeRO-3 rank 0 does not hold whole weights to copy; the last step is saved there.
    best = BestWeights(enabled=rank == 0 and validate is not None and checks.keep_best and cfg.zero_stage != 3)
    every = checks.eval_every_steps if validate is not None else 0
    stopping = Stopping(
        patience=checks.patience if every else 0, min_delta=checks.min_delta, max_seconds=60 * checks.max_minutes
    )
    stopped = False
    for epoch in range(start_epoch, cfg.epochs):
        shuffled = (
            {
                "local_shuffle_buffer_size": cfg.shuffle_buffer,
                "local_shuffle_seed": inputs.seed * 1000 + epoch * 10 + rank,
            }
            if cfg.shuffle
            else {}
        )
        group = max(1, cfg.length_group)
        batches = shard.iter_batches(
            batch_size=cfg.micro_batch_size * group, batch_format="pyarrow", drop_last=group == 1, **shuffled
        )
        micro_batches = stratified_micro_batches(batches, cfg.micro_batch_size, random.Random(inputs.seed + epoch))
        waited = time.perf_counter()
        for micro_step, rows in enumerate(micro_batches):
            if micro_step >= micro_steps_per_epoch or step >= total_steps:
                break
            if epoch == start_epoch and micro_step < skip:
                continue  # consumed before the checkpoint this run resumed from
            # Where a step's time goes, logged with it: the rows' wait, forward, backward, update.
            clock = [waited, time.perf_counter()]
            with autocast(cfg):
                loss, micro_metrics, micro_tokens = loss_fn(engine, rows)
            clock.append(time.perf_counter())
            engine.backward(loss)
            clock.append(time.perf_counter())
            engine.step()
            clock.append(time.perf_counter())
            tokens += micro_tokens
            timed = {f"{phase}_s": b - a for phase, a, b in zip(PHASES, clock, clock[1:])}
            phase_totals = {k: phase_totals[k] + timed[k] for k in PHASE_KEYS}
            window.append({"loss": float(loss.detach()), **{k: float(v) for k, v in micro_metrics.items()}, **timed})
            waited = time.perf_counter()
            if not engine.is_gradient_accumulation_boundary():
                continue
            step += 1
            elapsed = max(time.time() - started, 1e-9)
            done = step - resumed.get("step", 0)  # steps of this attempt: what the rates are over
            metrics = {
                "step": step,
                "total_steps": total_steps,
                "epoch": epoch,
                **{k: sum(m[k] for m in window) / len(window) for k in window[0] if k not in PHASE_KEYS},
                **{k: sum(m[k] for m in window) for k in PHASE_KEYS},
                "lr": scheduler.get_last_lr()[0],
                "examples": step * per_step,
                "tokens_per_s": tokens * world / elapsed,
                "examples_per_s": done * per_step / elapsed,
                "eta_s": round((total_steps - step) * elapsed / max(done, 1)),
            }
            window = []
            validating = bool(every) and (step % every == 0 or step == total_steps)
            stop = False
            if validating and validate is not None and validates_here(rank, cfg.zero_stage):
                with autocast(cfg):
                    checked = validate(engine.module)
            if rank == 0 and validating and validate is not None:
                metrics.update({f"val_{k}": v for k, v in checked.items() if isinstance(v, (int, float))})
                best.offer(step, checked.get("macro_f1"), engine.module)
                stop = stopping.validated(step, checked.get("macro_f1"))
                metrics["val_best_step"] = best.step
                log.log(step, {**metrics, "val_predicted_levels": checked.get("predicted_levels")})
            elif step % cfg.log_every_steps == 0 or step == 1 or step == total_steps:
                log.log(step, metrics)
            if stopping.max_seconds and rank == 0:
                stop = stop or stopping.out_of_time(time.time() - started)
            if world > 1 and (validating or stopping.max_seconds):
                stop = rank_zero_says(stop, engine.device)  # every rank must leave the loop at the same step
            if stop:
                stopped = True
                break
            if step % cfg.checkpoint_every_steps == 0 and step < total_steps:
                save_state(engine, rank, {"step": step, "epoch": epoch, "next_micro_step": micro_step + 1}, metrics)
                log.sync()
            waited = time.perf_counter()  # validation and checkpoints are not the rows' wait
        if stopped or step >= total_steps:
            break
    final = {
        **metrics,
        "step": step,
        "tokens_per_s": tokens * world / max(time.time() - started, 1e-9),
        "train_seconds": time.time() - started,
        "resumed_after_step": resumed.get("step", 0),
        **{f"total_{k}": v for k, v in phase_totals.items()},
        "stop_reason": stopping.finished(step, total_steps),
        "stopped_early": int(stopped),
    }
    if best.restore(engine.module):
        final.update({"saved_step": best.step, **{f"saved_val_{k}": v for k, v in best.metrics.items()}})
    report_final(engine, tokenizer, inputs, rank, final)
    log.close()


def stratified_micro_batches(batches, micro_batch_size: int, rng: random.Random):
    """Micro-batches (lists of rows) from larger shuffled batches, each with the batch's mix of
    levels. The rows that train a whole response (reasoning) are put apart from those that train
    their decision alone, so a level token's prompt is not padded to a reasoning row three times
    its length; within each group the rows are dealt out by level, round robin, so every
    micro-batch holds the group's label mix. Both keep the level token's bias still: where a
    micro-batch's mix follows something else (length-sorted micro-batches held one level each
    where length follows the label) or drifts by chance (a 16-row draw from 50/40/7/3 often
    holds 11 of one level), each step pushes the bias its own way, and the model's answers jump
    from one constant to another instead of it learning from the input
    (tests/test_learns_the_decision.py). A group's rows that do not fill a micro-batch (a seeded
    draw) are pooled; a batch of exactly one micro-batch passes through unchanged. A last part
    shorter than a micro-batch is dropped, as ``drop_last`` would: every rank then runs
    ``shard rows // micro_batch_size`` micro-steps."""
    for batch in batches:
        rows = batch.to_pylist()
        if len(rows) <= micro_batch_size:
            if len(rows) == micro_batch_size:
                yield rows
            continue
        chunks, spare = [], []
        for whole_response in (False, True):
            group = [row for row in rows if trains_whole_response(row) == whole_response]
            count = len(group) // micro_batch_size
            left_out = set(rng.sample(range(len(group)), len(group) - count * micro_batch_size))
            spare += [row for i, row in enumerate(group) if i in left_out]
            dealt = sorted(
                (row for i, row in enumerate(group) if i not in left_out), key=lambda row: row.get("level") or 0
            )
            chunks += [dealt[j::count] for j in range(count)]
        chunks += [spare[i : i + micro_batch_size] for i in range(0, len(spare), micro_batch_size)]
        chunks = [chunk for chunk in chunks if len(chunk) == micro_batch_size]
        rng.shuffle(chunks)
        yield from chunks


def trains_whole_response(row: dict) -> bool:
    """More labelled tokens than a level and its end-of-turn token."""
    labels = row.get("labels") or ()
    return sum(1 for token in labels if token != IGNORE_INDEX) > 2


def rank_zero_says(flag: bool, device) -> bool:
    """Rank 0's ``flag`` on every rank (a one-element broadcast over the training group)."""
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


class BestWeights:
    """Rank 0's copy of the weights of the best validated step (by macro-F1; ties keep the
    earlier step), put back into the module before the final save. A CPU copy of the module's
    own (bf16) weights: what the saved folder would have held at that step."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.step: int | None = None
        self.score: float | None = None
        self.state: dict | None = None
        self.metrics: dict[str, float] = {}

    def offer(self, step: int, score: float | None, module) -> None:
        if not self.enabled or score is None or (self.score is not None and score <= self.score):
            return
        self.step, self.score = step, score
        self.metrics = {"macro_f1": score}
        self.state = {name: tensor.detach().to("cpu", copy=True) for name, tensor in module.state_dict().items()}

    def restore(self, module) -> bool:
        """Load the best weights; False when there is nothing to restore (off, or none seen)."""
        if not self.enabled or self.state is None:
            return False
        module.load_state_dict(self.state)
        return True


def require_examples(count: int, cfg, what: str, hint: str = "") -> None:
    """Every worker needs at least one full micro-batch, or the run has nothing to train on."""
    if count < cfg.num_workers * cfg.micro_batch_size:
        raise ValueError(
            f"only {count} {what}: too few for {cfg.num_workers} workers x micro-batch {cfg.micro_batch_size}{hint}"
        )


def scaling_config(trainer_cfg, ray_config: RayConfig):
    """Ray Train's workers for one stage: its count, its GPUs and what each asks of a node."""
    import ray.train

    return ray.train.ScalingConfig(
        num_workers=trainer_cfg.num_workers,
        use_gpu=trainer_cfg.use_gpu,
        resources_per_worker=ray_config.learner_resources(trainer_cfg.cpus_per_worker, trainer_cfg.use_gpu),
    )


def fit(
    train_func: Callable,
    inputs: LoopInputs,
    trainer_cfg,
    dataset,
    out_dir: str,
    s3_endpoint: str,
    ray_config: RayConfig,
    max_failures: int = 0,
) -> dict:
    """Run ``train_func`` on Ray Train workers over ``dataset``; the last checkpoint becomes the
    Hugging Face folder ``out_dir/model``. Returns the final metrics. Ray Train resumes a run
    whose (storage path, name) already holds checkpoints; ``max_failures`` restarts failed workers
    from the latest checkpoint within this call."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from taosr.datasets.readers import filesystem_for

    local_out = None if out_dir.startswith("s3://") else os.path.abspath(out_dir)
    storage = local_out or out_dir
    trainer = TorchTrainer(
        train_func,
        train_loop_config={
            "inputs": replace(
                inputs,
                model_path=absolute(inputs.model_path),
                log_dir=local_out or out_dir,
                s3_endpoint=s3_endpoint,
                echo_metrics=os.environ.get("TAOSR_VERBOSE", "0") == "1",  # --verbose: each line on stdout too
            )
        },
        torch_config=TorchConfig(backend="nccl" if trainer_cfg.use_gpu else "gloo"),
        scaling_config=scaling_config(trainer_cfg, ray_config),
        # With a filesystem given, Ray wants the path inside it: s3://bucket/run -> bucket/run.
        run_config=ray.train.RunConfig(
            name="ray_train",
            storage_path=storage.split("://", 1)[-1],
            storage_filesystem=filesystem_for(storage, s3_endpoint),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
        ),
        datasets={"train": dataset} if dataset is not None else None,
    )
    label = os.path.basename(os.path.normpath(out_dir))
    with StageProgress(local_out, label, getattr(trainer_cfg, "steps", None), ray_config.progress_bars):
        result = trainer.fit()
    final_dir = join(out_dir, "model")
    if local_out:
        if os.path.exists(final_dir):
            shutil.rmtree(final_dir)
        result.checkpoint.to_directory(final_dir)
    else:
        with result.checkpoint.as_directory() as folder:
            copy_tree(folder, final_dir, s3_endpoint)
    return {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, str))}

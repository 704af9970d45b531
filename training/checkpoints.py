"""Resumable training checkpoints for the Ray Train stages (SFT, DPO, GenRM, the RL learner).

Two kinds, both reported to Ray Train: resumable ones (DeepSpeed state: model, optimizer,
scheduler; plus RNGs and the caller's position) while training, and a final Hugging Face folder.
Ray Train restores the latest on a restart; a final one means "already done".
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from typing import TYPE_CHECKING

import numpy as np

from taosr.models import MODEL_INFO

if TYPE_CHECKING:
    from taosr.training.loop_inputs import LoopInputs

STATE_FILE = "train_state.json"  # in every checkpoint: where to resume, or that the run finished
DS_TAG = "learner"


def save_state(engine, rank: int, position: dict, metrics: dict) -> None:
    """Every rank saves its DeepSpeed shard; rank 0 adds ``position`` (JSON) and the RNG states."""
    import ray.train
    import torch

    with tempfile.TemporaryDirectory() as folder:
        engine.save_checkpoint(folder, tag=DS_TAG)  # collective: every rank writes its shard
        if rank == 0:
            state = {
                **position,
                "metrics": metrics,
                "python_rng": _jsonable(random.getstate()),
                "numpy_rng": _jsonable(np.random.get_state()),
                "torch_rng": torch.get_rng_state().tolist(),
            }
            with open(os.path.join(folder, STATE_FILE), "w") as handle:
                json.dump(state, handle, default=str)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def load_state(engine) -> dict:
    """Restore from Ray Train's latest checkpoint, if any; returns rank 0's saved position
    ({} when starting afresh; ``final`` set when the run had already finished)."""
    import ray.train
    import torch

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return {}
    with checkpoint.as_directory() as folder:
        if not os.path.exists(os.path.join(folder, STATE_FILE)):
            raise RuntimeError(f"checkpoint {checkpoint.path} holds no {STATE_FILE}: not written by this version")
        with open(os.path.join(folder, STATE_FILE)) as handle:
            state = json.load(handle)
        if state.get("final"):
            return state
        engine.load_checkpoint(folder, tag=DS_TAG)
    random.setstate(_tuples(state["python_rng"]))
    numpy_state = state["numpy_rng"]
    np.random.set_state((numpy_state[0], np.asarray(numpy_state[1], dtype=np.uint32), *numpy_state[2:]))
    torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    return state


def report_final(engine, tokenizer, inputs: LoopInputs, rank: int, metrics: dict) -> None:
    """The Hugging Face folder (weights, tokenizer, model record) reported as the last checkpoint."""
    import ray.train

    zero3 = inputs.section.zero_stage == 3
    weights = engine._zero3_consolidated_16bit_state_dict() if zero3 else None  # collective: all ranks
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        engine.module.save_pretrained(folder, state_dict=weights)
        tokenizer.save_pretrained(folder)
        with open(os.path.join(folder, MODEL_INFO), "w") as handle:
            json.dump(inputs.model_info, handle)
        with open(os.path.join(folder, STATE_FILE), "w") as handle:
            json.dump({"final": True, "metrics": metrics}, handle, default=str)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def crash_once(folder: str | None, step: int) -> None:
    """Testing only: fail the first attempt after ``step``; the marker lets the retry pass."""
    local = folder if folder and "://" not in folder else tempfile.gettempdir()
    marker = os.path.join(local, f"crashed-after-step-{step}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError(f"injected failure after step {step} (faults.crash_after_step)")


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value

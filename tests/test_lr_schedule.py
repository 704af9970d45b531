"""The learning-rate schedules every training stage's engine is built with (hand-checked values)."""

import math

import pytest
import torch

from taosr.config_sections import LearnerConfig
from taosr.training.trainer import lr_scheduler


def lrs(schedule: str, steps: int = 200, **extra) -> list[float]:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg = LearnerConfig(lr_schedule=schedule, warmup_ratio=0.05, min_lr_ratio=0.1, decay_ratio=0.2, **extra)
    scheduler = lr_scheduler(optimizer, cfg, steps)
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return out


def test_cosine_decays_over_every_step_after_the_warm_up():
    values = lrs("cosine")
    assert values[0] == 0.0 and values[10] == pytest.approx(1.0)
    # step 100: (100 - 10) / 190 of the way; 0.1 + 0.9 * (1 + cos(pi * 90 / 190)) / 2
    assert values[100] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 90 / 190)))
    assert values[100] == pytest.approx(0.5872, abs=1e-4)
    assert values[-1] == pytest.approx(0.1, abs=1e-3)


def test_wsd_holds_the_peak_until_the_last_fifth_then_decays_to_the_floor():
    values = lrs("wsd")
    assert all(v == pytest.approx(1.0) for v in values[10:161])
    assert values[180] == pytest.approx(0.55)  # halfway through the 40 decay steps: 0.1 + 0.9 * (1 + cos(pi/2)) / 2
    assert values[199] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 39 / 40)))
    assert sum(values[:160]) > 1.4 * sum(lrs("cosine")[:160])  # the point of it: more learning before the decay


def test_schedule_options_are_checked():
    with pytest.raises(ValueError, match="lr_schedule"):
        LearnerConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="decay_ratio"):
        LearnerConfig(lr_schedule="wsd", decay_ratio=0.0)
    with pytest.raises(ValueError, match="decay_ratio"):
        LearnerConfig(lr_schedule="wsd", warmup_ratio=0.5, decay_ratio=0.6)
    LearnerConfig(warmup_ratio=0.9)  # the decay ratio only binds wsd

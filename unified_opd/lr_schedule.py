"""The learning-rate schedule: a multiplier per optimiser step for `LambdaLR`."""

from __future__ import annotations

import math
from typing import Callable

from omegaconf import DictConfig

from .errors import ConfigError

SCHEDULES = ("constant", "linear", "cosine")


def lr_lambda(t: DictConfig, time_fraction: Callable[[], float] = lambda: 0.0) -> Callable[[int], float]:
    """LR multiplier per step: linear warm-up, then the schedule over the rest of the run.

    With a time budget (`trainer.max_time_minutes`) the run may stop long before `max_steps`, so
    the schedule's progress is the larger of the step fraction and `time_fraction()` (training
    time used / budget): a cosine then reaches 0 when the budget ends, on any machine.

        warm-up (step < W):  (step + 1) / W
        after:  f = min(1, max((step − W) / (S − W), time fraction));
                constant 1,  linear 1 − f,  cosine ½·(1 + cos(π·f))
    """
    warm, total, kind = t.warmup_steps, max(1, t.max_steps), t.lr_schedule
    if kind not in SCHEDULES:
        raise ConfigError(f"trainer.lr_schedule: expected constant, linear or cosine, got {kind!r}")

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        frac = min(1.0, max((step - warm) / max(1, total - warm), time_fraction()))
        if kind == "linear":
            return 1.0 - frac
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * frac))
        return 1.0

    return f

"""Supervised training on random minibatches: the one loop behind every zoo model (LM teachers
and students, vision models, the digit generators and their classifier) and the diffusion cold
start.

    plan = SupervisedPlan(steps=1000, lr=1e-3, seed=1, title="zoo arith teacher")
    result = fit(model, model_loss, draw_batch, plan)

`draw_batch(generator)` returns one minibatch; `loss_fn(model, batch)` returns its scalar loss.
Every random draw of a step (indices, augmentation, noise) comes from the one generator that
`fit` seeds with `plan.seed` and hands to `draw_batch`, so a model is a function of its seed. A
loss that draws noise of its own gets that generator through the batch (`draw_batch` returns it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple, Union

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor, nn

from .errors import ConfigError

console = Console(stderr=True)
SCHEDULES = ("cosine", "constant")
SHOW_EVERY = 10  # steps between loss readings on the bar: a reading waits for the device

LossFn = Callable[[nn.Module, Any], Tensor]
DrawBatch = Callable[[torch.Generator], Any]
# check(model, step) -> a reason to stop (shown on the bar), or None to go on; model in eval mode
Check = Callable[[nn.Module, int], Optional[str]]


@dataclass(frozen=True)
class SupervisedPlan:
    """How `fit` trains. The defaults are the zoo language models' recipe.

    steps: optimiser steps to take (the most: `check` may stop earlier).
    lr: AdamW's peak learning rate.
    seed: seeds the generator `draw_batch` draws from.
    weight_decay: AdamW's decoupled weight decay.
    betas: AdamW's decay rates of the first and second gradient moments.
    schedule: "cosine" (anneals to 0 at `steps`) or "constant"; see `lr_multiplier`.
    warmup_steps: steps of the linear warm-up ramp; None: `steps // 20`; 0 or 1: none.
    clip_norm: the total gradient norm is clipped to this before each step; None: no clipping.
    check_every: steps between calls of `fit`'s `check` (0: never call it).
    device: where the generator lives: the device `draw_batch` draws its indices and noise on.
    title: the progress bar's label.
    """

    steps: int
    lr: float
    seed: int
    weight_decay: float = 0.01
    betas: Tuple[float, float] = (0.9, 0.98)
    schedule: str = "cosine"
    warmup_steps: Optional[int] = None
    clip_norm: Optional[float] = 1.0
    check_every: int = 0
    device: Union[str, torch.device] = "cpu"
    title: str = "supervised"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"{self.title}: schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("steps", "check_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{self.title}: {name} must be >= 0, got {getattr(self, name)}")


@dataclass
class SupervisedResult:
    """steps: steps taken; losses: each step's loss; stopped: the check's reason, if it stopped the run."""

    steps: int
    losses: List[float]
    stopped: Optional[str] = None


def lr_multiplier(plan: SupervisedPlan) -> Callable[[int], float]:
    """η_s / η = min(1, (s + 1) / W) · c(s) at step s (counted from 0), with W = `warmup_steps`
    (default ⌊S / 20⌋, at least 1), S = `steps`, and c(s) = ½ (1 + cos(π · min(1, s / S)))
    for "cosine", c(s) = 1 for "constant"."""
    warm = max(1, plan.steps // 20 if plan.warmup_steps is None else plan.warmup_steps)
    total = max(1, plan.steps)

    def multiplier(s: int) -> float:
        decay = 1.0 if plan.schedule == "constant" else 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))
        return min(1.0, (s + 1) / warm) * decay

    return multiplier


def model_loss(model: nn.Module, batch: dict) -> Tensor:
    """The loss a Hugging Face model computes itself from the `labels` among its keyword inputs."""
    return model(**batch).loss


def fit(model: nn.Module, loss_fn: LossFn, draw_batch: DrawBatch, plan: SupervisedPlan, check: Optional[Check] = None) -> SupervisedResult:
    """Train `model` for `plan.steps` AdamW steps on `loss_fn(model, draw_batch(generator))`,
    under `lr_multiplier(plan)` and with a progress bar; every `plan.check_every` steps
    `check(model, step)` may stop it. Leaves the model in eval mode."""
    generator = torch.Generator(device=plan.device).manual_seed(plan.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=plan.lr, weight_decay=plan.weight_decay, betas=plan.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_multiplier(plan))
    losses: List[Tensor] = []
    stopped = None
    model.train()
    columns = [TextColumn(f"[bold]{plan.title}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn()]
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(plan.title, total=plan.steps, info="")
        for step in range(1, plan.steps + 1):
            loss = loss_fn(model, draw_batch(generator))
            _optimiser_step(model, loss, opt, sched, plan.clip_norm)
            losses.append(loss.detach())
            bar.update(task, completed=step)
            if step % SHOW_EVERY == 0 or step == plan.steps:
                bar.update(task, info=f"loss {loss.item():.4f}")
            if check is not None and plan.check_every and step % plan.check_every == 0:
                stopped = _run_check(model, check, step)
                if stopped:
                    bar.update(task, total=step, info=stopped)
                    break
    model.eval()
    return SupervisedResult(len(losses), torch.stack(losses).tolist() if losses else [], stopped)


def _optimiser_step(model: nn.Module, loss: Tensor, opt, sched, clip_norm: Optional[float]) -> None:
    opt.zero_grad(set_to_none=True)  # before backward: a model arriving with gradients starts clean
    loss.backward()
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    opt.step()
    sched.step()


def _run_check(model: nn.Module, check: Check, step: int) -> Optional[str]:
    model.eval()
    try:
        return check(model, step)
    finally:
        model.train()

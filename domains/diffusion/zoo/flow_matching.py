"""Supervised flow matching: the zoo's pre-training, the cold start and the manifold anchor."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor, nn

from ..models import velocity
from ..sde import flow_matching_pair

console = Console(stderr=True)


def flow_matching_loss(
    model: nn.Module, x0: Tensor, labels: Tensor, num_train_timesteps: int, generator: Optional[torch.Generator] = None
) -> Tensor:
    """E_{σ~U(0,1), ε~N(0,I)} ‖v_θ((1 − σ)x₀ + σε, σ, y) − (ε − x₀)‖², averaged over elements."""
    sigma = torch.rand(x0.shape[0], generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x, target = flow_matching_pair(x0, noise, sigma)
    return F.mse_loss(velocity(model, x, sigma, labels, num_train_timesteps), target)


def train_flow_matching(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    num_train_timesteps: int,
    steps: int,
    batch: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    label: str = "flow matching",
) -> float:
    """AdamW on `flow_matching_loss` over random minibatches, warm-up then cosine decay of the
    LR; returns the mean loss of the last 10% of steps. Shows a rich progress bar."""
    g = torch.Generator(device=images.device).manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps))))
    )
    model.train()
    tail = []
    cols = [TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn()]
    with Progress(*cols, console=console) as bar:
        task = bar.add_task(label, total=steps, info="")
        for step in range(steps):
            idx = torch.randint(len(images), (batch,), generator=g, device=images.device)
            loss = flow_matching_loss(model, images[idx], labels[idx], num_train_timesteps, g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step >= steps - max(1, steps // 10):
                tail.append(float(loss.detach()))
            if step % 20 == 0 or step == steps - 1:
                bar.update(task, completed=step + 1, info=f"loss {float(loss.detach()):.4f}")
    model.eval()
    return sum(tail) / max(1, len(tail))

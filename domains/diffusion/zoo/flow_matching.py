"""Supervised flow matching: the zoo's pre-training, the cold start and the manifold anchor."""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unified_opd.supervised import SupervisedPlan, fit

from ..sde import flow_matching_pair

# field_of(model, index) -> v(x, σ): the model's velocity under the conditions of rows `index`
FieldOf = Callable[[nn.Module, Tensor], Callable[[Tensor, Tensor], Tensor]]


def flow_matching_loss(field: Callable[[Tensor, Tensor], Tensor], x0: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """E_{σ~U(0,1), ε~N(0,I)} ‖v_θ((1 − σ)x₀ + σε, σ, c) − (ε − x₀)‖², averaged over elements;
    `field(x, σ)` is v_θ under the conditions c of the rows of `x0`."""
    sigma = torch.rand(x0.shape[0], generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x, target = flow_matching_pair(x0, noise, sigma)
    return F.mse_loss(field(x, sigma), target)


def train_flow_matching(
    model: nn.Module,
    images: Tensor,
    field_of: FieldOf,
    steps: int,
    batch: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    label: str = "flow matching",
) -> float:
    """AdamW on `flow_matching_loss` over random minibatches of `images` (latents), warm-up then
    cosine decay of the LR (`unified_opd.supervised.fit`); returns the mean loss of the last 10%
    of steps. Shows a rich progress bar."""

    def draw(generator: torch.Generator) -> Tuple[Tensor, Tensor, torch.Generator]:
        idx = torch.randint(len(images), (batch,), generator=generator, device=images.device)
        return images[idx], idx, generator  # the loss draws σ and ε from it, after the indices

    def loss(model: nn.Module, drawn: Tuple[Tensor, Tensor, torch.Generator]) -> Tensor:
        x0, idx, g = drawn
        return flow_matching_loss(field_of(model, idx), x0, g)

    plan = SupervisedPlan(steps, lr, seed, weight_decay=0.0, betas=(0.9, 0.999), device=images.device, title=label)
    tail = fit(model, loss, draw, plan).losses[-max(1, steps // 10) :]
    return sum(tail) / max(1, len(tail))

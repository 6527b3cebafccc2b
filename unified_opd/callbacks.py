"""After-step callbacks: generic hooks the trainer runs after every optimiser step.

Configured as `trainer.callbacks: [name | {name: ..., options}]` from the `CALLBACKS` registry,
so an optimisation trick such as EffOPD's weight extrapolation is one registration and never a
branch in the trainer. A callback gets the policy and the number of optimiser steps done.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from .errors import ConfigError
from .interfaces import Policy
from .registry import Registry

CALLBACKS = Registry("callback", "trainer.callbacks")


class Callback:
    def after_step(self, policy: Policy, step: int) -> None:
        """Called after optimiser step number `step` (1-based)."""


def effopd_factor(delta: Tensor, previous_delta: Optional[Tensor], alpha: float) -> float:
    """EffOPD's adaptive extrapolation factor: α_t = α · max(0, cos(Δθ_t, Δθ_{t−1})).

    Δθ_t is the parameter change over the last interval. Extrapolating along it is a bet that the
    update keeps its direction (EffOPD's observation: the leading update subspace is found early);
    the cosine with the previous interval's change measures that bet, so the step shrinks when
    the direction turns and vanishes when it reverses. Without a previous interval α_t = 0.
    """
    if previous_delta is None:
        return 0.0
    cos = torch.nn.functional.cosine_similarity(delta.flatten().float(), previous_delta.flatten().float(), dim=0)
    return float(alpha) * max(0.0, float(cos))


@CALLBACKS.register("effopd")
class EffOPDExtrapolation(Callback):
    """Every `interval` steps: θ ← θ + α_t · (θ − θ_{last}), α_t from `effopd_factor`.

    θ_last is the snapshot taken at the previous extrapolation point (after extrapolating), so
    Δθ is the optimiser's own progress over the interval. The optimiser's moments are untouched.
    Snapshots are not checkpointed: after a resume the first interval only re-measures Δθ.
    """

    def __init__(self, alpha: float = 1.0, interval: int = 10):
        if interval < 1 or alpha < 0:
            raise ConfigError(f"trainer.callbacks: effopd needs interval >= 1 and alpha >= 0 (got {interval}, {alpha})")
        self.alpha, self.interval = float(alpha), int(interval)
        self.snapshot: Optional[Tensor] = None
        self.previous_delta: Optional[Tensor] = None
        self.last_factor = 0.0

    @torch.no_grad()
    def after_step(self, policy: Policy, step: int) -> None:
        if step % self.interval:
            return
        params = [p for p in policy.module.parameters() if p.requires_grad]
        flat = torch.nn.utils.parameters_to_vector(params).detach().clone()
        if self.snapshot is not None:
            delta = flat - self.snapshot
            self.last_factor = effopd_factor(delta, self.previous_delta, self.alpha)
            if self.last_factor > 0:
                flat = flat + self.last_factor * delta
                torch.nn.utils.vector_to_parameters(flat, params)
            self.previous_delta = delta
        self.snapshot = flat


def build_callbacks(specs: List) -> List[Callback]:
    """Config entries (a name, or a mapping with `name` and options) -> callback objects."""
    return CALLBACKS.build_all(specs)

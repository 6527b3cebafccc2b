"""The student as its own teacher: live, as an EMA copy, or as a frozen copy (the G-OPD reference).

A domain only says how a module scores a rollout (`TeacherSource.view_of`); copying, freezing,
the EMA update and the checkpointed state are the same for every domain and live here.
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .distributions import Distribution
from .interfaces import Policy, Teacher
from .rollout import Rollout

Tensors = Union[Tensor, Sequence[Tensor]]


@torch.no_grad()
def ema_update(target: Tensors, source: Tensors, decay: float) -> None:
    """In place: θ_T ← d·θ_T + (1 − d)·θ_S, for one tensor or for every pair of two sequences."""
    pairs = [(target, source)] if isinstance(target, Tensor) else zip(target, source)
    for t, s in pairs:
        t.mul_(decay).add_(s.detach().to(t.dtype), alpha=1.0 - decay)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of `module` in eval mode with no gradients (the student's weights as of now)."""
    return copy.deepcopy(module).eval().requires_grad_(False)


class EmaTeacher(Teacher):
    """A frozen copy of the student, read through `view` (the domain's scorer of that copy), moved
    towards the student by `ema_update` after every optimiser step; its weights are the teacher
    state in checkpoints, so a resumed run continues the same average."""

    def __init__(self, copy: nn.Module, view: Callable[[nn.Module], Teacher], decay: float):
        self.copy, self.decay = copy, float(decay)
        self.view = view(copy)

    def distribution(self, rollout: Rollout) -> Distribution:
        return self.view.distribution(rollout)

    def after_step(self, policy: Policy) -> None:
        ema_update(list(self.copy.parameters()), list(policy.module.parameters()), self.decay)

    def state(self) -> Optional[Dict[str, Tensor]]:
        return dict(self.copy.state_dict())

    def load_state(self, state: Dict[str, Tensor]) -> None:
        self.copy.load_state_dict(state)

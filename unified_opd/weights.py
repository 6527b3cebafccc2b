"""Per-position loss weights: pure functions of tensors the trainer already has.

Each weight function takes a `WeightInputs` (the student's own decisions, flattened to `[N]`
positions) plus its options from the config, and returns `[N]` non-negative weights. The
objective multiplies every configured weight together. Recipes such as TIP token selection,
PW-OPSD position weights, SOD step weights or SCOPE/SRPO correctness routing register here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from .distributions import Distribution
from .errors import ConfigError
from .registry import Registry
from .rollout import Rollout

WEIGHTS = Registry("weight", "objective.weights")


@dataclass
class WeightInputs:
    """What a weight function may read, for the `N` positions where `rollout.loss_mask` is 1.

    batch_index: trajectory of each position `[N]`;  position: index among that trajectory's
    own decisions `[N]`;  step_ids: step/turn `[N]`;  divergence: the detached per-position
    divergence (or its sampled estimate) `[N]`;  student/teacher: the selected distributions.
    """

    rollout: Rollout
    student: Distribution
    teacher: Distribution
    divergence: Tensor
    batch_index: Tensor
    position: Tensor
    step_ids: Tensor
    step: int = 0
    max_steps: int = 1
    _cache: Dict[str, Tensor] = field(default_factory=dict)

    def student_entropy(self) -> Tensor:
        if "student_entropy" not in self._cache:
            with torch.no_grad():
                self._cache["student_entropy"] = self.student.entropy().detach()
        return self._cache["student_entropy"]

    def teacher_entropy(self) -> Tensor:
        if "teacher_entropy" not in self._cache:
            with torch.no_grad():
                self._cache["teacher_entropy"] = self.teacher.entropy().detach()
        return self._cache["teacher_entropy"]

    def outcome(self) -> Optional[Tensor]:
        o = self.rollout.outcome
        return None if o is None else o.to(self.batch_index.device).float()[self.batch_index]


WeightFn = Callable[..., Tensor]


@WEIGHTS.register("uniform")
def uniform_weight(inputs: WeightInputs) -> Tensor:
    """w = 1 at every position (plain OPD)."""
    return torch.ones_like(inputs.divergence)


def build_weights(specs: list) -> list:
    """Config entries (a name, or a mapping with `name` and options) -> [(fn, options)]."""
    built = []
    for i, spec in enumerate(specs):
        if isinstance(spec, str):
            name, opts = spec, {}
        else:
            opts = dict(spec)
            name = opts.pop("name", None)
            if name is None:
                raise ConfigError(f"objective.weights[{i}]: expected a name or a mapping with a 'name' key")
        built.append((WEIGHTS.get(name, f"objective.weights[{i}].name"), opts))
    return built


def combine_weights(built: list, inputs: WeightInputs) -> Tensor:
    w = torch.ones_like(inputs.divergence)
    for fn, opts in built:
        w = w * fn(inputs, **opts)
    return w

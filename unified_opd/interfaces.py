"""The two model-facing interfaces of the core: `Policy` (the student) and `Teacher`.

A domain implements them for its kind of decision; the trainer only ever calls the methods here.
"""

from __future__ import annotations

import abc
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from .distributions import Distribution
from .rollout import Rollout


class Policy(abc.ABC):
    """The student: acts on its own (`rollout`) and scores those actions with gradients.

    `module` is the trainable `nn.Module`. The trainer may replace `train_module` with a wrapped
    copy (DDP under `accelerate launch`); `distribution` must run its forward through
    `train_module` so gradient synchronisation happens, while `rollout` may use `module`.
    """

    module: nn.Module

    @property
    def train_module(self) -> nn.Module:
        return getattr(self, "_train_module", None) or self.module

    @train_module.setter
    def train_module(self, wrapped: nn.Module) -> None:
        self._train_module = wrapped

    @abc.abstractmethod
    def rollout(self, batch: Sequence[Any]) -> Rollout:
        """Sample trajectories for a batch of task records, without gradients."""

    @abc.abstractmethod
    def distribution(self, rollout: Rollout) -> Distribution:
        """The student's distribution at every position of `rollout`, with gradients, `[B, P]`."""

    @abc.abstractmethod
    def save(self, path: str) -> None:
        """Write the student in its ecosystem's native format (e.g. `save_pretrained`)."""

    def snapshot(self) -> Any:
        """A copy of the weights `rollout` samples with, which later optimiser steps leave as
        they are. Asynchronous rollouts (`unified_opd.background_rollouts`) take one per step in
        the training thread and sample from it in another; a domain offering them overrides this
        and `rollout_from`."""
        raise NotImplementedError(f"{type(self).__name__} does not sample rollouts in the background")

    def rollout_from(self, batch: Sequence[Any], snapshot: Any) -> Rollout:
        """`rollout(batch)` sampled with `snapshot`'s weights (not the live module's), safe to run
        in a thread while the training thread updates the module."""
        raise NotImplementedError(f"{type(self).__name__} does not sample rollouts in the background")

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)


class Teacher(abc.ABC):
    """Says, at every decision the student made, what it would have done instead (no gradients)."""

    @abc.abstractmethod
    def distribution(self, rollout: Rollout) -> Distribution:
        """The teacher's distribution at every position of `rollout`, read on `rollout.view_for_teacher`."""

    def state(self) -> Optional[Dict[str, torch.Tensor]]:
        """Tensors to checkpoint (an EMA teacher's weights); `None` for a frozen teacher."""
        return None

    def load_state(self, state: Dict[str, torch.Tensor]) -> None:
        """Restore what `state` returned."""

    def after_step(self, policy: Policy) -> None:
        """Called after each optimiser step (an EMA self-teacher updates here)."""

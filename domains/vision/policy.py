"""The vision student and its EMA self-teacher (a separate teacher, the live student and a frozen
copy are `unified_opd.domains.lm`'s `LMTeacher`, `lm_teacher_view` and `LMTeacher.frozen_copy`)."""

from __future__ import annotations

import copy
from typing import Any, Dict, Optional, Sequence

import torch

from unified_opd.domains.lm import LMPolicy, LMTeacher, Sampling
from unified_opd.interfaces import Policy
from unified_opd.rollout import Rollout

from .generation import ImageTransform, ViewBuilder, generate_rollout


class VisionPolicy(LMPolicy):
    """Student image-text model: answers from the full image; every rollout also carries the
    teacher's view (`teacher_view`) of the same answers when one is configured."""

    def __init__(self, lm, processor, data_cfg, sampling: Sampling, lazy: bool = True, teacher_view: Optional[ViewBuilder] = None):
        super().__init__(lm, processor, lazy)
        self.processor = processor
        self.data_cfg = data_cfg
        self.sampling = sampling
        self.teacher_view = teacher_view

    def rollout(
        self,
        batch: Sequence[Dict[str, Any]],
        sampling: Optional[Sampling] = None,
        image_transform: Optional[ImageTransform] = None,
        with_teacher_view: bool = True,
    ) -> Rollout:
        view = self.teacher_view if with_teacher_view else None
        return generate_rollout(self.lm, self.processor, batch, self.data_cfg, sampling or self.sampling, image_transform, view)


def ema_update(teacher: torch.Tensor, student: torch.Tensor, decay: float) -> None:
    """In place: teacher ← decay · teacher + (1 − decay) · student."""
    teacher.mul_(decay).add_(student.to(teacher.dtype), alpha=1.0 - decay)


class EmaSelfTeacher(LMTeacher):
    """An exponential moving average of the student's weights; its weights are checkpointed.

    To be replaced by the core's `teacher.kind: self` with an EMA (`unified_opd.teachers`)."""

    def __init__(self, policy: VisionPolicy, decay: float):
        super().__init__(copy.deepcopy(policy.lm), policy.module.lazy)
        self.decay = decay

    @torch.no_grad()
    def after_step(self, policy: Policy) -> None:
        student = dict(policy.module.named_parameters())
        for name, p in self.module.named_parameters():
            ema_update(p.data, student[name].data, self.decay)

    def state(self) -> Dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def load_state(self, state: Dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)

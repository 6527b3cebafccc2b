"""The vision student and its teachers: a separate frozen model, or the student itself on the
teacher view (live weights, a frozen copy of the initial weights, or an EMA of the weights)."""

from __future__ import annotations

import copy
from typing import Any, Dict, Optional, Sequence

import torch

from unified_opd.distributions import Categorical
from unified_opd.domains.text.generation import Sampling
from unified_opd.interfaces import Policy, Teacher
from unified_opd.rollout import Rollout

from .generation import ImageTransform, ViewBuilder, generate_rollout, score_view
from .models import VisionHiddenStates


class VisionPolicy(Policy):
    """Student image-text model: answers from the full image; every rollout also carries the
    teacher's view (`teacher_view`) of the same answers when one is configured."""

    def __init__(self, lm, processor, data_cfg, sampling: Sampling, lazy: bool = True, teacher_view: Optional[ViewBuilder] = None):
        self.module = VisionHiddenStates(lm, lazy)
        self.processor = processor
        self.data_cfg = data_cfg
        self.sampling = sampling
        self.teacher_view = teacher_view

    @property
    def lm(self):
        return self.module.lm

    def rollout(
        self,
        batch: Sequence[Dict[str, Any]],
        sampling: Optional[Sampling] = None,
        image_transform: Optional[ImageTransform] = None,
        with_teacher_view: bool = True,
    ) -> Rollout:
        view = self.teacher_view if with_teacher_view else None
        return generate_rollout(self.lm, self.processor, batch, self.data_cfg, sampling or self.sampling, image_transform, view)

    def distribution(self, rollout: Rollout) -> Categorical:
        view = rollout.student_view
        return score_view(self.train_module, self.module, view, view["prompt_len"])

    def save(self, path: str) -> None:
        self.lm.save_pretrained(path)
        self.processor.save_pretrained(path)


class VisionTeacher(Teacher):
    """A frozen image-text model scoring the student's answers on `rollout.view_for_teacher`."""

    def __init__(self, lm, lazy: bool = True):
        self.module = VisionHiddenStates(lm, lazy)
        self.module.eval().requires_grad_(False)

    @torch.no_grad()
    def distribution(self, rollout: Rollout) -> Categorical:
        return score_view(self.module, self.module, rollout.view_for_teacher, rollout.student_view["prompt_len"])

    @classmethod
    def frozen_copy(cls, policy: VisionPolicy) -> "VisionTeacher":
        """The student's current weights, frozen (the initial model when called at build time)."""
        return cls(copy.deepcopy(policy.lm), policy.module.lazy)


class LiveSelfTeacher(Teacher):
    """The student's own current weights on the teacher view (no gradients flow through it)."""

    def __init__(self, policy: VisionPolicy):
        self.policy = policy

    @torch.no_grad()
    def distribution(self, rollout: Rollout) -> Categorical:
        m = self.policy.module
        return score_view(m, m, rollout.view_for_teacher, rollout.student_view["prompt_len"])


def ema_update(teacher: torch.Tensor, student: torch.Tensor, decay: float) -> None:
    """In place: teacher ← decay · teacher + (1 − decay) · student."""
    teacher.mul_(decay).add_(student.to(teacher.dtype), alpha=1.0 - decay)


class EmaSelfTeacher(VisionTeacher):
    """An exponential moving average of the student's weights; its weights are checkpointed."""

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

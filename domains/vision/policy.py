"""The vision student: an image-text model answering from the full image (its teachers are the
core kinds, built through `teachers.VisionTeacherSource`)."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from unified_opd.domains.lm import LMPolicy, Sampling
from unified_opd.rollout import Rollout

from .families import family_of
from .generation import ImageTransform, ViewBuilder, generate_rollout
from .scoring import VisionHiddenStates


class VisionPolicy(LMPolicy):
    """Student image-text model: answers from the full image; every rollout also carries the
    teacher's view (`teacher_view`) of the same answers when one is configured."""

    def __init__(self, lm, processor, data_cfg, sampling: Sampling, lazy: bool = True, teacher_view: Optional[ViewBuilder] = None):
        super().__init__(lm, processor, lazy)
        self.family = family_of(lm.config.model_type)
        self.module = VisionHiddenStates(lm, self.family, lazy)
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

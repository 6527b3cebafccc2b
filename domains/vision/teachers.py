"""The vision domain's side of the core teacher kinds (`unified_opd.teacher_kinds`).

`VisionTeacherSource` loads an image-text teacher (same vocabulary as the student) and scores
rollouts with a given module (the live, EMA or frozen self-teacher of Vision-OPD). It keeps each
teacher's processor, because a separate teacher reads the image through its own processor.
"""

from __future__ import annotations

from typing import Any, Dict

import torch

from unified_opd.domains.lm import LMTeacherSource, ViewScorer, check_same_vocabulary
from unified_opd.teacher_kinds import TeacherContext

from .families import Family, family_of
from .models import load_vision_lm
from .policy import VisionPolicy
from .scoring import frozen_teacher


class VisionTeacherSource(LMTeacherSource):
    """`LMTeacherSource` for image-text models: loads with the processor and keeps it and the
    model's family (a separate teacher's view is encoded and laid out as its own model expects)."""

    domain = "vision"

    def __init__(self, cfg, policy: VisionPolicy, device: torch.device):
        super().__init__(cfg, policy, device)
        self.processors: Dict[str, Any] = {}
        self.families: Dict[str, Family] = {}

    def load(self, path: str, field: str) -> ViewScorer:
        t, p = self.cfg.teacher, self.policy
        lm, processor = load_vision_lm(path, t.dtype, t.trust_remote_code, field)
        check_same_vocabulary(p.processor.tokenizer, processor.tokenizer, p.lm, lm, field)
        self.processors[path] = processor
        self.families[path] = family_of(lm.config.model_type, f"{field}.path")
        return frozen_teacher(lm.to(self.device), self.families[path], self.cfg.student.lazy_logits)


def teacher_context(cfg, policy: VisionPolicy, device: torch.device) -> TeacherContext:
    """What `teacher_kinds.build_teacher` and `build_reference` take for a vision run."""
    return TeacherContext(cfg, policy, VisionTeacherSource(cfg, policy, device))

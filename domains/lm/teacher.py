"""Language-model teachers: a module that scores the student's sequences on the rollout's
teacher view (`rollout.view_for_teacher`), aligned to the student's positions.

`lm_teacher_view(module)` is the one scorer: the core composes the self-teacher kinds from it
(the live student: the policy's own module; an EMA or frozen copy: a deep copy of it).
`LMTeacher` is a separate frozen model (`load_lm_teacher` loads one from a path and checks it
shares the student's vocabulary); `LMTeacher.frozen_copy` the student's current weights.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch

from unified_opd.distributions import Categorical
from unified_opd.interfaces import Teacher
from unified_opd.rollout import Rollout

from .loading import check_same_vocabulary, load_causal_lm
from .policy import LMPolicy
from .scoring import HiddenStates, view_distribution


class ViewScorer(Teacher):
    """Scores `rollout.view_for_teacher` with `module` as it is: no copy, no freezing (so it may
    be the student's live module; no gradients flow through it)."""

    def __init__(self, module: HiddenStates):
        self.module = module

    @torch.no_grad()
    def distribution(self, rollout: Rollout) -> Categorical:
        return view_distribution(self.module, self.module, rollout.view_for_teacher, rollout.student_view["prompt_len"])


def lm_teacher_view(module: HiddenStates) -> Teacher:
    """A Teacher that scores rollouts with THIS module (a `HiddenStates`) on the teacher view."""
    return ViewScorer(module)


class LMTeacher(ViewScorer):
    """A frozen language model (causal or image-text) as the teacher."""

    def __init__(self, lm, lazy: bool = True):
        super().__init__(HiddenStates(lm, lazy).eval().requires_grad_(False))

    @classmethod
    def frozen_copy(cls, policy: LMPolicy) -> "LMTeacher":
        """A frozen copy of the student's current weights (the initial model when called at build
        time: the default G-OPD reference, or Vision-OPD's frozen self-teacher)."""
        return cls(copy.deepcopy(policy.lm), policy.module.lazy)


def load_lm_teacher(path: str, dtype: str, trust_remote_code: bool, field: str, tokenizer, student_lm, device, lazy: bool = True) -> LMTeacher:
    """The causal LM at `path` as a frozen teacher on `device`, after checking it scores the
    student's token ids (`tokenizer`, `student_lm`); errors name `field`."""
    lm, tok = load_causal_lm(path, dtype, trust_remote_code, field)
    check_same_vocabulary(tokenizer, tok, student_lm, lm, field)
    return LMTeacher(lm.to(device), lazy)


def reference_teacher(reference: Optional[str], dtype: str, trust_remote_code: bool, policy: LMPolicy, device, lazy: bool = True) -> Optional[LMTeacher]:
    """The G-OPD reference of `teacher.reference`: None, `student` (a frozen copy of the initial
    student) or the causal LM at that path (loaded like a teacher, vocabulary checked)."""
    if reference is None:
        return None
    if reference == "student":
        return LMTeacher.frozen_copy(policy)
    return load_lm_teacher(reference, dtype, trust_remote_code, "teacher.reference", policy.preprocessor, policy.lm, device, lazy)

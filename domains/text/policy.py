"""The text student and teacher: any Hugging Face causal LM."""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Optional, Sequence

import torch

from unified_opd.distributions import Categorical
from unified_opd.interfaces import Policy, Teacher
from unified_opd.rollout import Rollout

from .generation import Sampling, generate_rollout, view_distribution
from .models import HiddenStates
from .views import ViewFn, privileged_view


class TextPolicy(Policy):
    """Student causal LM: samples completions with `generate`, scores them with one forward pass."""

    def __init__(self, lm, tokenizer, data_cfg, sampling: Sampling, lazy: bool = True, teacher_view: Optional[ViewFn] = None):
        self.module = HiddenStates(lm, lazy)
        self.tokenizer = tokenizer
        self.data_cfg = data_cfg
        self.sampling = sampling
        self.teacher_view = teacher_view
        # a fixed rollout source (an offline teacher cache) replaces sampling during training;
        # evaluation passes its own `sampling` and always generates
        self.replay: Optional[Callable[[Sequence[Dict[str, Any]]], Rollout]] = None

    @property
    def lm(self):
        return self.module.lm

    def rollout(self, batch: Sequence[Dict[str, Any]], sampling: Sampling | None = None) -> Rollout:
        if self.replay is not None and sampling is None:
            return self.replay(batch)
        r = generate_rollout(self.lm, self.tokenizer, batch, self.data_cfg, sampling or self.sampling)
        if self.teacher_view is not None:
            r.teacher_view = privileged_view(self.tokenizer, r.meta["records"], r, self.data_cfg, self.teacher_view)
        return r

    def distribution(self, rollout: Rollout) -> Categorical:
        view = rollout.student_view
        return view_distribution(self.train_module, self.module, view, view["prompt_len"])

    def save(self, path: str) -> None:
        self.lm.save_pretrained(path)
        self.tokenizer.save_pretrained(path)


class TextTeacher(Teacher):
    """A frozen causal LM that scores the student's sequences on the rollout's teacher view."""

    def __init__(self, lm, lazy: bool = True):
        self.module = HiddenStates(lm, lazy)
        self.module.eval().requires_grad_(False)

    @torch.no_grad()
    def distribution(self, rollout: Rollout) -> Categorical:
        return view_distribution(self.module, self.module, rollout.view_for_teacher, rollout.student_view["prompt_len"])

    @classmethod
    def frozen_copy(cls, policy: TextPolicy) -> "TextTeacher":
        """A frozen copy of the student's current weights (the default G-OPD reference)."""
        return cls(copy.deepcopy(policy.lm), policy.module.lazy)

"""Scoring image-text sequences: the LM layer's `HiddenStates` with the family's input layout and
positions (`families.Family.model_inputs`), for the student and for every vision teacher."""

from __future__ import annotations

from typing import Any, Dict

import torch

from unified_opd.domains.lm import HiddenStates, ViewScorer

from .families import Family


class VisionHiddenStates(HiddenStates):
    """`HiddenStates` whose forward lays out a view's per-trajectory image rows as `family` expects."""

    def __init__(self, lm, family: Family, lazy: bool = True):
        super().__init__(lm, lazy)
        self.family = family

    def model_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **images: torch.Tensor) -> Dict[str, Any]:
        return self.family.model_inputs(self.lm, input_ids, attention_mask, images)


def frozen_teacher(lm, family: Family, lazy: bool = True) -> ViewScorer:
    """A separate image-text model, frozen, scoring the rollout's teacher view."""
    return ViewScorer(VisionHiddenStates(lm, family, lazy).eval().requires_grad_(False))

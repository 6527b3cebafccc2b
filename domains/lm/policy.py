"""The student language model: what every LM-based domain's policy shares (the wrapped module,
scoring its own rollouts, saving); each domain adds how it samples (`rollout`)."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence

from torch import Tensor

from unified_opd.distributions import Categorical
from unified_opd.interfaces import Policy
from unified_opd.lora import MERGED, save_adapted
from unified_opd.rollout import Rollout

from .scoring import HiddenStates, view_distribution


class LMPolicy(Policy):
    """A Hugging Face language model as the student. `preprocessor` (its tokenizer or processor)
    is saved next to the weights, so `save` writes a directory `from_pretrained` loads."""

    def __init__(self, lm, preprocessor: Any, lazy: bool = True):
        self.module = HiddenStates(lm, lazy)
        self.preprocessor = preprocessor
        self._sampling_snapshot: Optional[Dict[str, Tensor]] = None  # set while `rollout_from` runs

    @property
    def lm(self):
        return self.module.lm

    @property
    def rollout_weights(self):
        """What a training rollout's engine syncs from: the snapshot `rollout_from` samples, else the live model."""
        return self.lm if self._sampling_snapshot is None else self._sampling_snapshot

    def snapshot(self) -> Dict[str, Tensor]:
        """A copy of the student's weights, which asynchronous rollouts sample from while training changes the model."""
        return {name: t.detach().clone() for name, t in self.lm.state_dict().items()}

    def rollout_from(self, batch: Sequence[Any], snapshot: Dict[str, Tensor]) -> Rollout:
        """A training rollout sampled by the engine from `snapshot` (the domain's `rollout` syncs
        its engine from `rollout_weights`); it reads the live model's configuration only."""
        self._sampling_snapshot = snapshot
        try:
            return self.rollout(batch)
        finally:
            self._sampling_snapshot = None

    def distribution(self, rollout: Rollout) -> Categorical:
        """The student's per-position distribution on its own view, through `train_module` (so
        gradients flow and a DDP wrapper synchronises them)."""
        view = rollout.student_view
        return view_distribution(self.train_module, self.module, view, view["prompt_len"])

    def save(self, path: str) -> None:
        """Weights (a LoRA student: its adapter) and preprocessor; with `student.lora.merge` also
        `merged/`, the base with the adapter merged in, which plain transformers loads."""
        merged = save_adapted(self.lm, path)
        self.preprocessor.save_pretrained(path)
        if merged is not None:
            merged.save_pretrained(os.path.join(path, MERGED))
            self.preprocessor.save_pretrained(os.path.join(path, MERGED))

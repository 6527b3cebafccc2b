"""`Rollout`: a batch of on-policy trajectories, the one structure every domain produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor


@dataclass
class Rollout:
    """On-policy trajectories padded to `[batch, positions]`.

    actions:      the student's decisions per position (token ids `[B, P]`, or latents `[B, P, ...]`).
    loss_mask:    1 where the position is the student's own decision (prompt, observation and
                  padding positions are 0), `[B, P]`.
    step_ids:     which step/turn each position belongs to (agent turn, diffusion timestep index,
                  0 for plain text), `[B, P]`.
    student_view: what the student saw (domain-defined, e.g. a dict of input tensors).
    teacher_view: what the teacher sees; `None` means the same as the student's view. Privileged
                  self-distillation and Vision-OPD crops put a different context here.
    outcome:      optional per-trajectory reward / correctness from a verifier, `[B]`.
    task:         optional per-trajectory tag used to route teachers.
    group_ids:    optional per-trajectory prompt index: samples of one prompt share it (GRPO and
                  group-normalised weights).
    meta:         free-form extras (decoded text, timings, ...).

    The same table, with shapes, is in docs/design.md ("The Rollout's fields").
    """

    actions: Tensor
    loss_mask: Tensor
    step_ids: Tensor
    student_view: Any
    teacher_view: Any = None
    outcome: Optional[Tensor] = None
    task: Optional[List[str]] = None
    group_ids: Optional[Tensor] = None
    meta: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.loss_mask.shape != self.actions.shape[: self.loss_mask.dim()]:
            raise ValueError(
                f"Rollout: loss_mask {tuple(self.loss_mask.shape)} does not match actions {tuple(self.actions.shape)}"
            )
        if self.step_ids.shape != self.loss_mask.shape:
            raise ValueError(
                f"Rollout: step_ids {tuple(self.step_ids.shape)} does not match loss_mask {tuple(self.loss_mask.shape)}"
            )

    @property
    def batch_size(self) -> int:
        return self.loss_mask.shape[0]

    @property
    def view_for_teacher(self) -> Any:
        return self.student_view if self.teacher_view is None else self.teacher_view

    @property
    def mask(self) -> Tensor:
        return self.loss_mask.bool()

    def subset(self, index: Tensor) -> "Rollout":
        """The trajectories at `index` (a 1-D index or boolean tensor over the batch).

        Tensors (also inside dict/list views) whose first dimension is the batch are indexed;
        everything else is kept as is.
        """
        if index.dtype == torch.bool:
            index = index.nonzero().squeeze(-1)
        b = self.batch_size
        return Rollout(
            actions=self.actions[index],
            loss_mask=self.loss_mask[index],
            step_ids=self.step_ids[index],
            student_view=_take(self.student_view, index, b),
            teacher_view=_take(self.teacher_view, index, b),
            outcome=None if self.outcome is None else self.outcome[index],
            task=None if self.task is None else [self.task[i] for i in index.tolist()],
            group_ids=None if self.group_ids is None else self.group_ids[index],
            meta=_take(self.meta, index, b),
        )

    def positions(self) -> Tensor:
        """Index of each position among the trajectory's own decisions (0, 1, ...; -1 elsewhere)."""
        m = self.loss_mask.long()
        return torch.where(m.bool(), m.cumsum(-1) - 1, torch.full_like(m, -1))


def _take(value: Any, index: Tensor, batch: int) -> Any:
    if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return value[index.to(value.device)]
    if isinstance(value, dict):
        return {k: _take(v, index, batch) for k, v in value.items()}
    if isinstance(value, list) and len(value) == batch:
        return [value[i] for i in index.tolist()]
    return value

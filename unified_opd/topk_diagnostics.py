"""How much a top-k teacher (a served or cached one) truncates, per step: is the loss seeing the
mass that matters?

    topk/teacher_mass   mean over positions of Σ_{i∈K_T} p_T(i): the teacher's mass inside its top-k
    topk/student_mass   mean of Σ_{i∈K_T} p_S(i): the student's mass on the teacher's top-k
    topk/overlap        mean of |K_S ∩ K_T| / k: the share of the student's own k most likely
                        tokens that are among the teacher's

K_T is the teacher's top-k token set, K_S the student's k most likely tokens. A teacher mass far
below 1 means the tail bucket carries much of the target; a low student mass or overlap means
the student puts its mass where the teacher reports nothing (only the tail bucket).
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from .distributions import Categorical, rowwise


def _student_stats(student: Categorical, indices: Tensor) -> Tensor:
    """[n, 2]: per position, the student's mass on `indices` [n, k] and its top-k overlap with them."""
    lp_fn, nr = student.log_probs_fn(), len(student._rows)

    def stats(*a):
        rows, ids, shared = a[:nr], a[nr], a[nr + 1 :]
        lp = lp_fn(*rows, *shared)
        mass = lp.gather(-1, ids).exp().sum(-1)
        own = lp.topk(ids.shape[-1], -1).indices
        overlap = (own.unsqueeze(-1) == ids.unsqueeze(-2)).any(-1).float().mean(-1)
        return torch.stack([mass, overlap], -1)

    return rowwise(stats, (*student._flat_rows(), indices), student._shared, student.chunk_rows(), student.projected())


@torch.no_grad()
def topk_diagnostics(student: Categorical, teacher: Categorical) -> Dict[str, float]:
    """The three `topk/*` figures above, for a dense or lazy `student` and a sparse `teacher`
    over the same flat positions `[n]` (what the objective has after selecting the loss mask)."""
    lp, idx = teacher.topk
    s = _student_stats(student.detach(), idx.reshape(-1, idx.shape[-1]))
    return {
        "topk/teacher_mass": float(lp.float().logsumexp(-1).exp().mean()),
        "topk/student_mass": float(s[:, 0].mean()),
        "topk/overlap": float(s[:, 1].mean()),
    }

"""The sampled-token (policy-gradient) estimator of on-policy distillation.

At each position the student sampled `a_t`; the teacher's log-prob of that same token gives a
dense reward whose mean under the student is minus the reverse KL. The loss
`−sg(A_t − b_t) · log π_θ(a_t)` then has the reverse-KL gradient in expectation, needs only the
log-probs of the sampled tokens (no full-vocabulary pass), and takes the add-ons of the papers:
G-OPD's reward scale λ and reference model, vOPD's control-variate baseline, and PPO-style
importance-ratio clipping when a rollout is reused.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def opd_advantage(
    student_logp: Tensor,
    teacher_logp: Tensor,
    ref_logp: Optional[Tensor] = None,
    lam: float = 1.0,
) -> Tensor:
    """Per-token advantage, detached.

    Plain OPD: A_t = log π_T(a_t) − log π_θ(a_t).
    G-OPD / ExOPD: A_t = λ·[log π_T(a_t) − log π_ref(a_t)] − [log π_θ(a_t) − log π_ref(a_t)],
    whose optimum is π* ∝ π_T^λ · π_ref^(1−λ); λ = 1 recovers plain OPD for any reference.
    """
    s, t = student_logp.detach().float(), teacher_logp.detach().float()
    if ref_logp is None:
        if lam != 1.0:
            raise ValueError("opd_advantage: λ != 1 needs a reference model's log-probs (ref_logp)")
        return t - s
    r = ref_logp.detach().float()
    return lam * (t - r) - (s - r)


def policy_gradient_loss(
    student_logp: Tensor,
    advantage: Tensor,
    baseline: Optional[Tensor] = None,
    old_logp: Optional[Tensor] = None,
    clip_eps: float = 0.2,
) -> Tensor:
    """Per-position policy-gradient loss (minimise it).

    On-policy: loss_t = −sg(A_t − b_t) · log π_θ(a_t), with the baseline b_t detached so the
    gradient stays unbiased (vOPD uses b_t = −KL(π_θ‖π_T)(s_t)).
    Reused rollout (old_logp given): ρ_t = π_θ(a_t)/π_old(a_t) and
    loss_t = −min(ρ_t·Â_t, clip(ρ_t, 1−ε, 1+ε)·Â_t), the PPO clipped surrogate.
    """
    adv = advantage.detach().float()
    if baseline is not None:
        adv = adv - baseline.detach().float()
    logp = student_logp.float()
    if old_logp is None:
        return -adv * logp
    ratio = torch.exp(logp - old_logp.detach().float())
    return -torch.minimum(ratio * adv, ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv)

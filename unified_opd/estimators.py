"""The sampled-token (policy-gradient) estimator of on-policy distillation.

At each position the student sampled `a_t`; the teacher's log-prob of that same token gives a
dense reward whose mean under the student is minus the reverse KL. The loss
`−sg(A_t − b_t) · log π_θ(a_t)` then has the reverse-KL gradient in expectation, needs only the
log-probs of the sampled tokens (no full-vocabulary pass), and takes the add-ons of the papers:
G-OPD's reward scale λ and reference model, vOPD's control-variate baseline, and PPO-style
importance-ratio clipping when a rollout is reused.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor


def opd_advantage(
    student_logp: Tensor,
    teacher_logp: Tensor,
    ref_logp: Optional[Tensor] = None,
    lam: Union[float, Tensor] = 1.0,
) -> Tensor:
    """Per-token advantage, detached. `lam` is a float or a per-position tensor (token-adaptive).

    Plain OPD: A_t = log π_T(a_t) − log π_θ(a_t).
    G-OPD / ExOPD: A_t = λ·[log π_T(a_t) − log π_ref(a_t)] − [log π_θ(a_t) − log π_ref(a_t)],
    whose optimum is π* ∝ π_T^λ · π_ref^(1−λ); λ = 1 recovers plain OPD for any reference.
    """
    s, t = student_logp.detach().float(), teacher_logp.detach().float()
    if ref_logp is None:
        if isinstance(lam, Tensor) or lam != 1.0:
            raise ValueError("opd_advantage: λ != 1 needs a reference model's log-probs (ref_logp)")
        return t - s
    r = ref_logp.detach().float()
    lam = lam.detach().float() if isinstance(lam, Tensor) else lam
    return lam * (t - r) - (s - r)


def sequence_kd_loss(student_logp: Tensor) -> Tensor:
    """Per-token loss of sequence-level knowledge distillation (SeqKD, Kim & Rush 2016):
    ℓ_t = −log π_θ(y_t | s_t) on the tokens of a sequence y ~ π_T sampled by the teacher, i.e.
    supervised fine-tuning on teacher samples. Its gradient needs neither the teacher's
    distribution nor an advantage; on the student's own samples it would only sharpen the student.
    """
    return -student_logp


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Per-position return over each row's own decisions: G_t = r_t + γ·G_{next(t)}.

    `rewards` are the `[N]` values at the positions where `mask` (`[B, T]`, bool) is true, in
    row-major order; next(t) is the row's next masked position (unmasked positions, such as an
    environment's text, neither add reward nor count as a step). γ = 0 gives back `rewards`
    (OPD's per-token advantage); γ = 1 gives the return-to-go, whose policy gradient is that of
    the sequence-level reverse KL, crediting a token with the mismatch of what follows it.
    """
    grid = torch.zeros(mask.shape, dtype=rewards.dtype, device=rewards.device)
    grid[mask] = rewards
    out = torch.zeros_like(grid)
    g = torch.zeros(mask.shape[0], dtype=rewards.dtype, device=rewards.device)
    for t in range(mask.shape[1] - 1, -1, -1):
        g = torch.where(mask[:, t], grid[:, t] + gamma * g, g)
        out[:, t] = g
    return out[mask]


def reward_advantage(outcome: Tensor, group_ids: Optional[Tensor] = None) -> Tensor:
    """The raw verifier reward as the trajectory advantage: A_i = r_i (no baseline).

    With r ∈ {0, 1} the outcome term becomes maximum likelihood on the correct rollouts only
    (SCOPE's correct-route term); `group_ids` is accepted for a uniform signature and unused.
    """
    return outcome.float()


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


def topk_reverse_kl(student_logp: Tensor, teacher_logp: Tensor, k: int) -> Tensor:
    """Reverse KL restricted to the student's k most likely tokens (vOPD's cheap value).

    KL_k(s) = Σ_{i ∈ top-k(π_θ)} π_θ(i)·[log π_θ(i) − log π_T(i)], over `[n, V]` log-probs -> `[n]`.
    No renormalisation: with k = V it is the full reverse KL, and it is used only as a detached
    baseline, so truncation changes the variance reduction, never the gradient's expectation.
    """
    k = min(int(k), student_logp.shape[-1])
    top, idx = student_logp.float().topk(k, dim=-1)
    t = teacher_logp.float().gather(-1, idx)
    return (top.exp() * (top - t)).sum(-1)


def grpo_advantage(outcome: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """GRPO's group-relative advantage per trajectory: A_i = (r_i − mean_g r) / (std_g r + eps).

    The mean and (population) standard deviation run over the trajectories sharing trajectory
    i's `group_id` (the samples of one prompt); a group whose rewards are all equal gets A = 0.
    """
    r = outcome.float()
    g = group_ids.long()
    _, inv = torch.unique(g, return_inverse=True)
    count = torch.zeros(int(inv.max()) + 1, device=r.device).index_add_(0, inv, torch.ones_like(r))
    mean = torch.zeros_like(count).index_add_(0, inv, r) / count
    var = torch.zeros_like(count).index_add_(0, inv, (r - mean[inv]) ** 2) / count
    return (r - mean[inv]) / (var.sqrt()[inv] + eps)


def outcome_pg_loss(student_logp: Tensor, trajectory_advantage: Tensor) -> Tensor:
    """The outcome (REINFORCE/GRPO) term per position: ℓ_t = −sg(A_{i(t)}) · log π_θ(a_t).

    `trajectory_advantage` is already gathered to the positions (`[N]`). With A_i = r_i ∈ {0, 1}
    it is the likelihood (MLE) of the correct rollouts; with the GRPO advantage it is GRPO's
    on-policy surrogate (the rollout is fresh, so the ratio is 1 and needs no clipping).
    """
    return -trajectory_advantage.detach().float() * student_logp.float()


def tv_adaptive_lam(tv: Tensor, lam_max: float, tv_target: float) -> Tensor:
    """AlignDistil-style token-adaptive extrapolation factor k_t for `pool([T, ref], [k, 1−k])`.

    k_t = clip(δ / TV(π_T, π_ref)(s_t), 1, k_max): where teacher and reference barely differ the
    logit direction z_T − z_ref is extrapolated up to k_max; where they already differ a lot
    (TV ≥ δ) the factor falls back to 1, the plain teacher, so a large step is never taken along
    a direction that already moves far.
    """
    return (tv_target / tv.float().clamp_min(1e-8)).clamp(1.0, float(lam_max))


def truncated_importance_weights(train_logp: Tensor, engine_logp: Tensor, cap: Optional[float]) -> Tuple[Tensor, Dict[str, float]]:
    """Truncated importance sampling (TIS) on the engine/trainer mismatch, detached.

    A rollout engine (vLLM) samples a_t from its own π_engine, which differs from the trained
    model's π_train by kernels and precision even with the same weights. Per token,
        ρ_t = π_train(a_t) / π_engine(a_t) = exp(log π_train(a_t) − log π_engine(a_t)),
        w_t = min(ρ_t, C),
    the weight TIS (Yao et al. 2025, "Your efficient RL framework secretly brings you
    off-policy RL training") puts on a sampled-token loss. `cap=None` measures only (w_t = 1).
    Returns `(w, metrics)`: the mean and max of ρ and the fraction of tokens with ρ > C.
    """
    ratio = torch.exp(train_logp.detach().float() - engine_logp.detach().float())
    metrics = {"is_ratio_mean": float(ratio.mean()), "is_ratio_max": float(ratio.max())}
    if cap is None:
        return torch.ones_like(ratio), metrics
    metrics["is_clip_frac"] = float((ratio > cap).float().mean())
    return ratio.clamp(max=cap), metrics

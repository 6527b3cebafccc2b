"""Turn-level weights of multi-turn OPD, registered as per-position weights (`objective.weights`).

* `tcod` -- TCOD temporal curriculum over trajectory depth: distil only the first k turns,
  k growing with the training step.
* `sod`  -- SOD step-wise reweighting: turns where the student is far from the teacher (where a
  bad step has already cascaded) are down-weighted.

Both read `step_ids` (the agent turn of each position) and keep the trainer free of recipe branches.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from unified_opd.errors import ConfigError
from unified_opd.weights import WEIGHTS, WeightInputs


def tcod_depth(step: int, max_steps: int, k0: int, k_max: int, ramp: float) -> int:
    """k(step) = k0 + ⌊(k_max − k0) · min(1, step / (ramp · max_steps))⌋: linear from k0 turns at
    step 0 to k_max turns once `ramp` of training has passed (ramp = 0: k_max from the start)."""
    progress = 1.0 if ramp <= 0 else min(1.0, step / (ramp * max(1, max_steps)))
    return k0 + math.floor((k_max - k0) * progress + 1e-9)


def depth_weights(step_ids: Tensor, k: int) -> Tensor:
    """w = 1[turn < k] · N / Σ 1[turn < k]: the first k turns only, renormalised so the loss is
    the mean over the kept positions (the objective divides by all N positions)."""
    keep = (step_ids < k).float()
    return keep * keep.numel() / keep.sum().clamp_min(1.0)


@WEIGHTS.register("tcod")
def tcod_weight(inputs: WeightInputs, k0: int = 1, k_max: int = 8, ramp: float = 0.5) -> Tensor:
    """TCOD: positions of turns ≥ k(step) get weight 0 (see `tcod_depth`, `depth_weights`)."""
    if not 1 <= k0 <= k_max:
        raise ConfigError(f"objective.weights.tcod: need 1 <= k0 <= k_max, got k0={k0}, k_max={k_max}")
    if not 0 <= ramp <= 1:
        raise ConfigError(f"objective.weights.tcod.ramp: expected a fraction of training in [0, 1], got {ramp}")
    k = tcod_depth(inputs.step, inputs.max_steps, int(k0), int(k_max), float(ramp))
    return depth_weights(inputs.step_ids, k)


def turn_softmax_weights(divergence: Tensor, batch_index: Tensor, step_ids: Tensor, tau: float) -> Tensor:
    """SOD step weights. With D̄_{b,t} the mean divergence over the positions of turn t of
    trajectory b, every position of that turn gets

        w = exp(−D̄_{b,t}/τ) · n_b / Σ_{p in b} exp(−D̄_{b,t(p)}/τ)

    i.e. a softmax over the trajectory's turns of −D̄/τ, renormalised so the mean weight over
    the trajectory's n_b positions is 1: low-divergence turns count more, high-divergence turns
    (the student has drifted off the teacher's support) count less; τ → ∞ gives plain OPD."""
    turns = int(step_ids.max()) + 1 if step_ids.numel() else 1
    group = batch_index.long() * turns + step_ids.long()
    n_groups = int(group.max()) + 1 if group.numel() else 1
    d = divergence.detach().float()
    total = torch.zeros(n_groups, device=d.device).index_add_(0, group, d)
    count = torch.zeros(n_groups, device=d.device).index_add_(0, group, torch.ones_like(d))
    mean_turn = total / count.clamp_min(1.0)
    per_position = mean_turn[group]
    # subtracting each trajectory's smallest turn divergence changes nothing after the
    # normalisation below, but keeps exp() from underflowing to 0/0
    n_traj = int(batch_index.max()) + 1 if batch_index.numel() else 1
    floor = torch.full((n_traj,), float("inf"), device=d.device).scatter_reduce(0, batch_index, per_position, "amin")
    raw = torch.exp(-(per_position - floor[batch_index]) / tau)
    raw_sum = torch.zeros(n_traj, device=d.device).index_add_(0, batch_index, raw)
    n_pos = torch.zeros(n_traj, device=d.device).index_add_(0, batch_index, torch.ones_like(raw))
    return raw * n_pos[batch_index] / raw_sum[batch_index]


@WEIGHTS.register("sod")
def sod_weight(inputs: WeightInputs, tau: float = 1.0) -> Tensor:
    """SOD: down-weight high-divergence turns (see `turn_softmax_weights`)."""
    if tau <= 0:
        raise ConfigError(f"objective.weights.sod.tau: expected a positive temperature, got {tau}")
    return turn_softmax_weights(inputs.divergence, inputs.batch_index, inputs.step_ids, float(tau))

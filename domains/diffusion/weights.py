"""Timestep weighting of the per-step loss, registered as the `timestep` per-position weight."""

from __future__ import annotations

from torch import Tensor

from unified_opd.errors import ConfigError
from unified_opd.weights import WEIGHTS, WeightInputs

SCHEDULES = ("uniform", "sigma", "one_minus_sigma")


def timestep_schedule(sigma: Tensor, schedule: str, power: float) -> Tensor:
    """w(σ) = b(σ)^power with b = 1 (uniform), σ (stress the early, noisy steps that set the layout)
    or 1 − σ (stress the late, detail steps)."""
    if schedule == "uniform":
        base = sigma.new_ones(sigma.shape)
    elif schedule == "sigma":
        base = sigma
    elif schedule == "one_minus_sigma":
        base = 1 - sigma
    else:
        raise ConfigError(f"objective.weights.timestep.schedule: expected one of {SCHEDULES}, got {schedule!r}")
    return base.clamp_min(0) ** power


@WEIGHTS.register("timestep")
def timestep_weight(inputs: WeightInputs, schedule: str = "sigma", power: float = 1.0) -> Tensor:
    """Per-step weight from the noise level σ of each transition (read from the diffusion rollout)."""
    view = inputs.rollout.student_view
    if not isinstance(view, dict) or "sigma" not in view:
        raise ConfigError("objective.weights: the 'timestep' weight needs a diffusion rollout (a view with 'sigma')")
    sigma = view["sigma"].to(inputs.batch_index.device)[inputs.batch_index, inputs.step_ids.long()]
    return timestep_schedule(sigma.float(), schedule, float(power))

"""Flow-matching transitions: the per-step Gaussian a rollout samples from and OPD compares.

Convention (diffusers' `FlowMatchEulerDiscreteScheduler`): x_σ = (1 − σ)·x₀ + σ·ε, the model
predicts the velocity v = ε − x₀, and sampling walks the scheduler's sigmas σ_0 = 1 > … > σ_S = 0
with Δσ = σ_{i+1} − σ_i < 0. Each step is a Gaussian x_{i+1} ~ N(μ_i, s_i²):

* SDE (Flow-GRPO's marginal-preserving sampler):  g = a·sqrt(σ / (1 − σ)),
  μ = x + [v + g²/(2σ)·(x + (1 − σ)·v)]·Δσ,   s = g·sqrt(−Δσ).
  At σ = 1 the (1 − σ) in g is clamped to (1 − σ_1), as Flow-GRPO does, so g stays finite.
* ODE (Euler, g = 0): μ = x + v·Δσ, and the *reference* std s = r·|Δσ|, so the per-step KL
  ‖μ_s − μ_t‖²/(2s²) is exactly velocity matching ‖v_s − v_t‖²/(2r²) at every step.
"""

from __future__ import annotations

import torch
from torch import Tensor

MODES = ("sde", "ode")


def sde_g(sigma: Tensor, sigma_1: float, noise_level: float) -> Tensor:
    """Diffusion coefficient g(σ) = a·sqrt(σ / max(1 − σ, 1 − σ_1)), with a = `noise_level`."""
    return noise_level * torch.sqrt(sigma / torch.clamp(1.0 - sigma, min=1.0 - sigma_1))


def transition_mean(x: Tensor, v: Tensor, sigma: Tensor, sigma_next: Tensor, g: Tensor) -> Tensor:
    """μ = x + [v + g²/(2σ)·(x + (1 − σ)·v)]·(σ' − σ); g = 0 gives the Euler step x + v·(σ' − σ).

    `sigma`, `sigma_next`, `g` are per-sample (shape `[n]`) and broadcast over x's event dims.
    """
    shape = (-1,) + (1,) * (x.dim() - 1)
    s, sn, gg = sigma.reshape(shape), sigma_next.reshape(shape), g.reshape(shape)
    dt = sn - s
    drift = v + gg**2 / (2 * s) * (x + (1 - s) * v)
    return x + drift * dt


def transition_std(sigma: Tensor, sigma_next: Tensor, g: Tensor, mode: str, ode_std: float) -> Tensor:
    """Per-step std: SDE s = g·sqrt(σ − σ'); ODE s = r·(σ − σ') with r = `ode_std`."""
    dsig = sigma - sigma_next
    if mode == "sde":
        return g * dsig.sqrt()
    return ode_std * dsig


def flow_matching_pair(x0: Tensor, noise: Tensor, sigma: Tensor):
    """Training pair of conditional flow matching: x_σ = (1 − σ)·x₀ + σ·ε and target v = ε − x₀."""
    s = sigma.reshape((-1,) + (1,) * (x0.dim() - 1))
    return (1 - s) * x0 + s * noise, noise - x0

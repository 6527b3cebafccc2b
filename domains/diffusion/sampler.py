"""Sampling a denoiser's own trajectory with the flow-matching SDE or ODE (see `sde.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from unified_opd.errors import ConfigError, require_one_of

from .sde import MODES, sde_g, transition_mean, transition_std


@dataclass(frozen=True)
class SamplerSpec:
    """num_steps: scheduler steps; mode: sde | ode; noise_level: the SDE's a; ode_std: the ODE's r."""

    num_steps: int
    mode: str = "sde"
    noise_level: float = 0.7
    ode_std: float = 0.1

    def __post_init__(self) -> None:
        require_one_of("rollout.mode", self.mode, MODES)
        if self.num_steps < 1:
            raise ConfigError(f"rollout.num_steps: expected a positive integer, got {self.num_steps}")
        if self.mode == "sde" and self.noise_level <= 0:
            raise ConfigError(f"rollout.noise_level: the SDE needs a positive noise level, got {self.noise_level}")
        if self.mode == "ode" and self.ode_std <= 0:
            raise ConfigError(f"rollout.ode_std: the ODE reference std must be positive, got {self.ode_std}")

    @classmethod
    def from_config(cls, rollout) -> "SamplerSpec":
        """The training sampler of the `rollout` config section (its values checked)."""
        return cls(num_steps=rollout.num_steps, mode=rollout.mode, noise_level=rollout.noise_level, ode_std=rollout.ode_std)


def scheduler_sigmas(scheduler, num_steps: int) -> Tensor:
    """σ_0 … σ_S (float32, S + 1 values) from the scheduler's own `set_timesteps`."""
    scheduler.set_timesteps(num_steps)
    return scheduler.sigmas.detach().float().cpu()


def step_coefficients(sigmas: Tensor, spec: SamplerSpec) -> Dict[str, Tensor]:
    """Per-step σ, σ', g and std `[S]` for a schedule `sigmas` `[S + 1]`."""
    sigma, sigma_next = sigmas[:-1], sigmas[1:]
    sigma_1 = float(sigmas[1]) if len(sigmas) > 2 else 0.0
    g = sde_g(sigma, sigma_1, spec.noise_level) if spec.mode == "sde" else torch.zeros_like(sigma)
    std = transition_std(sigma, sigma_next, g, spec.mode, spec.ode_std)
    return {"sigma": sigma, "sigma_next": sigma_next, "g": g, "std": std}


@dataclass
class Trajectory:
    """states x_i `[B, S, C, H, W]` visited, actions x_{i+1} `[B, S, C, H, W]` taken, the step
    coefficients `[B, S]`, and the image `[B, C, H, W]` (the last step's mean: no noise is added
    to the final output)."""

    states: Tensor
    actions: Tensor
    coeffs: Dict[str, Tensor]
    image: Tensor


@torch.no_grad()
def sample_trajectory(
    field: Callable[[Tensor, Tensor], Tensor],
    sigmas: Tensor,
    noise: Tensor,
    spec: SamplerSpec,
    generator: Optional[torch.Generator] = None,
) -> Trajectory:
    """Run the sampler from `noise` with the velocity field `field(x, σ)` (its conditions and
    guidance bound, see `Generator.field`); each step draws x_{i+1} ~ N(μ_i, s_i²)."""
    device = noise.device
    b = noise.shape[0]
    coeffs = {k: v.to(device).unsqueeze(0).expand(b, -1).contiguous() for k, v in step_coefficients(sigmas, spec).items()}
    x = noise
    states, actions = [], []
    mean = x
    for i in range(spec.num_steps):
        v = field(x, coeffs["sigma"][:, i])
        mean = transition_mean(x, v, coeffs["sigma"][:, i], coeffs["sigma_next"][:, i], coeffs["g"][:, i])
        if spec.mode == "sde":
            eps = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
            nxt = mean + coeffs["std"][:, i].reshape(-1, *([1] * (x.dim() - 1))) * eps
        else:
            nxt = mean
        states.append(x)
        actions.append(nxt)
        x = nxt
    return Trajectory(torch.stack(states, 1), torch.stack(actions, 1), coeffs, mean)


def sample_images(sample_fn: Callable[[Tensor, Tensor], Tensor], noise: Tensor, batch_size: int) -> Tensor:
    """`sample_fn(index, noise[index]) -> images` over chunks of `batch_size` rows."""
    out = []
    for i in range(0, len(noise), batch_size):
        index = torch.arange(i, min(i + batch_size, len(noise)))
        out.append(sample_fn(index, noise[index.to(noise.device)]))
    return torch.cat(out)

"""The diffusion student (`DiffusionPolicy`) and an in-process diffusion teacher.

A rollout is the student's own sampled trajectory: position i of trajectory b is the transition
x_i -> x_{i+1} at noise level σ_i. The student view holds the states x_i visited `[B, S, C, H, W]`,
the class labels `[B]`, and the step coefficients σ, σ', g, std `[B, S]`, so that student,
teacher and reference all evaluate their transition Gaussian at exactly these states.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

import torch
from torch import Tensor, nn

from unified_opd.distributions import Gaussian
from unified_opd.errors import UserError
from unified_opd.interfaces import Policy, Teacher
from unified_opd.rollout import Rollout

from .models import LatentSpec, save_denoiser, velocity
from .sampler import SamplerSpec, sample_trajectory, scheduler_sigmas
from .sde import transition_mean


def transition_distribution(model: nn.Module, num_train_timesteps: int, view: Dict[str, Tensor]) -> Gaussian:
    """The model's Gaussian transition N(μ(x_i), s_i²) at every visited state, mean `[B, S, C, H, W]`."""
    x = view["x"]
    b, s = x.shape[:2]
    flat = x.reshape(b * s, *x.shape[2:])
    coeff = {k: view[k].reshape(-1) for k in ("sigma", "sigma_next", "g")}
    labels = view["labels"].repeat_interleave(s)
    v = velocity(model, flat, coeff["sigma"], labels, num_train_timesteps)
    mean = transition_mean(flat, v, coeff["sigma"], coeff["sigma_next"], coeff["g"]).reshape(x.shape)
    return Gaussian(mean, view["std"].reshape(b, s, *([1] * (x.dim() - 2))).to(mean.dtype))


def check_view(view: Dict[str, Tensor], spec: LatentSpec, field: str) -> None:
    """The states and labels must fit the model that reads them."""
    got = tuple(view["x"].shape[2:])
    if got != spec.shape:
        raise UserError(f"{field}: the model takes latents {spec.shape} but the rollout's states are {got}")
    labels = view["labels"]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= spec.num_classes):
        raise UserError(f"{field}: the model knows class ids 0..{spec.num_classes - 1}, got {labels.tolist()}")


def record_classes(batch: Sequence[Any], num_classes: int) -> Tensor:
    """Class ids of a batch of records `{"class": int}`."""
    ids = []
    for r in batch:
        c = r.get("class") if isinstance(r, dict) else None
        if not isinstance(c, int) or not 0 <= c < num_classes:
            raise UserError(f"data.classes: a record's class must be an integer in 0..{num_classes - 1}, got {c!r}")
        ids.append(c)
    return torch.tensor(ids, dtype=torch.long)


class DiffusionPolicy(Policy):
    """A diffusers flow-matching denoiser sampling its own trajectories (SDE or ODE)."""

    def __init__(self, model: nn.Module, scheduler, spec: LatentSpec, sampler: SamplerSpec, num_samples: int, device):
        self.module = model.to(device)
        self.scheduler = scheduler
        self.spec = spec
        self.sampler = sampler
        self.num_samples = int(num_samples)
        self.device = torch.device(device)
        self.sigmas = scheduler_sigmas(scheduler, sampler.num_steps)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def rollout(self, batch: Sequence[Any]) -> Rollout:
        labels = record_classes(batch, self.spec.num_classes).repeat_interleave(self.num_samples).to(self.device)
        noise = torch.randn(len(labels), *self.spec.shape, device=self.device)
        traj = sample_trajectory(self.module, self.num_train_timesteps, self.sigmas, labels, noise, self.sampler)
        b, s = labels.shape[0], self.sampler.num_steps
        return Rollout(
            actions=traj.actions,
            loss_mask=torch.ones(b, s, dtype=torch.long, device=self.device),
            step_ids=torch.arange(s, device=self.device).expand(b, s).contiguous(),
            student_view={"x": traj.states, "labels": labels, **traj.coeffs},
            task=[str(c) for c in labels.tolist()],
            meta={"images": traj.image},
        )

    def distribution(self, rollout: Rollout) -> Gaussian:
        check_view(rollout.student_view, self.spec, "student.path")
        return transition_distribution(self.train_module, self.num_train_timesteps, rollout.student_view)

    def save(self, path: str) -> None:
        save_denoiser(self.module, self.scheduler, path)


class DiffusionTeacher(Teacher):
    """A denoiser scoring the student's transitions at the states the student visited; frozen
    here unless `freeze=False` (the student's own module, read live or frozen by the core)."""

    def __init__(self, model: nn.Module, num_train_timesteps: int, spec: LatentSpec, field: str, device, freeze: bool = True):
        self.model = model.to(device)
        if freeze:
            self.model.eval().requires_grad_(False)
        self.num_train_timesteps = int(num_train_timesteps)
        self.spec = spec
        self.field = field

    @torch.no_grad()
    def distribution(self, rollout: Rollout) -> Gaussian:
        view = rollout.view_for_teacher
        check_view(view, self.spec, self.field)
        return transition_distribution(self.model, self.num_train_timesteps, view)

"""The diffusion student (`DiffusionPolicy`) and an in-process diffusion teacher.

A rollout is the student's own sampled trajectory in latent space: position i of trajectory b is
the transition x_i -> x_{i+1} at noise level σ_i. The student view holds the states x_i visited
`[B, S, C, H, W]`, the conditions (`labels`: class ids `[B]`, or `prompts`: B strings), and the
step coefficients σ, σ', g, std `[B, S]`, so that student, teacher and reference all evaluate
their transition Gaussian at exactly these states, each under its own conditioning and guidance.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch
from torch import Tensor, nn

from unified_opd.distributions import Gaussian
from unified_opd.errors import UserError
from unified_opd.interfaces import Policy, Teacher
from unified_opd.rollout import Rollout

from .conditioning import Conditions, repeat_conditions
from .families import pipeline_sigmas
from .generator import Generator
from .models import LatentSpec
from .sampler import SamplerSpec, sample_trajectory
from .sde import transition_mean


def view_conditions(view: Dict[str, Any]) -> Conditions:
    """The rollout's conditions: class ids (`labels`) or prompts (`prompts`)."""
    return view["labels"] if "labels" in view else view["prompts"]


def condition_view(conditions: Conditions) -> Dict[str, Conditions]:
    return {"labels": conditions} if isinstance(conditions, Tensor) else {"prompts": list(conditions)}


def transition_distribution(generator: Generator, view: Dict[str, Any], guidance_scale: float,
                            module: Optional[nn.Module] = None) -> Gaussian:
    """The model's Gaussian transition N(μ(x_i), s_i²) at every visited state, mean `[B, S, C, H, W]`."""
    x = view["x"]
    b, s = x.shape[:2]
    flat = x.reshape(b * s, *x.shape[2:])
    coeff = {k: view[k].reshape(-1) for k in ("sigma", "sigma_next", "g")}
    field = generator.field(view_conditions(view), x.device, guidance_scale, module, repeat=s)
    v = field(flat, coeff["sigma"])
    mean = transition_mean(flat, v, coeff["sigma"], coeff["sigma_next"], coeff["g"]).reshape(x.shape)
    return Gaussian(mean, view["std"].reshape(b, s, *([1] * (x.dim() - 2))).to(mean.dtype))


def check_view(view: Dict[str, Any], generator: Generator, field: str) -> None:
    """The states and conditions must fit the model that reads them."""
    got = tuple(view["x"].shape[2:])
    if got != generator.spec.shape:
        raise UserError(f"{field}: the model takes latents {generator.spec.shape} but the rollout's states are {got}")
    generator.conditioner.check(view_conditions(view), field)


class DiffusionPolicy(Policy):
    """A flow-matching generator sampling its own latent trajectories (SDE or ODE), with
    classifier-free guidance `guidance_scale` (1 = a guidance-free student)."""

    def __init__(self, generator: Generator, sampler: SamplerSpec, num_samples: int, device, guidance_scale: float = 1.0):
        self.generator = generator
        self.module = generator.module.to(device)
        self.sampler = sampler
        self.num_samples = int(num_samples)
        self.device = torch.device(device)
        self.guidance_scale = float(guidance_scale)
        self.sigmas = pipeline_sigmas(generator.family, generator.scheduler, sampler.num_steps, self.module, self.spec.size)

    @property
    def spec(self) -> LatentSpec:
        return self.generator.spec

    @property
    def scheduler(self):
        return self.generator.scheduler

    @property
    def num_train_timesteps(self) -> int:
        return self.generator.num_train_timesteps

    def rollout(self, batch: Sequence[Any]) -> Rollout:
        conditioner = self.generator.conditioner
        conditions = repeat_conditions(conditioner.conditions(batch), self.num_samples)
        if isinstance(conditions, Tensor):
            conditions = conditions.to(self.device)
        noise = torch.randn(len(conditions), *self.spec.shape, device=self.device)
        field = self.generator.field(conditions, self.device, self.guidance_scale)
        traj = sample_trajectory(field, self.sigmas, noise, self.sampler)
        b, s = noise.shape[0], self.sampler.num_steps
        return Rollout(
            actions=traj.actions,
            loss_mask=torch.ones(b, s, dtype=torch.long, device=self.device),
            step_ids=torch.arange(s, device=self.device).expand(b, s).contiguous(),
            student_view={"x": traj.states, **condition_view(conditions), **traj.coeffs},
            task=[t for t in conditioner.tags(batch) for _ in range(self.num_samples)],
            meta={"images": traj.image},
        )

    def distribution(self, rollout: Rollout) -> Gaussian:
        check_view(rollout.student_view, self.generator, "student.path")
        return transition_distribution(self.generator, rollout.student_view, self.guidance_scale, self.train_module)

    def save(self, path: str) -> None:
        self.generator.save(path)


class DiffusionTeacher(Teacher):
    """A generator scoring the student's transitions at the states the student visited, under
    guidance `guidance_scale`; frozen here unless `freeze=False` (the student's own module, read
    live or frozen by the core), and computed by `module` when given (default: the generator's)."""

    def __init__(self, generator: Generator, field: str, device, guidance_scale: float = 1.0,
                 module: Optional[nn.Module] = None, freeze: bool = True):
        self.generator = generator
        self.module = (module if module is not None else generator.module).to(device)
        if freeze:
            self.module.eval().requires_grad_(False)
        self.guidance_scale = float(guidance_scale)
        self.field_name = field

    @property
    def spec(self) -> LatentSpec:
        return self.generator.spec

    def field(self, conditions: Conditions, device):
        """The teacher's guided velocity field under `conditions` (sampling: cold start, anchor, eval)."""
        return self.generator.field(conditions, device, self.guidance_scale, self.module)

    @torch.no_grad()
    def distribution(self, rollout: Rollout) -> Gaussian:
        view = rollout.view_for_teacher
        check_view(view, self.generator, self.field_name)
        return transition_distribution(self.generator, view, self.guidance_scale, self.module)

"""Flow-OPD's cold start and manifold anchor, both flow matching on teacher samples.

The teachers generate a fixed set of latents once (ODE, under `teacher.guidance_scale`, each
condition by its expert). The cold start fits the student to them for a few supervised steps
before OPD; the anchor adds `weight · flow_matching_loss` on a minibatch of them to every OPD
step (`Components.extra_loss`), keeping the student on the teachers' data manifold while it
follows their transitions. Flow matching trains the student's *conditional* velocity (no
guidance branch), whatever `student.guidance_scale` is.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import torch
from torch import Tensor, nn

from unified_opd.interfaces import Policy

from .conditioning import Conditions, index_conditions, repeat_conditions
from .policy import DiffusionPolicy, DiffusionTeacher
from .sampler import SamplerSpec, sample_images, sample_trajectory
from .zoo.flow_matching import flow_matching_loss, train_flow_matching


def _stack(parts: Sequence[Conditions]) -> Conditions:
    if isinstance(parts[0], Tensor):
        return torch.cat(list(parts))
    return [c for p in parts for c in p]


@torch.no_grad()
def teacher_samples(
    expert_for: Callable[[object], DiffusionTeacher],
    policy: DiffusionPolicy,
    conditions: Conditions,
    per_condition: int,
    seed: int,
    batch_size: int = 256,
) -> Tuple[Tensor, Conditions]:
    """`per_condition` ODE latents of every condition (a class id or a prompt) from its expert,
    on the student's schedule; returns the latents and their conditions."""
    g = torch.Generator(device=policy.device).manual_seed(seed)
    spec = SamplerSpec(num_steps=policy.sampler.num_steps, mode="ode")
    images, labels = [], []
    for i in range(len(conditions)):
        c = index_conditions(conditions, torch.tensor([i]))
        teacher = expert_for(c[0] if isinstance(c, list) else int(c[0]))
        rows = repeat_conditions(c, per_condition)
        if isinstance(rows, Tensor):
            rows = rows.to(policy.device)
        noise = torch.randn(per_condition, *policy.spec.shape, generator=g, device=policy.device)

        def run(index: Tensor, z: Tensor) -> Tensor:
            return sample_trajectory(teacher.field(index_conditions(rows, index), policy.device), policy.sigmas, z, spec).image

        images.append(sample_images(run, noise, batch_size))
        labels.append(rows)
    return torch.cat(images), _stack(labels)


def student_field_of(policy: DiffusionPolicy, conditions: Conditions):
    """`field_of(model, index)` for flow matching the student on rows of `conditions`."""

    def field_of(model: nn.Module, index: Tensor):
        return policy.generator.field(index_conditions(conditions, index), policy.device, 1.0, model)

    return field_of


def cold_start(policy: DiffusionPolicy, images: Tensor, conditions: Conditions, steps: int, lr: float, batch: int, seed: int) -> float:
    """Supervised flow matching of the student on teacher samples; returns the final loss."""
    loss = train_flow_matching(policy.module, images, student_field_of(policy, conditions), steps, batch, lr, seed, "cold start")
    policy.module.train()
    return loss


class AnchorLoss:
    """`extra_loss(policy, step) -> (weight · flow-matching loss on teacher samples, metrics)`.

    The minibatch and noise come from a generator seeded by (seed, step), so a resumed run draws
    the same anchor batches."""

    def __init__(self, images: Tensor, conditions: Conditions, weight: float, batch_size: int, seed: int):
        self.images, self.conditions = images, conditions
        self.weight = float(weight)
        self.batch_size = int(batch_size)
        self.seed = int(seed)

    def __call__(self, policy: Policy, step: int) -> Tuple[Tensor, Dict[str, float]]:
        g = torch.Generator(device=self.images.device).manual_seed(self.seed * 100003 + step)
        idx = torch.randint(len(self.images), (self.batch_size,), generator=g, device=self.images.device)
        field = student_field_of(policy, self.conditions)(policy.train_module, idx)
        loss = flow_matching_loss(field, self.images[idx], g)
        return self.weight * loss, {"anchor_fm": float(loss.detach())}

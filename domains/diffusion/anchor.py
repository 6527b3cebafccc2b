"""Flow-OPD's cold start and manifold anchor, both flow matching on teacher samples.

The teachers generate a fixed set of samples once (ODE, each class by its expert). The cold start
fits the student to them for a few supervised steps before OPD; the anchor adds
`weight · flow_matching_loss` on a minibatch of them to every OPD step (`Components.extra_loss`),
keeping the student on the teachers' data manifold while it follows their transitions.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import torch
from torch import Tensor

from unified_opd.interfaces import Policy

from .zoo.flow_matching import flow_matching_loss, train_flow_matching
from .policy import DiffusionPolicy, DiffusionTeacher
from .sampler import SamplerSpec, sample_images, sample_trajectory


@torch.no_grad()
def teacher_samples(
    expert_for_class: Callable[[int], DiffusionTeacher],
    policy: DiffusionPolicy,
    classes: Sequence[int],
    per_class: int,
    seed: int,
    batch_size: int = 256,
) -> Tuple[Tensor, Tensor]:
    """`per_class` ODE samples of every class from its expert, on the student's schedule."""
    g = torch.Generator(device=policy.device).manual_seed(seed)
    spec = SamplerSpec(num_steps=policy.sampler.num_steps, mode="ode")
    images, labels = [], []
    for c in classes:
        teacher = expert_for_class(c)
        y = torch.full((per_class,), c, dtype=torch.long, device=policy.device)
        noise = torch.randn(per_class, *policy.spec.shape, generator=g, device=policy.device)

        def run(lab: Tensor, z: Tensor) -> Tensor:
            return sample_trajectory(teacher.model, teacher.num_train_timesteps, policy.sigmas, lab, z, spec).image

        images.append(sample_images(run, y, noise, batch_size))
        labels.append(y)
    return torch.cat(images), torch.cat(labels)


def cold_start(policy: DiffusionPolicy, images: Tensor, labels: Tensor, steps: int, lr: float, batch: int, seed: int) -> float:
    """Supervised flow matching of the student on teacher samples; returns the final loss."""
    loss = train_flow_matching(
        policy.module, images, labels, policy.num_train_timesteps, steps, batch, lr, seed, "cold start"
    )
    policy.module.train()
    return loss


class AnchorLoss:
    """`extra_loss(policy, step) -> (weight · flow-matching loss on teacher samples, metrics)`.

    The minibatch and noise come from a generator seeded by (seed, step), so a resumed run draws
    the same anchor batches."""

    def __init__(self, images: Tensor, labels: Tensor, weight: float, batch_size: int, seed: int):
        self.images, self.labels = images, labels
        self.weight = float(weight)
        self.batch_size = int(batch_size)
        self.seed = int(seed)

    def __call__(self, policy: Policy, step: int) -> Tuple[Tensor, Dict[str, float]]:
        g = torch.Generator(device=self.images.device).manual_seed(self.seed * 100003 + step)
        idx = torch.randint(len(self.images), (self.batch_size,), generator=g, device=self.images.device)
        loss = flow_matching_loss(
            policy.train_module, self.images[idx], self.labels[idx], policy.num_train_timesteps, g
        )
        return self.weight * loss, {"anchor_fm": float(loss.detach())}

"""Evaluation of a diffusion student: a PNG grid of samples per eval (decoded by the pipeline's
VAE for latent generators) and, with a judge (`judges.py`), its figures for student and teachers.
Conditions are class ids or prompts; every sample is drawn from fixed noise, shared by student
and teachers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .metrics import grid_array, save_grid
from .conditioning import Conditions, index_conditions, repeat_conditions
from .policy import DiffusionPolicy, DiffusionTeacher
from .sampler import SamplerSpec, sample_images, sample_trajectory

Condition = Union[int, str]


class DiffusionEvaluator:
    """`evaluate(policy, step) -> metrics`; the experts' figures are computed once and cached."""

    def __init__(
        self,
        *,
        classes: Sequence[Condition],
        expert_for_class: Callable[[Condition], DiffusionTeacher],
        sampler: SamplerSpec,
        samples_per_class: int,
        batch_size: int,
        seed: int,
        grid_per_class: int,
        out_dir: Path,
        judge: Optional[Callable[[Tensor, Conditions, str], Dict[str, float]]] = None,
        teacher: bool = True,
        tensorboard: bool = False,
    ):
        self.classes = list(classes)
        self.expert_for_class = expert_for_class
        self.sampler = sampler
        self.per_class = samples_per_class
        self.batch_size = batch_size
        self.seed = seed
        self.grid_per_class = min(grid_per_class, samples_per_class)
        self.out_dir = Path(out_dir)
        self.judge = judge
        self.teacher = teacher
        self.teacher_metrics: Optional[Dict[str, float]] = None
        self.tensorboard = tensorboard
        self._tb = None

    # ------------------------------------------------------------------ sampling
    def _inputs(self, shape, device) -> Tuple[Conditions, Tensor]:
        if all(isinstance(c, int) for c in self.classes):
            conditions: Conditions = repeat_conditions(torch.tensor(self.classes), self.per_class).to(device)
        else:
            conditions = repeat_conditions(list(self.classes), self.per_class)
        return conditions, eval_noise(self.seed, len(conditions), shape).to(device)

    def _sample(self, field_of: Callable[[Conditions], Callable], sigmas: Tensor, conditions: Conditions, noise: Tensor) -> Tensor:
        g = torch.Generator(device=noise.device).manual_seed(self.seed + 1)

        def run(index: Tensor, z: Tensor) -> Tensor:
            return sample_trajectory(field_of(index_conditions(conditions, index)), sigmas, z, self.sampler, g).image

        return sample_images(run, noise, self.batch_size)

    def student_images(self, policy: DiffusionPolicy) -> Tuple[Tensor, Conditions]:
        """The student's evaluation latents (its own guidance) and their conditions."""
        conditions, noise = self._inputs(policy.spec.shape, policy.device)

        def field_of(c: Conditions):
            return policy.generator.field(c, policy.device, policy.guidance_scale)

        return self._sample(field_of, policy.sigmas, conditions, noise), conditions

    def teacher_images(self, policy: DiffusionPolicy) -> Tuple[Tensor, Conditions]:
        conditions, noise = self._inputs(policy.spec.shape, policy.device)
        images = torch.empty_like(noise)
        for k, c in enumerate(self.classes):
            t = self.expert_for_class(c)
            rows = torch.arange(k * self.per_class, (k + 1) * self.per_class)
            sub = index_conditions(conditions, rows)
            images[rows.to(noise.device)] = self._sample(lambda cc: t.field(cc, policy.device), policy.sigmas, sub, noise[rows.to(noise.device)])
        return images, conditions

    # ------------------------------------------------------------------ figures
    def _grid(self, images: Tensor, name: str, step: int) -> Path:
        """Rows: conditions; columns: the first `grid_per_class` samples of each (decoded images)."""
        keep = torch.arange(len(images)).reshape(len(self.classes), self.per_class)[:, : self.grid_per_class]
        path = self.out_dir / "samples" / f"{name}.png"
        grid = save_grid(images[keep.reshape(-1)], len(self.classes), path)
        if self.tensorboard:
            if self._tb is None:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))
                except ImportError:
                    self._tb = False
            if self._tb:
                self._tb.add_image(f"samples/{name.split('_')[0]}", grid_array(grid), step, dataformats="HWC")
                self._tb.flush()
        return path

    def _decode(self, policy: DiffusionPolicy, latents: Tensor) -> Tensor:
        """Images by the student's VAE, in chunks (teachers share its latent space: same spec)."""
        return torch.cat([policy.generator.decode(latents[i : i + self.batch_size]) for i in range(0, len(latents), self.batch_size)])

    @torch.no_grad()
    def __call__(self, policy: DiffusionPolicy, step: int) -> Dict[str, float]:
        images, labels = self.student_images(policy)
        images = self._decode(policy, images)
        self._grid(images, f"step_{step:06d}", step)
        metrics = self.judge(images, labels, "") if self.judge else {}
        if self.teacher and self.teacher_metrics is None:
            t_images, t_labels = self.teacher_images(policy)
            t_images = self._decode(policy, t_images)
            self._grid(t_images, "teacher", step)
            self.teacher_metrics = self.judge(t_images, t_labels, "teacher_") if self.judge else {}
        metrics.update(self.teacher_metrics or {})
        return metrics


def eval_noise(seed: int, n: int, shape) -> Tensor:
    """The fixed starting noise of every evaluation (CPU generator, so it is the same on any device);
    with `eval.sampler: ode`, an exported pipeline given these latents regenerates the eval images."""
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def eval_sampler(rollout: SamplerSpec, which: str) -> SamplerSpec:
    """The sampler of evaluation: the rollout's, or it switched to `ode` / `sde`."""
    if which == "rollout":
        return rollout
    return replace(rollout, mode=which)

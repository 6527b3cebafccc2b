"""`build(cfg, accelerator) -> Components` for the diffusion domain, and its registration."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict, List

import torch
from omegaconf import DictConfig

from unified_opd.domain import Components, register_domain
from unified_opd.errors import ConfigError, UserError
from unified_opd.teachers import PooledTeacher, RoutedTeacher
from unified_opd.zoo import resolve

from .anchor import AnchorLoss, cold_start, teacher_samples
from .classifier import load_classifier
from .config import DiffusionRunConfig
from .evaluation import DiffusionEvaluator, eval_sampler
from .models import LatentSpec, load_denoiser
from .policy import DiffusionPolicy, DiffusionTeacher
from .sampler import SamplerSpec

EVAL_SAMPLERS = ("rollout", "ode", "sde")
COMBINE = ("route", "pool")


def _check_compatible(student: LatentSpec, teacher: LatentSpec, field: str) -> None:
    if teacher.shape != student.shape:
        raise UserError(f"{field}: the teacher's latents are {teacher.shape} but the student's are {student.shape}")


def _experts(cfg: DictConfig, student: LatentSpec, device) -> List[tuple]:
    """[(teacher, classes)] with every expert checked against the student and the data classes."""
    if len(cfg.teacher.experts) == 0:
        raise ConfigError("teacher.experts: at least one expert teacher is required")
    out = []
    for i, e in enumerate(cfg.teacher.experts):
        field = f"teacher.experts[{i}].path"
        model, scheduler, spec = load_denoiser(resolve(e.path, field), field)
        _check_compatible(student, spec, field)
        classes = list(e.classes) or list(cfg.data.classes)
        bad = [c for c in classes if not 0 <= c < spec.num_classes]
        if bad:
            raise ConfigError(f"teacher.experts[{i}].classes: class ids {bad} are outside the expert's 0..{spec.num_classes - 1}")
        out.append((DiffusionTeacher(model, scheduler.config.num_train_timesteps, spec, field, device), classes))
    return out


def _teacher(cfg: DictConfig, experts: List[tuple]):
    if cfg.teacher.combine not in COMBINE:
        raise ConfigError(f"teacher.combine: expected one of {COMBINE}, got {cfg.teacher.combine!r}")
    if cfg.teacher.combine == "pool":
        weights = list(cfg.teacher.pool_weights) or [1.0 / len(experts)] * len(experts)
        if len(weights) != len(experts):
            raise ConfigError(f"teacher.pool_weights: expected {len(experts)} weights (one per expert), got {len(weights)}")
        return PooledTeacher([t for t, _ in experts], weights)
    routes: Dict[str, DiffusionTeacher] = {}
    for t, classes in experts:
        for c in classes:
            routes.setdefault(str(c), t)
    return RoutedTeacher(routes)


def build(cfg: DictConfig, accelerator) -> Components:
    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    device = accelerator.device
    model, scheduler, spec = load_denoiser(resolve(cfg.student.path, "student.path"), "student.path")
    classes = list(cfg.data.classes)
    bad = [c for c in classes if not 0 <= c < spec.num_classes]
    if not classes or bad:
        raise ConfigError(f"data.classes: expected class ids in 0..{spec.num_classes - 1}, got {classes}")
    r = cfg.rollout
    sampler = SamplerSpec(num_steps=r.num_steps, mode=r.mode, noise_level=r.noise_level, ode_std=r.ode_std)
    if r.num_samples < 1:
        raise ConfigError(f"rollout.num_samples: expected a positive integer, got {r.num_samples}")
    policy = DiffusionPolicy(model, scheduler, spec, sampler, r.num_samples, device)
    experts = _experts(cfg, spec, device)
    uncovered = [c for c in classes if not any(c in cl for _, cl in experts)]
    if uncovered:
        raise ConfigError(f"teacher.experts: no expert teaches class(es) {uncovered}")

    def expert_for_class(c: int) -> DiffusionTeacher:
        return next(t for t, cl in experts if c in cl)

    teacher = _teacher(cfg, experts)
    seed = int(cfg.trainer.seed)
    extra_loss = None
    if cfg.anchor.weight > 0 or cfg.cold_start.steps > 0:
        images, labels = teacher_samples(expert_for_class, policy, classes, cfg.anchor.samples_per_class, seed)
        if cfg.cold_start.steps > 0:
            c = cfg.cold_start
            cold_start(policy, images, labels, c.steps, c.lr, c.batch_size, seed)
        if cfg.anchor.weight > 0:
            extra_loss = AnchorLoss(images, labels, cfg.anchor.weight, cfg.anchor.batch_size, seed)
    reference = None
    if cfg.teacher.reference is not None:
        if cfg.teacher.reference != "student":
            raise ConfigError(f"teacher.reference: expected 'student' (the frozen initial student), got {cfg.teacher.reference!r}")
        frozen = copy.deepcopy(policy.module)
        reference = DiffusionTeacher(frozen, policy.num_train_timesteps, spec, "teacher.reference", device)
    return Components(
        policy=policy,
        teacher=teacher,
        train_records=[{"class": c, "task": str(c)} for c in classes],
        evaluate=_evaluator(cfg, policy, experts, expert_for_class),
        reference=reference,
        extra_loss=extra_loss,
        summary_keys=["acc", "fd", "teacher_acc", "teacher_fd"],
    )


def _evaluator(cfg: DictConfig, policy: DiffusionPolicy, experts, expert_for_class) -> DiffusionEvaluator:
    e = cfg.eval
    if e.sampler not in EVAL_SAMPLERS:
        raise ConfigError(f"eval.sampler: expected one of {EVAL_SAMPLERS}, got {e.sampler!r}")
    classifier, real = None, None
    if e.classifier is not None:
        from .digits import digits_images

        classifier = load_classifier(resolve(e.classifier, "eval.classifier"), "eval.classifier")
        real, _ = digits_images(policy.spec.size)
        if real.shape[1:] != policy.spec.shape:
            raise UserError(f"eval.classifier: it judges {tuple(real.shape[1:])} digits but the student makes {policy.spec.shape}")
    return DiffusionEvaluator(
        classes=list(cfg.data.classes),
        groups=[list(cl) for _, cl in experts],
        expert_for_class=expert_for_class,
        sampler=eval_sampler(policy.sampler, e.sampler),
        samples_per_class=e.samples_per_class,
        batch_size=e.batch_size,
        seed=e.seed,
        grid_per_class=e.grid_per_class,
        out_dir=Path(cfg.trainer.output_dir),
        classifier=classifier,
        real_images=real,
        teacher=e.teacher,
        tensorboard=bool(cfg.trainer.tensorboard),
    )


register_domain("diffusion", DiffusionRunConfig, build, distribution="gaussian")

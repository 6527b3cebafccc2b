"""`build(cfg, accelerator) -> Components` for the diffusion domain."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Tuple

import torch
from omegaconf import DictConfig

from unified_opd.domain import Components
from unified_opd.errors import ConfigError, UserError
from unified_opd.teacher_kinds import TeacherContext, build_reference, build_teacher
from unified_opd.zoo import resolve

from .anchor import AnchorLoss, cold_start, teacher_samples
from .config import check
from .evaluate import DiffusionEvaluator, eval_sampler
from .models import load_denoiser
from .policy import DiffusionPolicy, DiffusionTeacher
from .sampler import SamplerSpec
from .teachers import DiffusionTeacherSource, expert_classes
from .zoo.classifier import load_classifier
from .zoo.digits import digits_images

Experts = List[Tuple[DiffusionTeacher, List[int]]]


def _experts(cfg: DictConfig, ctx: TeacherContext) -> Experts:
    """[(teacher, classes)], every expert loaded once (the teacher kinds reuse it) and checked
    against the student and the data classes."""
    out = []
    for i, e in enumerate(cfg.teacher.experts):
        teacher = ctx.load(e.path, f"teacher.experts[{i}].path")
        classes = expert_classes(e, cfg.data.classes)
        bad = [c for c in classes if not 0 <= c < teacher.spec.num_classes]
        if bad:
            raise ConfigError(f"teacher.experts[{i}].classes: class ids {bad} are outside the expert's 0..{teacher.spec.num_classes - 1}")
        out.append((teacher, classes))
    uncovered = [c for c in cfg.data.classes if not any(c in cl for _, cl in out)]
    if uncovered:
        raise ConfigError(f"teacher.experts: no expert teaches class(es) {uncovered}")
    return out


def _policy(cfg: DictConfig, device) -> DiffusionPolicy:
    model, scheduler, spec = load_denoiser(resolve(cfg.student.path, "student.path"), "student.path")
    classes = list(cfg.data.classes)
    bad = [c for c in classes if not 0 <= c < spec.num_classes]
    if not classes or bad:
        raise ConfigError(f"data.classes: expected class ids in 0..{spec.num_classes - 1}, got {classes}")
    return DiffusionPolicy(model, scheduler, spec, SamplerSpec.from_config(cfg.rollout), cfg.rollout.num_samples, device)


def build(cfg: DictConfig, accelerator) -> Components:
    check(cfg)  # the trainer runs it before build too; a direct call is checked all the same
    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    policy = _policy(cfg, accelerator.device)
    ctx = TeacherContext(cfg, policy, DiffusionTeacherSource(cfg, policy))
    experts = _experts(cfg, ctx)

    def expert_for_class(c: int) -> DiffusionTeacher:
        return next(t for t, cl in experts if c in cl)

    seed = int(cfg.trainer.seed)
    extra_loss = None
    if cfg.anchor.weight > 0 or cfg.cold_start.steps > 0:
        images, labels = teacher_samples(expert_for_class, policy, list(cfg.data.classes), cfg.anchor.samples_per_class, seed)
        if cfg.cold_start.steps > 0:
            c = cfg.cold_start
            cold_start(policy, images, labels, c.steps, c.lr, c.batch_size, seed)
        if cfg.anchor.weight > 0:
            extra_loss = AnchorLoss(images, labels, cfg.anchor.weight, cfg.anchor.batch_size, seed)
    # after the cold start: a self-teacher's copy and the "student" reference are the warm student
    built = build_teacher(ctx)
    return Components(
        policy=policy,
        teacher=built.teacher,
        train_records=[{"class": c, "task": str(c)} for c in cfg.data.classes],
        evaluate=_evaluator(cfg, policy, experts, expert_for_class),
        reference=build_reference(ctx),
        extra_loss=extra_loss,
        summary_keys=["acc", "fd", "teacher_acc", "teacher_fd"],
    )


def _evaluator(cfg: DictConfig, policy: DiffusionPolicy, experts: Experts, expert_for_class: Callable) -> DiffusionEvaluator:
    e = cfg.eval
    classifier, real = None, None
    if e.classifier is not None:
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
        tensorboard="tensorboard" in cfg.trainer.report_to,
    )

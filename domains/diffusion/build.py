"""`build(cfg, accelerator) -> Components` for the diffusion domain."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch
from omegaconf import DictConfig

from unified_opd.data_sources import read_records
from unified_opd.domain import Components
from unified_opd.errors import ConfigError, UserError
from unified_opd.lora import apply_lora
from unified_opd.teacher_kinds import TeacherContext, build_reference, build_teacher
from unified_opd.zoo import resolve

from .anchor import AnchorLoss, cold_start, teacher_samples
from .config import check, check_text_inputs
from .evaluate import DiffusionEvaluator, eval_sampler
from .generator import load_generator
from .judges import DigitJudge, load_attribute_judge
from .policy import DiffusionPolicy, DiffusionTeacher
from .sampler import SamplerSpec
from .teachers import DiffusionTeacherSource, expert_tags
from .zoo.classifier import load_classifier
from .zoo.digits import digits_images

Experts = List[Tuple[DiffusionTeacher, List[str]]]


def _policy(cfg: DictConfig, device) -> DiffusionPolicy:
    s = cfg.student
    gen = load_generator(resolve(s.path, "student.path"), "student.path", device, s.resolution, s.max_sequence_length)
    gen.check_guidance(s.guidance_scale, "student.guidance_scale")
    if s.lora.r:
        gen.module = apply_lora(gen.module, s.lora)
    return DiffusionPolicy(gen, SamplerSpec.from_config(cfg.rollout), cfg.rollout.num_samples, device, s.guidance_scale)


def train_records(cfg: DictConfig, policy: DiffusionPolicy) -> List[Dict[str, Any]]:
    """Class records `{"class", "task"}` for a class-conditioned student; prompt records
    `{"prompt"[, "task"]}` from `data.prompts` or `data.path` for a text-to-image one."""
    if policy.generator.conditioner.kind == "class":
        n = policy.spec.num_classes
        classes = list(cfg.data.classes)
        if not classes or any(not 0 <= c < n for c in classes):
            raise ConfigError(f"data.classes: expected class ids in 0..{n - 1}, got {classes}")
        return [{"class": c, "task": str(c)} for c in classes]
    if cfg.data.path:
        records = read_records(resolve(cfg.data.path, "data.path"), ("prompt",), "data.path")
    else:
        records = [{"prompt": p} for p in cfg.data.prompts]
    if not records:
        raise ConfigError(f"data.path: {cfg.data.path} holds no records")
    return records


def _conditions(records: List[Dict[str, Any]], policy: DiffusionPolicy) -> Tuple[list, Dict[Any, str]]:
    """The distinct conditions (class ids or prompts, in record order) and each one's routing tag."""
    conditioner = policy.generator.conditioner
    key = "class" if conditioner.kind == "class" else "prompt"
    tag_of: Dict[Any, str] = {}
    for r, tag in zip(records, conditioner.tags(records)):
        tag_of.setdefault(r[key], tag)
    return list(tag_of), tag_of


def _experts(cfg: DictConfig, ctx: TeacherContext, tags: List[str]) -> Experts:
    """[(teacher, tags)], every expert loaded once (the teacher kinds reuse it) and checked
    against the student and the data."""
    out = []
    for i, e in enumerate(cfg.teacher.experts):
        teacher = ctx.load(e.path, f"teacher.experts[{i}].path")
        n = teacher.spec.num_classes
        bad = [c for c in e.classes if not 0 <= c < n]
        if bad:
            raise ConfigError(f"teacher.experts[{i}].classes: class ids {bad} are outside the expert's 0..{n - 1}")
        out.append((teacher, expert_tags(e, tags)))
    uncovered = [t for t in tags if not any(t in tl for _, tl in out)]
    if uncovered:
        what = "class(es)" if ctx.policy.generator.conditioner.kind == "class" else "task tag(s)"
        raise ConfigError(f"teacher.experts: no expert teaches {what} {uncovered}")
    return out


def build(cfg: DictConfig, accelerator) -> Components:
    check(cfg)  # the trainer runs it before build too; a direct call is checked all the same
    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    policy = _policy(cfg, accelerator.device)
    check_text_inputs(cfg, policy.generator.conditioner.kind == "prompt")
    records = train_records(cfg, policy)
    conditions, tag_of = _conditions(records, policy)
    tags = list(dict.fromkeys(tag_of.values()))
    ctx = TeacherContext(cfg, policy, DiffusionTeacherSource(cfg, policy, tags))
    experts = _experts(cfg, ctx, tags)

    def expert_for(condition: Any) -> DiffusionTeacher:
        """The expert of a condition's tag (an evaluation prompt outside the data: tag "")."""
        tag = tag_of.get(condition, "")
        found = next((t for t, tl in experts if tag in tl), None)
        if found is None:
            raise ConfigError(f"teacher.experts: no expert teaches {condition!r} (tag {tag!r}); list the tag or leave one expert's tasks empty")
        return found

    extra_loss = _cold_start_and_anchor(cfg, policy, expert_for, conditions)
    # after the cold start: a self-teacher's copy and the "student" reference are the warm student
    built = build_teacher(ctx)
    return Components(
        policy=policy,
        teacher=built.teacher,
        train_records=records,
        evaluate=_evaluator(cfg, policy, experts, expert_for, conditions),
        reference=build_reference(ctx),
        extra_loss=extra_loss,
        summary_keys=["acc", "score", "fd", "teacher_acc", "teacher_score", "teacher_fd"],
    )


def _cold_start_and_anchor(cfg: DictConfig, policy: DiffusionPolicy, expert_for: Callable, conditions: list):
    """Runs the cold start (if any) and returns the anchor loss (or None)."""
    if cfg.anchor.weight <= 0 and cfg.cold_start.steps <= 0:
        return None
    cond = torch.tensor(conditions) if isinstance(conditions[0], int) else conditions
    seed = int(cfg.trainer.seed)
    latents, rows = teacher_samples(expert_for, policy, cond, cfg.anchor.samples_per_class, seed)
    if cfg.cold_start.steps > 0:
        c = cfg.cold_start
        cold_start(policy, latents, rows, c.steps, c.lr, c.batch_size, seed)
    if cfg.anchor.weight > 0:
        return AnchorLoss(latents, rows, cfg.anchor.weight, cfg.anchor.batch_size, seed)
    return None


def _judge(cfg: DictConfig, policy: DiffusionPolicy, experts: Experts, shown: list):
    """The eval judge: the digit classifier for class conditions, an attribute judge for prompts."""
    path = cfg.eval.classifier
    if path is None:
        return None
    resolved = resolve(path, "eval.classifier")
    classifier = load_classifier(resolved, "eval.classifier")
    if policy.generator.conditioner.kind == "prompt":
        return load_attribute_judge(resolved, "eval.classifier", classifier)
    real, _ = digits_images(policy.spec.size)
    if real.shape[1:] != policy.spec.shape:
        raise UserError(f"eval.classifier: it judges {tuple(real.shape[1:])} digits but the student makes {policy.spec.shape}")
    return DigitJudge(classifier, real, [[int(t) for t in tl if t] for _, tl in experts], shown)


def _evaluator(cfg: DictConfig, policy: DiffusionPolicy, experts: Experts, expert_for: Callable, conditions: list) -> DiffusionEvaluator:
    e = cfg.eval
    text = policy.generator.conditioner.kind == "prompt"
    shown = (list(e.prompts) or conditions[: e.max_prompts]) if text else list(cfg.data.classes)
    return DiffusionEvaluator(
        classes=shown,
        expert_for_class=expert_for,
        sampler=eval_sampler(policy.sampler, e.sampler),
        samples_per_class=e.samples_per_class,
        batch_size=e.batch_size,
        seed=e.seed,
        grid_per_class=e.grid_per_class,
        out_dir=Path(cfg.trainer.output_dir),
        judge=_judge(cfg, policy, experts, shown),
        teacher=e.teacher,
        tensorboard="tensorboard" in cfg.trainer.report_to,
    )

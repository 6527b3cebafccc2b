"""`build(cfg, accelerator) -> Components` for the vision domain."""

from __future__ import annotations

from accelerate import Accelerator
from omegaconf import DictConfig

from unified_opd.data import VERIFIERS
from unified_opd.domain import Components
from unified_opd.domains.text.generation import Sampling
from unified_opd.domains.text.models import check_same_vocabulary
from unified_opd.errors import ConfigError
from unified_opd.interfaces import Teacher
from unified_opd.zoo import check_local_paths, resolve

from .crops import Cropper
from .data import load_records
from .evaluate import make_evaluator
from .generation import ViewBuilder
from .models import load_vision_lm
from .policy import EmaSelfTeacher, LiveSelfTeacher, VisionPolicy, VisionTeacher

VIEWS = ("crop", "full")
SOURCES = ("live", "frozen", "ema")


def check_rollout(r) -> None:
    for key in ("batch_size", "num_samples", "max_new_tokens"):
        if r[key] < 1:
            raise ConfigError(f"rollout.{key}: expected a positive integer, got {r[key]}")
    if r.temperature <= 0:
        raise ConfigError(f"rollout.temperature: expected a positive number, got {r.temperature}")


def check_teacher(t) -> None:
    if t.view not in VIEWS:
        raise ConfigError(f"teacher.view: expected one of {VIEWS}, got {t.view!r}")
    if t.path is None and t.view == "full":
        raise ConfigError("teacher.path: view=full needs a separate teacher model (the student on its own view is itself)")
    if t.path is None and t.source not in SOURCES:
        raise ConfigError(f"teacher.source: expected one of {SOURCES}, got {t.source!r}")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"teacher.ema_decay: expected a number in [0, 1), got {t.ema_decay}")


def build(cfg: DictConfig, accelerator: Accelerator) -> Components:
    VERIFIERS.get(cfg.data.verifier, "data.verifier")
    check_rollout(cfg.rollout)
    check_teacher(cfg.teacher)
    check_local_paths(
        {"data.path": cfg.data.path, "data.eval_path": cfg.data.eval_path, "student.path": cfg.student.path, "teacher.path": cfg.teacher.path}
    )
    cropper = Cropper(cfg.teacher, cfg.data)
    # crop teachers need a valid box on every training record; evaluation always reports crop accuracy
    records, _ = load_records(resolve(cfg.data.path, "data.path"), cfg.data, cropper if cfg.teacher.view == "crop" else None)
    eval_path = cfg.data.eval_path or cfg.data.path
    eval_records, _ = load_records(resolve(eval_path, "data.eval_path"), cfg.data, cropper, "data.eval_path")

    s = cfg.student
    lm, processor = load_vision_lm(s.path, s.dtype, s.trust_remote_code, "student")
    device = accelerator.device
    r = cfg.rollout
    sampling = Sampling(num_samples=r.num_samples, max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k)
    t = cfg.teacher
    teacher: Teacher
    if t.path is not None:
        t_lm, t_processor = load_vision_lm(t.path, t.dtype, t.trust_remote_code, "teacher")
        check_same_vocabulary(processor.tokenizer, t_processor.tokenizer, lm, t_lm, "teacher")
        view = ViewBuilder(t_processor, cfg.data, cropper if t.view == "crop" else None)
        policy = VisionPolicy(lm.to(device), processor, cfg.data, sampling, s.lazy_logits, view)
        teacher = VisionTeacher(t_lm.to(device), s.lazy_logits)
    else:
        policy = VisionPolicy(lm.to(device), processor, cfg.data, sampling, s.lazy_logits, ViewBuilder(processor, cfg.data, cropper))
        if t.source == "live":
            teacher = LiveSelfTeacher(policy)
        elif t.source == "ema":
            teacher = EmaSelfTeacher(policy, t.ema_decay)
        else:
            teacher = VisionTeacher.frozen_copy(policy)
    return Components(
        policy=policy,
        teacher=teacher,
        train_records=records,
        evaluate=make_evaluator(eval_records, teacher, cropper, cfg),
        summary_keys=["accuracy_full", "accuracy_crop", "kl_views"],
    )

"""`build(cfg, accelerator) -> Components` for the vision domain."""

from __future__ import annotations

from accelerate import Accelerator
from omegaconf import DictConfig

from unified_opd.domain import Components
from unified_opd.domains.lm import LMTeacher, Sampling, check_same_vocabulary, lm_teacher_view
from unified_opd.interfaces import Teacher
from unified_opd.zoo import check_local_paths, resolve

from .config import check
from .crops import Cropper
from .data import load_records
from .evaluate import make_evaluator
from .generation import ViewBuilder
from .models import load_vision_lm
from .policy import EmaSelfTeacher, VisionPolicy


def _self_teacher(policy: VisionPolicy, t) -> Teacher:
    """The student on the teacher view: its live weights, an EMA of them, or its initial weights frozen."""
    if t.source == "live":
        return lm_teacher_view(policy.module)
    if t.source == "ema":
        return EmaSelfTeacher(policy, t.ema_decay)
    return LMTeacher.frozen_copy(policy)


def build(cfg: DictConfig, accelerator: Accelerator) -> Components:
    check(cfg)
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
        teacher = LMTeacher(t_lm.to(device), s.lazy_logits)
    else:
        policy = VisionPolicy(lm.to(device), processor, cfg.data, sampling, s.lazy_logits, ViewBuilder(processor, cfg.data, cropper))
        teacher = _self_teacher(policy, t)
    return Components(
        policy=policy,
        teacher=teacher,
        train_records=records,
        evaluate=make_evaluator(eval_records, teacher, cropper, cfg),
        summary_keys=["accuracy_full", "accuracy_crop", "kl_views"],
    )

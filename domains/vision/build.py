"""`build(cfg, accelerator) -> Components` for the vision domain."""

from __future__ import annotations

from accelerate import Accelerator
from omegaconf import DictConfig

from unified_opd.domain import Components
from unified_opd.domains.lm import Sampling, load_student
from unified_opd.teacher_kinds import build_reference, build_teacher
from unified_opd.zoo import check_local_paths, resolve

from .config import check
from .crops import Cropper
from .data import load_records
from .evaluate import make_evaluator
from .generation import ViewBuilder
from .models import load_vision_lm
from .policy import VisionPolicy
from .teachers import teacher_context


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
    lm, processor = load_student(s, lambda path: load_vision_lm(path, s.dtype, s.trust_remote_code, "student"))
    device = accelerator.device
    r = cfg.rollout
    sampling = Sampling(num_samples=r.num_samples, max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k)
    policy = VisionPolicy(lm.to(device), processor, cfg.data, sampling, s.lazy_logits)
    teachers = teacher_context(cfg, policy, device)
    built = build_teacher(teachers)
    # a separate teacher reads the image through its own processor, the student's self-view through the student's
    t = cfg.teacher
    separate = t.kind == "model"
    view_processor = teachers.source.processors.get(t.path, processor) if separate else processor
    view_family = teachers.source.families.get(t.path) if separate else None
    policy.teacher_view = ViewBuilder(view_processor, cfg.data, cropper if t.view == "crop" else None, view_family)
    return Components(
        policy=policy,
        teacher=built.teacher,
        train_records=records,
        evaluate=make_evaluator(eval_records, built.eval_teacher, cropper, cfg),
        reference=build_reference(teachers),
        summary_keys=["accuracy_full", "accuracy_crop", "kl_views"],
    )

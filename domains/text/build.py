"""`build(cfg, accelerator) -> Components` for the text domain."""

from __future__ import annotations

from accelerate import Accelerator
from omegaconf import DictConfig

from unified_opd.data import read_jsonl
from unified_opd.domain import Components
from unified_opd.domains.lm import Sampling, load_causal_lm, max_context, reference_teacher
from unified_opd.zoo import check_local_paths, resolve

from .config import check
from .evaluate import make_evaluator
from .generation import check_prompts_fit
from .policy import TextPolicy
from .teachers import TeacherContext, build_teacher
from .views import view_builder


def _check_paths(cfg: DictConfig) -> None:
    t = cfg.teacher
    check_local_paths(
        {
            "data.path": cfg.data.path,
            "data.eval_path": cfg.data.eval_path,
            "student.path": cfg.student.path,
            "teacher.path": t.path,
            "teacher.reference": None if t.reference == "student" else t.reference,
            "teacher.cache.dir": t.cache.dir if t.kind == "cache" else None,
            **{f"teacher.experts.{k}": v for k, v in t.experts.items()},
            **{f"teacher.members[{i}]": v for i, v in enumerate(t.members)},
        }
    )


def build(cfg: DictConfig, accelerator: Accelerator) -> Components:
    check(cfg)
    _check_paths(cfg)
    view = view_builder(cfg.teacher.view)
    records = read_jsonl(resolve(cfg.data.path, "data.path"), (cfg.data.prompt_field,))
    eval_records = (
        read_jsonl(resolve(cfg.data.eval_path, "data.eval_path"), (cfg.data.prompt_field,), "data.eval_path")
        if cfg.data.eval_path
        else records
    )
    lm, tok = load_causal_lm(cfg.student.path, cfg.student.dtype, cfg.student.trust_remote_code, "student")
    check_prompts_fit(tok, records, cfg.data, max_context(lm), "data.path")
    if cfg.data.eval_path:
        check_prompts_fit(tok, eval_records, cfg.data, max_context(lm), "data.eval_path")
    device = accelerator.device
    r = cfg.rollout
    sampling = Sampling(
        num_samples=r.num_samples, max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k
    )
    policy = TextPolicy(lm.to(device), tok, cfg.data, sampling, cfg.student.lazy_logits, view)
    built = build_teacher(TeacherContext(cfg, policy, device))
    t = cfg.teacher
    reference = reference_teacher(t.reference, t.dtype, t.trust_remote_code, policy, device, cfg.student.lazy_logits)
    return Components(
        policy=policy,
        teacher=built.teacher,
        train_records=built.records or records,
        evaluate=make_evaluator(eval_records, built.eval_teacher, cfg, built.teacher_lm),
        reference=reference,
    )

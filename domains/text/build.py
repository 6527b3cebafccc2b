"""`build(cfg, accelerator) -> Components` for the text domain."""

from __future__ import annotations

from accelerate import Accelerator
from omegaconf import DictConfig

from unified_opd.data_sources import is_hub_dataset
from unified_opd.domain import Components
from unified_opd.domains.lm import Sampling, load_causal_lm, load_student, make_engine, max_context
from unified_opd.domains.lm.served import is_url
from unified_opd.teacher_kinds import build_reference, build_teacher
from unified_opd.zoo import check_local_paths

from .config import check
from .evaluate import make_evaluator
from .generation import check_prompts_fit
from .policy import TextPolicy
from .records import load_split
from .teachers import teacher_context
from .views import view_builder


def _check_paths(cfg: DictConfig) -> None:
    t = cfg.teacher
    paths = {
        # a Hub dataset name is not a local path; `data_sources` checks it can be fetched
        **{f"data.{k}": cfg.data[k] for k in ("path", "eval_path") if not is_hub_dataset(str(cfg.data[k]))},
        "student.path": cfg.student.path,
        "teacher.path": t.path,
        "teacher.reference": None if t.reference == "student" else t.reference,
        "teacher.cache.dir": t.cache.dir if t.kind == "cache" else None,
        **{f"teacher.experts.{k}": v for k, v in t.experts.items()},
        **{f"teacher.members[{i}]": v for i, v in enumerate(t.members)},
    }
    check_local_paths(
        {k: v for k, v in paths.items() if not is_url(v)},  # an endpoint URL is checked when the teacher connects
        models={"student.path": cfg.student.revision, "teacher.path": t.revision},
    )


def _eval_teachers(cfg: DictConfig, built):
    """What held-out evaluation measures against: the teacher for the KL and the teacher model for
    its own greedy accuracy; neither for a teacher with another tokenizer (its target is over
    aligned spans or ranks, not the student's next-token distribution)."""
    if cfg.teacher.tokenizer != "same":
        return None, None
    return built.eval_teacher, built.model.module.lm if built.model is not None else None


def build(cfg: DictConfig, accelerator: Accelerator) -> Components:
    check(cfg)
    _check_paths(cfg)
    view = view_builder(cfg.teacher.view)
    records = load_split(cfg.data)
    eval_records = load_split(cfg.data, "eval_path") if cfg.data.eval_path else records
    s = cfg.student
    lm, tok = load_student(s, lambda path: load_causal_lm(path, s.dtype, s.trust_remote_code, "student", s.revision))
    check_prompts_fit(tok, records, cfg.data, max_context(lm), "data.path")
    if cfg.data.eval_path:
        check_prompts_fit(tok, eval_records, cfg.data, max_context(lm), "data.eval_path")
    device = accelerator.device
    r = cfg.rollout
    sampling = Sampling(
        num_samples=r.num_samples, max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
        stop=tuple(r.stop),
    )
    lm = lm.to(device)
    policy = TextPolicy(lm, tok, cfg.data, sampling, cfg.student.lazy_logits, view, make_engine(r, s, lm, tok))
    teachers = teacher_context(cfg, policy, device)
    built = build_teacher(teachers)
    eval_teacher, teacher_lm = _eval_teachers(cfg, built)
    return Components(
        policy=policy,
        teacher=built.teacher,
        train_records=built.records or records,
        evaluate=make_evaluator(eval_records, eval_teacher, cfg, teacher_lm),
        reference=build_reference(teachers),
    )

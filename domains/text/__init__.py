"""Text domain: any Hugging Face causal LM as student and teacher.

Registers the `text` domain (config schema + builder) and the `arith` zoo entries.
"""

from __future__ import annotations

from accelerate import Accelerator
from omegaconf import DictConfig

from unified_opd.data import VERIFIERS, read_jsonl
from unified_opd.domain import Components, register_domain
from unified_opd.errors import ConfigError
from unified_opd.teacher_kinds import build_reference, build_teacher
from unified_opd.zoo import check_local_paths, resolve

from . import arith  # noqa: F401  (registers the zoo entries)
from . import cache  # noqa: F401  (registers the cache teacher and the cache writer)
from .config import TextRunConfig
from .evaluate import make_evaluator
from .generation import Sampling, check_prompts_fit, max_context
from .models import load_causal_lm
from .policy import TextPolicy
from .teachers import teacher_context
from .views import view_builder


def build(cfg: DictConfig, accelerator: Accelerator) -> Components:
    VERIFIERS.get(cfg.data.verifier, "data.verifier")
    r = cfg.rollout
    for key in ("batch_size", "num_samples", "max_new_tokens"):
        if r[key] < 1:
            raise ConfigError(f"rollout.{key}: expected a positive integer, got {r[key]}")
    if r.temperature <= 0:
        raise ConfigError(f"rollout.temperature: expected a positive number, got {r.temperature}")
    check_local_paths(
        {
            "data.path": cfg.data.path,
            "data.eval_path": cfg.data.eval_path,
            "student.path": cfg.student.path,
            "teacher.path": cfg.teacher.path,
            "teacher.reference": None if cfg.teacher.reference == "student" else cfg.teacher.reference,
            "teacher.cache.dir": cfg.teacher.cache.dir if cfg.teacher.kind == "cache" else None,
            **{f"teacher.experts.{k}": v for k, v in cfg.teacher.experts.items()},
            **{f"teacher.members[{i}]": v for i, v in enumerate(cfg.teacher.members)},
        }
    )
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
    sampling = Sampling(
        num_samples=r.num_samples, max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k
    )
    policy = TextPolicy(lm.to(device), tok, cfg.data, sampling, cfg.student.lazy_logits, view)
    teachers = teacher_context(cfg, policy, device)
    built = build_teacher(teachers)
    return Components(
        policy=policy,
        teacher=built.teacher,
        train_records=built.records or records,
        evaluate=make_evaluator(eval_records, built.eval_teacher, cfg, built.model.module.lm if built.model else None),
        reference=build_reference(teachers),
    )


register_domain("text", TextRunConfig, build)

"""Text domain: any Hugging Face causal LM as student and teacher.

Registers the `text` domain (config schema + builder) and the `arith` zoo entries.
"""

from __future__ import annotations

from accelerate import Accelerator
from omegaconf import DictConfig

from unified_opd.data import VERIFIERS, read_jsonl
from unified_opd.domain import Components, register_domain
from unified_opd.errors import ConfigError
from unified_opd.zoo import check_local_paths, resolve

from . import arith  # noqa: F401  (registers the zoo entries)
from .config import TextRunConfig
from .evaluate import make_evaluator
from .generation import Sampling
from .models import check_same_vocabulary, load_causal_lm
from .policy import TextPolicy, TextTeacher


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
        }
    )
    records = read_jsonl(resolve(cfg.data.path, "data.path"), (cfg.data.prompt_field,))
    eval_records = (
        read_jsonl(resolve(cfg.data.eval_path, "data.eval_path"), (cfg.data.prompt_field,), "data.eval_path")
        if cfg.data.eval_path
        else records
    )
    if cfg.teacher.path is None:
        raise ConfigError("teacher.path: required value is missing")
    lm, tok = load_causal_lm(cfg.student.path, cfg.student.dtype, cfg.student.trust_remote_code, "student")
    t_lm, t_tok = load_causal_lm(cfg.teacher.path, cfg.teacher.dtype, cfg.teacher.trust_remote_code, "teacher")
    check_same_vocabulary(tok, t_tok, lm, t_lm)
    device = accelerator.device
    sampling = Sampling(
        num_samples=r.num_samples, max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k
    )
    policy = TextPolicy(lm.to(device), tok, cfg.data, sampling, cfg.student.lazy_logits)
    teacher = TextTeacher(t_lm.to(device), cfg.student.lazy_logits)
    reference = None
    if cfg.teacher.reference == "student":
        reference = TextTeacher.frozen_copy(policy)
    elif cfg.teacher.reference is not None:
        ref_lm, ref_tok = load_causal_lm(cfg.teacher.reference, cfg.teacher.dtype, cfg.teacher.trust_remote_code, "teacher.reference")
        check_same_vocabulary(tok, ref_tok, lm, ref_lm, "teacher.reference")
        reference = TextTeacher(ref_lm.to(device), cfg.student.lazy_logits)
    return Components(
        policy=policy,
        teacher=teacher,
        train_records=records,
        evaluate=make_evaluator(eval_records, teacher, cfg),
        reference=reference,
    )


register_domain("text", TextRunConfig, build)

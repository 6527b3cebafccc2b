"""`build(cfg, accelerator) -> Components` for the agent domain."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf

from unified_opd.domain import Components
from unified_opd.domains.lm import Sampling, load_causal_lm, load_lm_teacher, max_context, reference_teacher
from unified_opd.errors import ConfigError
from unified_opd.zoo import check_local_paths

from .config import check
from .episodes import Limits, env_factory
from .evaluate import make_evaluator
from .policy import AgentPolicy
from .transcript import make_format


def build(cfg: DictConfig, accelerator: Accelerator) -> Components:
    check(cfg)
    make_env = env_factory(cfg.env.id, OmegaConf.to_container(cfg.env.kwargs, resolve=True))
    reference_path = None if cfg.teacher.reference == "student" else cfg.teacher.reference
    check_local_paths({"student.path": cfg.student.path, "teacher.path": cfg.teacher.path, "teacher.reference": reference_path})
    s, t = cfg.student, cfg.teacher
    device = accelerator.device
    lm, tok = load_causal_lm(s.path, s.dtype, s.trust_remote_code, "student")
    teacher = load_lm_teacher(t.path, t.dtype, t.trust_remote_code, "teacher", tok, lm, device, s.lazy_logits)
    r = cfg.rollout
    contexts = [c for c in (max_context(lm), max_context(teacher.module.lm), r.max_episode_tokens) if c]
    if not contexts:
        raise ConfigError("rollout.max_episode_tokens: the models declare no context length; set a token cap")
    limits = Limits(max_turns=r.max_turns, max_action_tokens=r.max_action_tokens, max_tokens=min(contexts))
    sampling = Sampling(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k)
    fmt = make_format(tok, r.chat_template, r.system_prompt)
    policy = AgentPolicy(lm.to(device), tok, fmt, make_env, sampling, limits, r.outcome, s.lazy_logits)
    reference = reference_teacher(t.reference, t.dtype, t.trust_remote_code, policy, device, s.lazy_logits)
    start = cfg.env.train_seed_start
    eval_seeds = list(range(cfg.env.eval_seed_start, cfg.env.eval_seed_start + cfg.eval.episodes))
    return Components(
        policy=policy,
        teacher=teacher,
        train_records=list(range(start, start + cfg.env.train_seeds)),
        evaluate=make_evaluator(eval_seeds, teacher, cfg),
        reference=reference,
        # no extra term: the hook carries the last rollout's episode figures (success, turns,
        # context overflows, env failures) into the training metrics without a core change
        extra_loss=lambda p, step: (torch.zeros((), device=device), dict(p.last_metrics)),
        summary_keys=["success_rate", "mean_return", "mean_turns", "teacher_success_rate"],
    )

"""Agent domain: multi-turn on-policy distillation of a causal LM acting in gymnasium text envs.

Registers the `agent` domain (config schema + builder), the `tcod` and `sod` per-position
weights, and the `keydoor`, `shop` and `toolcalc` zoo entries.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf

from unified_opd.domain import Components, register_domain
from unified_opd.domains.text.generation import Sampling
from unified_opd.domains.text.models import check_same_vocabulary, load_causal_lm
from unified_opd.domains.text.policy import TextTeacher
from unified_opd.errors import ConfigError
from unified_opd.zoo import check_local_paths

from . import weights  # noqa: F401  (registers tcod and sod)
from . import zoo  # noqa: F401  (registers the zoo entries)
from .config import AgentRunConfig
from .episodes import Limits, env_factory
from .evaluate import make_evaluator
from .policy import AgentPolicy
from .transcript import make_format

OUTCOMES = ("success", "return")


def _check(cfg: DictConfig) -> None:
    r, e = cfg.rollout, cfg.eval
    for key in ("batch_size", "max_action_tokens"):
        if r[key] < 1:
            raise ConfigError(f"rollout.{key}: expected a positive integer, got {r[key]}")
    for key in ("max_turns", "max_episode_tokens"):
        if r[key] < 0:
            raise ConfigError(f"rollout.{key}: expected 0 (no limit of its own) or a positive integer, got {r[key]}")
    if r.temperature <= 0:
        raise ConfigError(f"rollout.temperature: expected a positive number, got {r.temperature}")
    if r.outcome not in OUTCOMES:
        raise ConfigError(f"rollout.outcome: expected one of {OUTCOMES}, got {r.outcome!r}")
    if cfg.env.train_seeds < 1:
        raise ConfigError(f"env.train_seeds: expected a positive integer, got {cfg.env.train_seeds}")
    for key in ("episodes", "batch_size"):
        if e[key] < 1:
            raise ConfigError(f"eval.{key}: expected a positive integer, got {e[key]}")
    env = cfg.env
    if env.eval_seed_start < env.train_seed_start + env.train_seeds and env.train_seed_start < env.eval_seed_start + e.episodes:
        raise ConfigError(
            f"env.eval_seed_start: held-out seeds [{env.eval_seed_start}, {env.eval_seed_start + e.episodes}) overlap "
            f"the training seeds [{env.train_seed_start}, {env.train_seed_start + env.train_seeds})"
        )


def _context(lm) -> int:
    return int(getattr(lm.config, "max_position_embeddings", 0) or 0)


def build(cfg: DictConfig, accelerator: Accelerator) -> Components:
    _check(cfg)
    make_env = env_factory(cfg.env.id, OmegaConf.to_container(cfg.env.kwargs, resolve=True))
    check_local_paths({"student.path": cfg.student.path, "teacher.path": cfg.teacher.path})
    lm, tok = load_causal_lm(cfg.student.path, cfg.student.dtype, cfg.student.trust_remote_code, "student")
    t_lm, t_tok = load_causal_lm(cfg.teacher.path, cfg.teacher.dtype, cfg.teacher.trust_remote_code, "teacher")
    check_same_vocabulary(tok, t_tok, lm, t_lm)
    r = cfg.rollout
    contexts = [c for c in (_context(lm), _context(t_lm), r.max_episode_tokens) if c]
    if not contexts:
        raise ConfigError("rollout.max_episode_tokens: the models declare no context length; set a token cap")
    limits = Limits(max_turns=r.max_turns, max_action_tokens=r.max_action_tokens, max_tokens=min(contexts))
    sampling = Sampling(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k)
    device = accelerator.device
    fmt = make_format(tok, r.chat_template, r.system_prompt)
    policy = AgentPolicy(lm.to(device), tok, fmt, make_env, sampling, limits, r.outcome, cfg.student.lazy_logits)
    teacher = TextTeacher(t_lm.to(device), cfg.student.lazy_logits)
    start = cfg.env.train_seed_start
    eval_seeds = list(range(cfg.env.eval_seed_start, cfg.env.eval_seed_start + cfg.eval.episodes))
    return Components(
        policy=policy,
        teacher=teacher,
        train_records=list(range(start, start + cfg.env.train_seeds)),
        evaluate=make_evaluator(eval_seeds, teacher, cfg),
        # no extra term: the hook carries the last rollout's episode figures (success, turns,
        # context overflows, env failures) into the training metrics without a core change
        extra_loss=lambda p, step: (torch.zeros((), device=device), dict(p.last_metrics)),
        summary_keys=["success_rate", "mean_return", "mean_turns", "teacher_success_rate"],
    )


register_domain("agent", AgentRunConfig, build)

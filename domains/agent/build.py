"""`build(cfg, accelerator) -> Components` for the agent domain."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf

from unified_opd.domain import Components
from unified_opd.domains.lm import Sampling, load_causal_lm, load_student, make_engine, max_context, stop_ids
from unified_opd.errors import ConfigError
from unified_opd.teacher_kinds import build_reference, build_teacher
from unified_opd.zoo import check_local_paths

from .config import check
from .env_ids import env_factory
from .episodes import Limits
from .evaluate import make_evaluator
from .policy import AgentPolicy
from .teachers import teacher_context
from .transcript import make_format


def build(cfg: DictConfig, accelerator: Accelerator) -> Components:
    check(cfg)
    kwargs = OmegaConf.to_container(cfg.env.kwargs, resolve=True)
    make_env = env_factory(cfg.env.id, kwargs)
    eval_kwargs = OmegaConf.to_container(cfg.env.eval_kwargs, resolve=True)
    make_eval_env = env_factory(cfg.env.id, {**kwargs, **eval_kwargs}) if eval_kwargs else make_env
    reference_path = None if cfg.teacher.reference == "student" else cfg.teacher.reference
    t = cfg.teacher
    check_local_paths(
        {
            "student.path": cfg.student.path,
            "teacher.path": t.path,
            "teacher.reference": reference_path,
            **{f"teacher.members[{i}]": v for i, v in enumerate(t.members)},
        }
    )
    s, r = cfg.student, cfg.rollout
    device = accelerator.device
    lm, tok = load_student(s, lambda path: load_causal_lm(path, s.dtype, s.trust_remote_code, "student"))
    stops = [tok.decode([i]) for i in stop_ids(tok, lm)]
    fmt = make_format(tok, r.chat_template, r.system_prompt, stops, make_env.tools)
    sampling = Sampling(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k)
    # the episode limits depend on the teachers' context lengths, and loading a teacher needs the
    # policy (vocabulary check, self-views): the limits are set once the teachers are loaded
    lm = lm.to(device)
    policy = AgentPolicy(lm, tok, fmt, make_env, sampling, None, r.outcome, s.lazy_logits, make_engine(r, s, lm, tok))
    teachers = teacher_context(cfg, policy, device)
    built = build_teacher(teachers)
    teacher_lms = [m.module.lm for m in teachers.loaded.values()]
    contexts = [c for c in (max_context(lm), *map(max_context, teacher_lms), r.max_episode_tokens) if c]
    if not contexts:
        raise ConfigError("rollout.max_episode_tokens: the models declare no context length; set a token cap")
    policy.limits = Limits(max_turns=r.max_turns, max_action_tokens=r.max_action_tokens, max_tokens=min(contexts))
    start = cfg.env.train_seed_start
    eval_seeds = list(range(cfg.env.eval_seed_start, cfg.env.eval_seed_start + cfg.eval.episodes))
    return Components(
        policy=policy,
        teacher=built.teacher,
        train_records=list(range(start, start + cfg.env.train_seeds)),
        evaluate=make_evaluator(
            eval_seeds, built.eval_teacher, cfg, built.model.module.lm if built.model else None, make_eval_env
        ),
        reference=build_reference(teachers),
        # no extra term: the hook carries the last rollout's episode figures (success, turns,
        # context overflows, env failures) into the training metrics without a core change
        extra_loss=lambda p, step: (torch.zeros((), device=device), dict(p.last_metrics)),
        summary_keys=["success_rate", "mean_return", "mean_turns", "teacher_success_rate"],
    )

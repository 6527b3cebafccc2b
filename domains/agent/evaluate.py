"""Held-out evaluation of an agent: success rate, mean return and mean turns on unseen env seeds,
the teacher's figures (once per run), and the student's reverse KL to the teacher on its own
agent tokens."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch

from unified_opd.divergences import divergence
from unified_opd.domains.lm import Sampling
from unified_opd.interfaces import Teacher

from .episodes import summarise
from .policy import AgentPolicy, episodes_rollout


def make_evaluator(
    seeds: List[int], teacher: Teacher, cfg, teacher_lm=None, make_env: Optional[Callable] = None
) -> Callable[[AgentPolicy, int], Dict[str, float]]:
    """Returns evaluate(policy, step) on `make_env()` envs (default: the training envs); the
    teacher's own success needs one teacher model (`teacher_lm`)."""
    e, r = cfg.eval, cfg.rollout
    sampling = Sampling(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, greedy=e.greedy)
    reverse_kl = divergence("reverse_kl")
    cache: Dict[str, float] = {}

    def play_all(policy: AgentPolicy, lm) -> list:
        episodes = []
        for i in range(0, len(seeds), e.batch_size):
            episodes += policy.play(seeds[i : i + e.batch_size], sampling, lm, make_env)
        return episodes

    @torch.no_grad()
    def evaluate(policy: AgentPolicy, step: int) -> Dict[str, float]:
        episodes = play_all(policy, policy.lm)
        metrics = summarise(episodes)
        if e.kl:
            kl_sum, tokens = 0.0, 0
            device = next(policy.lm.parameters()).device
            for i in range(0, len(episodes), e.batch_size):
                ro = episodes_rollout(episodes[i : i + e.batch_size], policy.tokenizer.pad_token_id, device, "success")
                if ro.mask.any():
                    values = reverse_kl(policy.distribution(ro).select(ro.mask), teacher.distribution(ro).select(ro.mask))
                    kl_sum += float(values.sum())
                    tokens += int(ro.mask.sum())
            if tokens:
                metrics["reverse_kl"] = kl_sum / tokens
        if e.teacher and teacher_lm is not None:
            if not cache:
                cache.update(summarise(play_all(policy, teacher_lm), "teacher_"))
            metrics.update(cache)
        return metrics

    return evaluate

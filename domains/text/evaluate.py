"""Held-out evaluation of a text student: greedy accuracy, per-task accuracy, reverse KL to the teacher."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Dict, List, Optional

import torch

from unified_opd.divergences import divergence
from unified_opd.domains.lm import Sampling
from unified_opd.interfaces import Teacher

from .generation import generate_rollout
from .policy import TextPolicy


def make_evaluator(
    records: List[Dict[str, Any]], teacher: Optional[Teacher], cfg, teacher_lm=None
) -> Callable[[TextPolicy, int], Dict[str, float]]:
    """Returns evaluate(policy, step). KL is measured against `teacher` (any kind, skipped when
    None); the teacher's accuracy, from greedy generation with `teacher_lm`, on the first call only."""
    records = records[: cfg.eval.size]
    greedy = Sampling(num_samples=1, max_new_tokens=cfg.rollout.max_new_tokens, greedy=True, stop=tuple(cfg.rollout.stop))
    reverse_kl = divergence("reverse_kl")
    cache: Dict[str, float] = {}

    def accuracy_of(generate: Callable, tag: str) -> Dict[str, float]:
        hits: Dict[str, list] = defaultdict(list)
        kl_sum, kl_tokens = 0.0, 0
        for i in range(0, len(records), cfg.eval.batch_size):
            r = generate(records[i : i + cfg.eval.batch_size])
            if r.outcome is not None:
                for j, o in enumerate(r.outcome.tolist()):
                    hits["all"].append(o)
                    if r.task is not None:
                        hits[r.task[j]].append(o)
            if tag == "student" and teacher is not None and cfg.eval.kl:
                mask = r.mask
                values = reverse_kl(policy_ref[0].distribution(r).select(mask), teacher.distribution(r).select(mask))
                kl_sum += float(values.sum())
                kl_tokens += int(mask.sum())
        out = {}
        if hits:
            out["accuracy" if tag == "student" else "teacher_accuracy"] = sum(hits["all"]) / len(hits["all"])
            if tag == "student":
                out.update({f"accuracy/{k}": sum(v) / len(v) for k, v in sorted(hits.items()) if k != "all"})
        if kl_tokens:
            out["reverse_kl"] = kl_sum / kl_tokens
        return out

    policy_ref: List[TextPolicy] = []

    @torch.no_grad()
    def evaluate(policy: TextPolicy, step: int) -> Dict[str, float]:
        policy_ref[:] = [policy]
        metrics = accuracy_of(lambda recs: policy.rollout(recs, greedy), "student")
        if teacher_lm is not None and cfg.eval.teacher:
            if not cache:
                cache.update(
                    accuracy_of(
                        lambda recs: generate_rollout(teacher_lm, policy.tokenizer, recs, cfg.data, greedy),
                        "teacher",
                    )
                )
            metrics.update(cache)
        return metrics

    return evaluate

"""The text domain's side of the core teacher kinds (`unified_opd.teacher_kinds`).

`TextTeacherSource` is the LM layer's `LMTeacherSource` (load a causal-LM teacher, score rollouts
with a given module) plus scoring best_of's members
(greedy answer verified, likelihood of the reference answer). The `cache` kind (Lightning OPD) is
registered by `cache.py`.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Sequence, Tuple

import torch
from torch import Tensor

from unified_opd.domains.lm import LMTeacher, LMTeacherSource, Sampling
from unified_opd.errors import ConfigError
from unified_opd.teacher_kinds import TeacherContext

from .generation import format_prompts, generate_rollout
from .policy import TextPolicy


class TextTeacherSource(LMTeacherSource):
    """`LMTeacherSource` plus what kind best_of needs (per-prompt member scores, the prompt key)."""

    domain = "text"

    def record_key(self, record: Dict[str, Any]) -> str:
        data = self.cfg.data
        return record[data.prompt_field] if data.prompt_field in record else json.dumps(record[data.messages_field])

    def score_members(self, members: Sequence[LMTeacher], records: Sequence[Dict[str, Any]]) -> Tuple[Tensor, Tensor]:
        """best_of's scores: each member's greedy answer verified (`select: verifier`; zeros for
        `likelihood`) and the likelihood it gives the reference answer, `[B, K]` each."""
        data = self.cfg.data
        if any(r.get(data.answer_field) is None for r in records):
            raise ConfigError(f"teacher.kind: best_of needs the {data.answer_field!r} field in every record")
        tok = self.policy.tokenizer
        lik = torch.stack([answer_log_likelihood(m, tok, records, data) for m in members], -1)
        if self.cfg.teacher.select != "verifier":
            return torch.zeros_like(lik), lik
        greedy = Sampling(num_samples=1, max_new_tokens=self.cfg.rollout.max_new_tokens, greedy=True, stop=tuple(self.cfg.rollout.stop))
        outcomes = [generate_rollout(m.module.lm, tok, records, data, greedy).outcome.float() for m in members]
        return torch.stack(outcomes, -1).to(lik.device), lik


def teacher_context(cfg, policy: TextPolicy, device: torch.device) -> TeacherContext:
    """What `teacher_kinds.build_teacher` and `build_reference` take for a text run."""
    return TeacherContext(cfg, policy, TextTeacherSource(cfg, policy, device))


@torch.no_grad()
def answer_log_likelihood(teacher: LMTeacher, tok, records: Sequence[Dict[str, Any]], data_cfg) -> Tensor:
    """Mean log-prob per token that `teacher` gives each record's reference answer (+ EOS) `[B]`."""
    prompts = format_prompts(tok, records, data_cfg)
    seqs, starts = [], []
    for p, r in zip(prompts, records):
        ids = tok(p)["input_ids"]
        ans = tok(str(r[data_cfg.answer_field]), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seqs.append(ids + ans)
        starts.append(len(ids))
    n = max(len(s) for s in seqs)
    pad = tok.pad_token_id
    device = next(teacher.module.parameters()).device
    ids = torch.tensor([[pad] * (n - len(s)) + s for s in seqs], device=device)  # left-padded
    attn = torch.tensor([[0] * (n - len(s)) + [1] * len(s) for s in seqs], device=device)
    out = teacher.module(ids, attn)
    logits = out @ teacher.module.head()[0].t() if teacher.module.lazy else out
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    first = torch.tensor([n - len(s) + st - 1 for s, st in zip(seqs, starts)], device=device)
    pos = torch.arange(n - 1, device=device)
    mask = (pos.unsqueeze(0) >= first.unsqueeze(1)).float()
    return (logp * mask).sum(-1) / mask.sum(-1)
